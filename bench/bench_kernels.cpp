// Kernel throughput on this machine: GEMM through oneDNN (GFLOP/s) at square and transformer
// shapes, and the memory-bound elementwise kernels, casts and copies (GB/s = bytes read + written
// per second, 10^9). Every benchmark measures wall time (oneDNN and the elementwise kernels run
// on OpenMP threads; OMP_NUM_THREADS sets how many) and stays short, so the whole program takes
// about a minute or two on a 2-core machine.
//
//   build/bench/bench_kernels [--benchmark_filter=Gemm]
#include <benchmark/benchmark.h>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <string>

#include "autograd/generator.h"
#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/gemm.h"
#include "autograd/tensor.h"

namespace daedalus {
namespace {

constexpr double kMinTime = 0.5;               // seconds per benchmark
constexpr int64_t kRows = 4096, kCols = 4096;  // elementwise operands: 16M elements
constexpr int64_t kElements = kRows * kCols;

Tensor random(const Shape& shape, DType dtype, uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, dtype);
}

// Per-iteration amounts that Google Benchmark turns into a rate over the measured (real) time.
benchmark::Counter per_second(double amount) {
  return benchmark::Counter(amount, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Shows the thread count and oneDNN version in the report header.
[[maybe_unused]] const bool kContextAdded = [] {
  const dnnl_version_t* v = dnnl::version();
  benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
  benchmark::AddCustomContext(
      "onednn", std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch));
  return true;
}();

// ---- GEMM ---------------------------------------------------------------------------------------

// c [M, N] = a [M, K] · b [K, N] in `dtype` (bf16: bf16 output, fp32 accumulation); args {M, N, K}.
// With transposed_b, b is the transpose of a contiguous [N, K] (a Linear layer's x·Wᵀ), read in place.
void BM_Gemm(benchmark::State& state, DType dtype, bool transposed_b) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const Tensor a = random({M, K}, dtype, 1);
  const Tensor b = transposed_b ? random({N, K}, dtype, 2).t() : random({K, N}, dtype, 2);
  Tensor c = Tensor::empty({M, N}, dtype);
  kernels::gemm(a, b, c);  // builds and caches the primitive outside the timed loop
  for (auto _ : state) {
    kernels::gemm(a, b, c);
    benchmark::DoNotOptimize(c.data_ptr());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = per_second(2.0 * double(M) * double(N) * double(K) * 1e-9);
}

// Wall time (the work runs on OpenMP threads), a short minimum time, milliseconds.
void timed(benchmark::internal::Benchmark* b) { b->UseRealTime()->MinTime(kMinTime)->Unit(benchmark::kMillisecond); }

void square_and_transformer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"});
  for (int64_t n : {512, 1024, 2048, 4096}) b->Args({n, n, n});
  b->Args({4096, 5632, 2048});  // 4096 tokens through a 2048 -> 5632 MLP up-projection
  timed(b);
}

void transformer_shape(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K"})->Args({4096, 5632, 2048});
  timed(b);
}

BENCHMARK_CAPTURE(BM_Gemm, fp32, DType::f32, /*transposed_b=*/false)->Apply(square_and_transformer_shapes);
BENCHMARK_CAPTURE(BM_Gemm, bf16, DType::bf16, /*transposed_b=*/false)->Apply(square_and_transformer_shapes);
BENCHMARK_CAPTURE(BM_Gemm, fp32_b_transposed, DType::f32, /*transposed_b=*/true)->Apply(transformer_shape);
BENCHMARK_CAPTURE(BM_Gemm, bf16_b_transposed, DType::bf16, /*transposed_b=*/true)->Apply(transformer_shape);

// ---- elementwise, cast, copy (each call allocates its output, as the ops do) -------------------

// out [4096, 4096] = a + b: reads two operands, writes one.
void BM_Add(benchmark::State& state, DType dtype) {
  const Tensor a = random({kRows, kCols}, dtype, 3), b = random({kRows, kCols}, dtype, 4);
  for (auto _ : state) {
    Tensor out = kernels::add(a, b);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["GB/s"] = per_second(3.0 * double(kElements) * double(dtype_size(dtype)) * 1e-9);
}

// out [4096, 4096] = silu(x).
void BM_Silu(benchmark::State& state, DType dtype) {
  const Tensor x = random({kRows, kCols}, dtype, 5);
  for (auto _ : state) {
    Tensor out = kernels::unary(kernels::UnaryOp::silu, x);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["GB/s"] = per_second(2.0 * double(kElements) * double(dtype_size(dtype)) * 1e-9);
}

// fp32 [4096, 4096] -> bf16 (round to nearest even).
void BM_CastFp32ToBf16(benchmark::State& state) {
  const Tensor x = random({kRows, kCols}, DType::f32, 6);
  for (auto _ : state) {
    Tensor out = kernels::cast(x, DType::bf16);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["GB/s"] = per_second(double(kElements) * (4.0 + 2.0) * 1e-9);
}

// x.t().contiguous() for x fp32 [4096, 4096]: a strided read, a contiguous write.
void BM_ContiguousOfTranspose(benchmark::State& state) {
  const Tensor xt = random({kRows, kCols}, DType::f32, 7).t();
  for (auto _ : state) {
    Tensor out = xt.contiguous();
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.counters["GB/s"] = per_second(2.0 * double(kElements) * 4.0 * 1e-9);
}

BENCHMARK_CAPTURE(BM_Add, fp32, DType::f32)->Apply(timed);
BENCHMARK_CAPTURE(BM_Add, bf16, DType::bf16)->Apply(timed);
BENCHMARK_CAPTURE(BM_Silu, fp32, DType::f32)->Apply(timed);
BENCHMARK_CAPTURE(BM_Silu, bf16, DType::bf16)->Apply(timed);
BENCHMARK(BM_CastFp32ToBf16)->Apply(timed);
BENCHMARK(BM_ContiguousOfTranspose)->Apply(timed);

}  // namespace
}  // namespace daedalus
