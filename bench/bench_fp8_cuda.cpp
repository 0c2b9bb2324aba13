// GPU benchmarks of the FP8 path (run by scripts/gpu-check on a machine with a device): the
// cuBLASLt scaled GEMM with DeepSeek-V3's scales (activations 1x128 x weights 128x128, e4m3)
// against the bf16 GEMM, in TFLOP/s = 2·M·N·K per second (H200 dense peaks: FP8 ~1979, BF16 ~989),
// and the CUDA quantizer in GB/s (bytes read + written). Operands are quantized outside the timed
// loop. Without a CUDA device every benchmark reports an error and the program exits 0.
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "autograd/generator.h"
#include "autograd/tensor.h"
#if DAEDALUS_WITH_CUDA
#include "fp8/cuda/scaled_gemm_cuda.h"
#endif

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

// arg: 0 tile_1x128, 1 block_128x128, 2 tensor. x [4096, 16384] fp32 -> e4m3 + scales.
void BM_Fp8Quantize(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const fp8::Granularity g = state.range(0) == 0   ? fp8::Granularity::tile_1x128
                             : state.range(0) == 1 ? fp8::Granularity::block_128x128
                                                   : fp8::Granularity::tensor;
  const int64_t rows = 4096, cols = 16384;
  const Tensor x = random_on_gpu({rows, cols}, DType::f32, 3);
  const fp8::QuantizedTensor probe = fp8::cuda_quantize(x, g, fp8::Format::e4m3);
  const double bytes = double(x.nbytes()) + double(probe.data.nbytes()) + double(probe.scale_inv.nbytes());
  run(state, [&] { benchmark::DoNotOptimize(fp8::cuda_quantize(x, g, fp8::Format::e4m3)); });
  state.counters["GB/s"] = benchmark::Counter(bytes * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(fmt::format("fp32[{}, {}] -> e4m3 {}", rows, cols, fp8::granularity_name(g)));
}

#else

void BM_Fp8GemmTile1x128Block128(benchmark::State& state) { have_gpu(state); }
void BM_Fp8GemmTensorScaled(benchmark::State& state) { have_gpu(state); }
void BM_Bf16Gemm(benchmark::State& state) { have_gpu(state); }
void BM_Fp8Quantize(benchmark::State& state) { have_gpu(state); }

#endif  // DAEDALUS_WITH_CUDA

// DeepGEMM's shape (M=4096, N=7168, K=16384) and a smaller projection (M=4096, N=2048, K=7168).
#define DAEDALUS_GEMM_SHAPES \
  ->Args({4096, 7168, 16384})->Args({4096, 2048, 7168})->UseRealTime()->Unit(benchmark::kMillisecond)
BENCHMARK(BM_Fp8GemmTile1x128Block128) DAEDALUS_GEMM_SHAPES;
BENCHMARK(BM_Fp8GemmTensorScaled) DAEDALUS_GEMM_SHAPES;
BENCHMARK(BM_Bf16Gemm) DAEDALUS_GEMM_SHAPES;
BENCHMARK(BM_Fp8Quantize)->Arg(0)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace daedalus
