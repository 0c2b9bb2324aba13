// CPU scaled FP8 GEMM throughput (fp8/scaled_gemm.h, exact accumulator) next to the plain BF16
// GEMM it is built on, at the same shapes in the same program: y [M, N] fp32 = a [M, K] · b [N, K]ᵀ.
// The emulation casts both FP8 operands to BF16 and runs oneDNN's BF16 GEMM (once for per-tensor
// and per-row scales, once per 128-wide K block for 1x128 × 128x128), so BF16 matmul is its ceiling.
// GFLOP/s counts 2·M·N·K per call. About half a minute on a 2-core machine.
//
//   build/bench/bench_fp8_gemm [--benchmark_filter=Block]
#include <benchmark/benchmark.h>
#include <omp.h>

#include <string>

#include "autograd/generator.h"
#include "autograd/kernels/gemm.h"
#include "autograd/tensor.h"
#include "fp8/quantized.h"
#include "fp8/scaled_gemm.h"

namespace daedalus {
namespace {

constexpr double kMinTime = 0.3;  // seconds per benchmark

Tensor random(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn(shape, gen);
}

benchmark::Counter gflops(int64_t M, int64_t N, int64_t K) {
  return benchmark::Counter(2.0 * double(M) * double(N) * double(K) * 1e-9,
                            benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

[[maybe_unused]] const bool kContextAdded = [] {
  benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
  return true;
}();

// scaled_gemm(quantize(a, ga), quantize(b, gb)); quantization is outside the timed loop.
void BM_ScaledGemm(benchmark::State& state, fp8::Granularity ga, fp8::Granularity gb) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const fp8::QuantizedTensor a = fp8::quantize(random({M, K}, 1), ga, fp8::Format::e4m3);
  const fp8::QuantizedTensor b = fp8::quantize(random({N, K}, 2), gb, fp8::Format::e4m3);
  fp8::scaled_gemm(a, b);  // builds and caches the oneDNN primitives outside the timed loop
  for (auto _ : state) {
    Tensor y = fp8::scaled_gemm(a, b);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.counters["GFLOP/s"] = gflops(M, N, K);
}

// The baseline: kernels::matmul(a_bf16, b_bf16ᵀ) -> a new fp32 [M, N], b read transposed in place.
void BM_Bf16Matmul(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const Tensor a = random({M, K}, 1).to(DType::bf16), b = random({N, K}, 2).to(DType::bf16);
  kernels::matmul(a, b.t());
  for (auto _ : state) {
    Tensor y = kernels::matmul(a, b.t());
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.counters["GFLOP/s"] = gflops(M, N, K);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"})->Args({2048, 2048, 2048})->Args({4096, 2048, 2048});
  b->UseRealTime()->MinTime(kMinTime)->Unit(benchmark::kMillisecond);
}

using G = fp8::Granularity;
BENCHMARK(BM_Bf16Matmul)->Apply(shapes);
BENCHMARK_CAPTURE(BM_ScaledGemm, Tensor, G::tensor, G::tensor)->Apply(shapes);
BENCHMARK_CAPTURE(BM_ScaledGemm, Row, G::row, G::row)->Apply(shapes);
BENCHMARK_CAPTURE(BM_ScaledGemm, Tile1x128_Block128x128, G::tile_1x128, G::block_128x128)->Apply(shapes);

}  // namespace
}  // namespace daedalus
