// Flash-style causal attention on the CPU at one MLA layer's shape: B=1, H=16, T=1024, qk head dim
// 192 (nope 128 + rope 64), v head dim 128, fp32 and bf16 inputs; forward alone and forward +
// backward. q, k, v are [B, T, H, D] projections viewed as [B, H, T, D] (read in place).
//
// GFLOP/s counts the algorithm's useful FLOPs, not the recomputation: the causal forward is
// 2 · B·H·T²/2 · (Dqk + Dv) (Q·Kᵀ and P·V over the lower triangle), the backward 2.5 times that
// (dV, dP, dQ, dK and the recomputed S), so forward + backward counts 3.5×. The CPU backward
// recomputes S and dP once more (7 block GEMMs per pair instead of 5), which it pays in time.
// Wall time; about ten seconds in all on the 2-core development VM.
//
//   build/bench/bench_attention [--benchmark_filter=bf16]
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cmath>
#include <string>

#include "autograd/generator.h"
#include "autograd/kernels/attention.h"
#include "autograd/tensor.h"

namespace daedalus {
namespace {

constexpr int64_t kB = 1, kH = 16, kT = 1024, kDqk = 192, kDv = 128;
constexpr double kMinTime = 1.0;  // seconds per benchmark

// [B, H, T, D] view of a [B, T, H, D] tensor.
Tensor heads(int64_t d, DType dtype, uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn({kB, kT, kH, d}, gen, dtype).transpose(1, 2);
}

double forward_flops() { return 2.0 * double(kB * kH) * double(kT) * double(kT) / 2.0 * double(kDqk + kDv); }

benchmark::Counter per_second(double amount) {
  return benchmark::Counter(amount, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

[[maybe_unused]] const bool kContextAdded = [] {
  benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
  return true;
}();

void BM_Attention(benchmark::State& state, DType dtype, bool with_backward) {
  const Tensor q = heads(kDqk, dtype, 1), k = heads(kDqk, dtype, 2), v = heads(kDv, dtype, 3);
  Generator gen(4);
  const Tensor dout = Tensor::randn({kB, kH, kT, kDv}, gen);
  const double scale = 1.0 / std::sqrt(double(kDqk));
  kernels::attention_forward(q, k, v, scale);  // builds the block GEMMs' primitives outside the loop
  for (auto _ : state) {
    const kernels::AttentionOutput fwd = kernels::attention_forward(q, k, v, scale);
    benchmark::DoNotOptimize(fwd.out.data_ptr());
    if (with_backward) {
      const kernels::AttentionGrads g = kernels::attention_backward(q, k, v, fwd.out, fwd.lse, dout, scale);
      benchmark::DoNotOptimize(g.dq.data_ptr());
    }
  }
  state.counters["GFLOP/s"] = per_second((with_backward ? 3.5 : 1.0) * forward_flops() * 1e-9);
}

void timed(benchmark::internal::Benchmark* b) { b->UseRealTime()->MinTime(kMinTime)->Unit(benchmark::kMillisecond); }

BENCHMARK_CAPTURE(BM_Attention, fp32_forward, DType::f32, /*with_backward=*/false)->Apply(timed);
BENCHMARK_CAPTURE(BM_Attention, bf16_forward, DType::bf16, /*with_backward=*/false)->Apply(timed);
BENCHMARK_CAPTURE(BM_Attention, fp32_forward_backward, DType::f32, /*with_backward=*/true)->Apply(timed);
BENCHMARK_CAPTURE(BM_Attention, bf16_forward_backward, DType::bf16, /*with_backward=*/true)->Apply(timed);

}  // namespace
}  // namespace daedalus
