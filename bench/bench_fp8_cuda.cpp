// GPU benchmarks of the FP8 path (run by scripts/gpu-check on a machine with a device): the
// cuBLASLt scaled GEMM with DeepSeek-V3's scales (activations 1x128 x weights 128x128, e4m3)
// against the bf16 GEMM, in TFLOP/s = 2·M·N·K per second (H200 dense peaks: FP8 ~1979, BF16 ~989),
// and the CUDA quantizer in GB/s (bytes read + written). Operands are quantized outside the timed
// loop. The quantizers (1x128, 128x128, tensor, and the transposed 1x128 of the Wgrad operands) are
// reported in GB/s next to a plain device copy of the same fp32 tensor (target: >= 70% of it).
// The grouped expert GEMM (8 experts, 256..1024 tokens each, 7168 -> 2048) is fp8::grouped_scaled_gemm
// on CUDA — one cuBLASLt call per non-empty expert — against the same loop in BF16 and against
// BF16 in ONE grouped cuBLAS call (kernels::grouped_matmul, what grouped_linear runs for the bf16
// recipe): into fp32 (the forward; operands widened, TF32 tensor cores) and into bf16 (Dgrad's
// and Wgrad's output dtype). The grouped FP8 forward on DeepSeek-V3-like expert shapes (8 and 32
// experts, 128..1024 tokens each, 7168 -> 2048 and 2048 -> 7168) runs twice: one cuBLASLt call per
// expert (BM_Fp8GroupedGemmLtLoop, the default) and our one-launch kernel
// (BM_Fp8GroupedGemmKernel, DAEDALUS_FP8_GROUPED_GEMM=kernel); the pair decides the default.
// Without a CUDA device every benchmark reports an error and the program exits 0.
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "autograd/generator.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/grouped_gemm.h"
#include "autograd/tensor.h"
#if DAEDALUS_WITH_CUDA
#include "fp8/cuda/grouped_gemm_kernel.h"
#include "fp8/cuda/scaled_gemm_cuda.h"
#include "fp8/scaled_gemm.h"
#endif

#include <string>
#include <vector>

namespace daedalus {
namespace {

bool have_gpu(benchmark::State& state) {
  if (cuda_built() && cuda_device_count() > 0) return true;
  state.SkipWithError(cuda_built() ? "no CUDA device visible" : "built without CUDA");
  return false;
}

#if DAEDALUS_WITH_CUDA

Tensor random_on_gpu(const Shape& shape, DType dtype, uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, DType::f32).to(dtype).to(Device::cuda(0));
}

// One warm-up call (it also fills the heuristic cache), then a device synchronize per iteration.
template <typename Fn>
void run(benchmark::State& state, Fn fn) {
  fn();
  synchronize(Device::cuda(0));
  for (auto _ : state) {
    fn();
    synchronize(Device::cuda(0));
  }
}

void set_tflops(benchmark::State& state, int64_t m, int64_t n, int64_t k) {
  state.counters["TFLOP/s"] = benchmark::Counter(
      2.0 * double(m) * double(n) * double(k) * double(state.iterations()) / 1e12, benchmark::Counter::kIsRate);
  state.SetLabel(fmt::format("M={} N={} K={}", m, n, k));
}

// args: M, N, K
void BM_Fp8GemmTile1x128Block128(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const fp8::QuantizedTensor a =
      fp8::cuda_quantize(random_on_gpu({m, k}, DType::f32, 1), fp8::Granularity::tile_1x128, fp8::Format::e4m3);
  const fp8::QuantizedTensor b =
      fp8::cuda_quantize(random_on_gpu({n, k}, DType::f32, 2), fp8::Granularity::block_128x128, fp8::Format::e4m3);
  run(state, [&] { benchmark::DoNotOptimize(fp8::cuda_scaled_gemm(a, b)); });
  set_tflops(state, m, n, k);
}

void BM_Fp8GemmTensorScaled(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const fp8::QuantizedTensor a =
      fp8::cuda_quantize(random_on_gpu({m, k}, DType::f32, 1), fp8::Granularity::tensor, fp8::Format::e4m3);
  const fp8::QuantizedTensor b =
      fp8::cuda_quantize(random_on_gpu({n, k}, DType::f32, 2), fp8::Granularity::tensor, fp8::Format::e4m3);
  run(state, [&] { benchmark::DoNotOptimize(fp8::cuda_scaled_gemm(a, b)); });
  set_tflops(state, m, n, k);
}

void BM_Bf16Gemm(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Tensor a = random_on_gpu({m, k}, DType::bf16, 1), b = random_on_gpu({n, k}, DType::bf16, 2);
  run(state, [&] { benchmark::DoNotOptimize(fp8::cuda_bf16_gemm_tn(a, b)); });
  set_tflops(state, m, n, k);
}

void set_gbps(benchmark::State& state, double bytes) {
  state.counters["GB/s"] = benchmark::Counter(bytes * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

// arg: 0 tile_1x128, 1 block_128x128, 2 tensor, 3 tile_1x128 of the transposed view (Wgrad's
// 128x1: x [16384, 4096] read as xᵀ [4096, 16384], no transpose copy). x [4096, 16384] fp32 ->
// e4m3 + scales; GB/s counts bytes read + written.
void BM_Fp8Quantize(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t arg = state.range(0);
  const fp8::Granularity g = arg == 1   ? fp8::Granularity::block_128x128
                             : arg == 2 ? fp8::Granularity::tensor
                                        : fp8::Granularity::tile_1x128;
  const int64_t rows = 4096, cols = 16384;
  const Tensor source =
      arg == 3 ? random_on_gpu({cols, rows}, DType::f32, 3) : random_on_gpu({rows, cols}, DType::f32, 3);
  const Tensor x = arg == 3 ? source.t() : source;
  const fp8::QuantizedTensor probe = fp8::cuda_quantize(x, g, fp8::Format::e4m3);
  const double bytes = double(x.nbytes()) + double(probe.data.nbytes()) + double(probe.scale_inv.nbytes());
  run(state, [&] { benchmark::DoNotOptimize(fp8::cuda_quantize(x, g, fp8::Format::e4m3)); });
  set_gbps(state, bytes);
  state.SetLabel(fmt::format("fp32[{}, {}]{} -> e4m3 {}", rows, cols, arg == 3 ? " (transposed view)" : "",
                             fp8::granularity_name(g)));
}

// Wgrad's q(Xqᵀ) from the cached 1x128 q(X) [4096, 16384]: arg 0 the fused kernel, arg 1 the
// composition it replaces (dequantize to fp32, quantize the transposed view). GB/s counts the
// fused kernel's bytes (FP8 codes and scales in and out) for both, so the ratio is the speed-up.
void BM_Fp8RequantizeTransposed(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const bool fused = state.range(0) == 0;
  const fp8::QuantizedTensor q =
      fp8::cuda_quantize(random_on_gpu({4096, 16384}, DType::f32, 6), fp8::Granularity::tile_1x128, fp8::Format::e4m3);
  const auto requantize = [&] {
    return fused ? fp8::cuda_requantize_transposed(q, fp8::Format::e4m3, {})
                 : fp8::cuda_quantize(q.dequantize().t(), fp8::Granularity::tile_1x128, fp8::Format::e4m3);
  };
  const fp8::QuantizedTensor probe = requantize();
  const double bytes = double(q.data.nbytes()) + double(q.scale_inv.nbytes()) + double(probe.data.nbytes()) +
                       double(probe.scale_inv.nbytes());
  run(state, [&] { benchmark::DoNotOptimize(requantize()); });
  set_gbps(state, bytes);
  state.SetLabel(fused ? "e4m3 1x128 [4096, 16384] -> transposed 1x128, fused"
                       : "e4m3 1x128 [4096, 16384] -> transposed 1x128, dequantize + quantize");
}

// The bandwidth yardstick for the quantizers: a device-to-device copy of the same fp32 tensor
// (bytes read + written).
void BM_DeviceCopy(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const Tensor x = random_on_gpu({4096, 16384}, DType::f32, 4);
  Tensor y = Tensor::empty(x.shape(), DType::f32, x.device());
  run(state, [&] { y.copy_(x); });
  set_gbps(state, 2.0 * double(x.nbytes()));
  state.SetLabel("fp32[4096, 16384] device copy");
}

// Token counts of the grouped benchmark's 8 experts (256..1024, sum 4736).
const std::vector<int64_t> kExpertTokens = {256, 1024, 512, 768, 384, 896, 640, 256};

std::vector<int64_t> expert_offsets() {
  std::vector<int64_t> offsets = {0};
  for (int64_t t : kExpertTokens) offsets.push_back(offsets.back() + t);
  return offsets;
}

void set_grouped_tflops(benchmark::State& state, int64_t rows, int64_t n, int64_t k) {
  set_tflops(state, rows, n, k);
  state.SetLabel(fmt::format("{} experts, {} tokens, K={} -> N={}", kExpertTokens.size(), rows, k, n));
}

// args: N, K. x [R, K] 1x128 per expert, W_e [N, K] 128x128 -> y [R, N].
void BM_Fp8GroupedGemm(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t n = state.range(0), k = state.range(1);
  const std::vector<int64_t> offsets = expert_offsets();
  const Tensor x = random_on_gpu({offsets.back(), k}, DType::f32, 5);
  std::vector<fp8::QuantizedTensor> a, b;
  for (size_t e = 0; e < kExpertTokens.size(); ++e) {
    a.push_back(
        fp8::cuda_quantize(x.slice(0, offsets[e], offsets[e + 1]), fp8::Granularity::tile_1x128, fp8::Format::e4m3));
    b.push_back(fp8::cuda_quantize(random_on_gpu({n, k}, DType::f32, 10 + e), fp8::Granularity::block_128x128,
                                   fp8::Format::e4m3));
  }
  run(state, [&] { benchmark::DoNotOptimize(fp8::grouped_scaled_gemm(a, b, offsets)); });
  set_grouped_tflops(state, offsets.back(), n, k);
}

// The same expert loop in BF16 (one cuBLASLt call per expert, into y's rows via a copy).
void BM_Bf16GroupedGemm(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t n = state.range(0), k = state.range(1);
  const std::vector<int64_t> offsets = expert_offsets();
  const Tensor x = random_on_gpu({offsets.back(), k}, DType::bf16, 5);
  std::vector<Tensor> w;
  for (size_t e = 0; e < kExpertTokens.size(); ++e) w.push_back(random_on_gpu({n, k}, DType::bf16, 10 + e));
  Tensor y = Tensor::empty({offsets.back(), n}, DType::f32, x.device());
  run(state, [&] {
    for (size_t e = 0; e < w.size(); ++e)
      y.slice(0, offsets[e], offsets[e + 1])
          .copy_(fp8::cuda_bf16_gemm_tn(x.slice(0, offsets[e], offsets[e + 1]), w[e]));
  });
  set_grouped_tflops(state, offsets.back(), n, k);
}

// args: N, K, output (0 fp32, 1 bf16). The same experts and shapes as BM_Bf16GroupedGemm, in ONE
// cublasGemmGroupedBatchedEx call writing y's rows (fp32 output: the operands are widened to fp32
// and multiplied with TF32, inside the timed loop as in training).
void BM_Bf16GroupedGemmOneCall(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t n = state.range(0), k = state.range(1);
  const DType out = state.range(2) == 0 ? DType::f32 : DType::bf16;
  const std::vector<int64_t> offsets = expert_offsets();
  const Tensor x = random_on_gpu({offsets.back(), k}, DType::bf16, 5);
  const Tensor w = random_on_gpu({int64_t(kExpertTokens.size()), n, k}, DType::bf16, 10);
  run(state,
      [&] { benchmark::DoNotOptimize(kernels::grouped_matmul(kernels::GroupedProduct::a_bt, x, w, offsets, out)); });
  set_grouped_tflops(state, offsets.back(), n, k);
  state.SetLabel(fmt::format("{} experts, {} tokens, K={} -> N={}, one call -> {}", kExpertTokens.size(),
                             offsets.back(), k, n, dtype_name(out)));
}

// args: experts, N, K. Expert e gets 128 + (389·e) % 897 tokens
// (128..1024, ragged: most counts are not multiples of 128). x [R, K] quantized once in 1x128 tiles
// and sliced per expert, as fp8::grouped_linear does; W_e [N, K] in 128x128 blocks, each expert its
// own buffer (one random source scaled per expert on the device: drawing 32 random 7168 x 2048
// weights on the host would dominate the setup).
void grouped_backend(benchmark::State& state, fp8::GroupedGemmBackend backend) {
  if (!have_gpu(state)) return;
  const int64_t experts = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<int64_t> offsets = {0};
  for (int64_t e = 0; e < experts; ++e) offsets.push_back(offsets.back() + 128 + (389 * e) % 897);
  const fp8::QuantizedTensor qx = fp8::cuda_quantize(random_on_gpu({offsets.back(), k}, DType::f32, 5),
                                                     fp8::Granularity::tile_1x128, fp8::Format::e4m3);
  const Tensor w = random_on_gpu({n, k}, DType::f32, 10);
  std::vector<fp8::QuantizedTensor> a(static_cast<size_t>(experts)), b(static_cast<size_t>(experts));
  for (size_t e = 0; e < a.size(); ++e) {
    a[e] = qx;
    a[e].data = qx.data.slice(0, offsets[e], offsets[e + 1]);
    a[e].scale_inv = qx.scale_inv.slice(0, offsets[e], offsets[e + 1]);
    b[e] = fp8::cuda_quantize(kernels::affine(w, 1.0 + 0.125 * double(e)), fp8::Granularity::block_128x128,
                              fp8::Format::e4m3);
  }
  if (backend == fp8::GroupedGemmBackend::kernel) {
    const std::string why = fp8::grouped_gemm_1x128_128x128_unsupported(a, b, offsets);
    if (!why.empty()) {
      state.SkipWithError(why.c_str());
      return;
    }
  }
  run(state, [&] { benchmark::DoNotOptimize(fp8::cuda_grouped_scaled_gemm(a, b, offsets, backend)); });
  set_tflops(state, offsets.back(), n, k);
  state.SetLabel(
      fmt::format("{} experts, {} tokens, K={} -> N={}, {}", experts, offsets.back(), k, n,
                  backend == fp8::GroupedGemmBackend::kernel ? "one launch" : "one cuBLASLt call per expert"));
}

void BM_Fp8GroupedGemmLtLoop(benchmark::State& state) {
  grouped_backend(state, fp8::GroupedGemmBackend::cublaslt_per_group);
}
void BM_Fp8GroupedGemmKernel(benchmark::State& state) { grouped_backend(state, fp8::GroupedGemmBackend::kernel); }

#else

void BM_Fp8GemmTile1x128Block128(benchmark::State& state) { have_gpu(state); }
void BM_Fp8GemmTensorScaled(benchmark::State& state) { have_gpu(state); }
void BM_Bf16Gemm(benchmark::State& state) { have_gpu(state); }
void BM_Fp8Quantize(benchmark::State& state) { have_gpu(state); }
void BM_DeviceCopy(benchmark::State& state) { have_gpu(state); }
void BM_Fp8GroupedGemm(benchmark::State& state) { have_gpu(state); }
void BM_Bf16GroupedGemm(benchmark::State& state) { have_gpu(state); }
void BM_Bf16GroupedGemmOneCall(benchmark::State& state) { have_gpu(state); }
void BM_Fp8GroupedGemmLtLoop(benchmark::State& state) { have_gpu(state); }
void BM_Fp8GroupedGemmKernel(benchmark::State& state) { have_gpu(state); }

#endif  // DAEDALUS_WITH_CUDA

// DeepGEMM's shape (M=4096, N=7168, K=16384) and a smaller projection (M=4096, N=2048, K=7168).
#define DAEDALUS_GEMM_SHAPES \
  ->Args({4096, 7168, 16384})->Args({4096, 2048, 7168})->UseRealTime()->Unit(benchmark::kMillisecond)
BENCHMARK(BM_Fp8GemmTile1x128Block128) DAEDALUS_GEMM_SHAPES;
BENCHMARK(BM_Fp8GemmTensorScaled) DAEDALUS_GEMM_SHAPES;
BENCHMARK(BM_Bf16Gemm) DAEDALUS_GEMM_SHAPES;
BENCHMARK(BM_Fp8Quantize)->Arg(0)->Arg(1)->Arg(2)->Arg(3)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Fp8RequantizeTransposed)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DeviceCopy)->UseRealTime()->Unit(benchmark::kMillisecond);
// The MoE expert projection (7168 -> 2048) over 8 experts with 256..1024 tokens each.
BENCHMARK(BM_Fp8GroupedGemm)->Args({2048, 7168})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Bf16GroupedGemm)->Args({2048, 7168})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Bf16GroupedGemmOneCall)
    ->Args({2048, 7168, 0})
    ->Args({2048, 7168, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
// The grouped FP8 forward, cuBLASLt loop against the one-launch kernel: experts, N, K (gate/up
// projection 7168 -> 2048 and down projection 2048 -> 7168).
#define DAEDALUS_GROUPED_SHAPES \
  ->Args({8, 2048, 7168})       \
      ->Args({8, 7168, 2048})   \
      ->Args({32, 2048, 7168})  \
      ->Args({32, 7168, 2048})  \
      ->UseRealTime()           \
      ->Unit(benchmark::kMillisecond)
BENCHMARK(BM_Fp8GroupedGemmLtLoop) DAEDALUS_GROUPED_SHAPES;
BENCHMARK(BM_Fp8GroupedGemmKernel) DAEDALUS_GROUPED_SHAPES;

}  // namespace
}  // namespace daedalus
