// GPU benchmarks of the CUDA twins (run by scripts/gpu-check on a machine with a device):
// device-to-device copy as the bandwidth ceiling, elementwise add, fp32->bf16/fp8 casts and
// a transposed (strided) copy. Counters: GB/s = bytes read + written per second. The cuBLASLt
// GEMM (kernels::gemm) in BF16 and FP32 (no TF32) at DeepSeek-V3 shapes, counter TFLOP/s = 2·M·N·K
// per second. Attention at DeepSeek-V3's head dims, forward and forward + backward: TFLOP/s, on
// autograd/cuda/attention.cu and on cuDNN's fused flash attention (BM_CudaCudnnAttention*).
// Without a CUDA device every benchmark reports an error and the program exits 0.
#include <benchmark/benchmark.h>

#include <cmath>
#include <string>

#include "autograd/generator.h"
#include "autograd/kernels/attention.h"
#include "autograd/kernels/attention_backend.h"
#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/gemm.h"

namespace daedalus {
namespace {

bool have_gpu(benchmark::State& state) {
  if (cuda_device_count() > 0) return true;
  state.SkipWithError(cuda_built() ? "no CUDA device visible" : "built without CUDA");
  return false;
}

Tensor random_on_gpu(const Shape& shape, DType dtype, uint64_t seed) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, DType::f32).to(dtype).to(Device::cuda(0));
}

// Runs fn once to warm up, then times iterations with a device sync each, on wall-clock time, and
// reports `amount` per iteration as a rate counter (GB/s: bytes / 1e9, TFLOP/s: flops / 1e12).
template <typename Fn>
void timed(benchmark::State& state, const char* counter, double amount, Fn fn) {
  fn();
  synchronize(Device::cuda(0));
  for (auto _ : state) {
    fn();
    synchronize(Device::cuda(0));
  }
  state.counters[counter] = benchmark::Counter(amount * double(state.iterations()), benchmark::Counter::kIsRate);
}

template <typename Fn>
void run(benchmark::State& state, double bytes_per_iter, Fn fn) {
  timed(state, "GB/s", bytes_per_iter / 1e9, fn);
}

template <typename Fn>
void run_flops(benchmark::State& state, double flops_per_iter, Fn fn) {
  timed(state, "TFLOP/s", flops_per_iter / 1e12, fn);
}

constexpr int64_t kElements = int64_t(1) << 28;  // 256M elements: 1 GiB of fp32, well past the 60 MB L2

void BM_CudaCopyBytes(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const Tensor a = random_on_gpu({kElements}, DType::f32, 1);
  Tensor b = Tensor::empty({kElements}, DType::f32, Device::cuda(0));
  run(state, 2.0 * double(a.nbytes()),
      [&] { copy_bytes(b.data_ptr(), b.device(), a.data_ptr(), a.device(), a.nbytes()); });
}

// In place (dst += src): no allocation in the timed loop, so this is the kernel alone.
void BM_CudaAddInPlace(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const DType dtype = state.range(0) == 0 ? DType::f32 : DType::bf16;
  const Tensor a = random_on_gpu({kElements}, dtype, 2), b = random_on_gpu({kElements}, dtype, 3);
  run(state, 3.0 * double(a.nbytes()), [&] { kernels::add_(a, b, 1e-3); });
  state.SetLabel(std::string(dtype_name(dtype)));
}

// Allocating ops: includes cudaMalloc/cudaFree of the 1 GiB output each call (no caching allocator
// yet), so the gap to BM_CudaAddInPlace is the price of allocation.
void BM_CudaAddAllocating(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const Tensor a = random_on_gpu({kElements}, DType::f32, 2), b = random_on_gpu({kElements}, DType::f32, 3);
  run(state, 3.0 * double(a.nbytes()), [&] { benchmark::DoNotOptimize(kernels::add(a, b)); });
}

void BM_CudaCast(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const DType to = state.range(0) == 0 ? DType::bf16 : DType::f8e4m3;
  const Tensor a = random_on_gpu({kElements}, DType::f32, 5);
  Tensor out = Tensor::empty({kElements}, to, Device::cuda(0));
  run(state, double(a.nbytes()) + double(out.nbytes()), [&] { kernels::copy(out, a); });
  state.SetLabel(std::string("fp32->") + std::string(dtype_name(to)));
}

// Strided source (a transposed view): the generic index path of the copy kernel.
void BM_CudaTransposedCopy(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const Tensor a = random_on_gpu({16384, 16384}, DType::f32, 6);
  Tensor out = Tensor::empty({16384, 16384}, DType::f32, Device::cuda(0));
  run(state, 2.0 * double(a.nbytes()), [&] { kernels::copy(out, a.t()); });
}

// c [M, N] = a [M, K] · b [K, N], operands of one dtype (bf16: fp32 accumulation, bf16 c; fp32: a
// true fp32 GEMM, fp32 c). Args: M, N, K, dtype (0 fp32, 1 bf16). b is the weight seen as x.t() of a
// [N, K] tensor, as a linear layer stores it (cuBLASLt's "TN", both operands K-major).
void BM_CudaGemm(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const DType dtype = state.range(3) == 0 ? DType::f32 : DType::bf16;
  const Tensor a = random_on_gpu({m, k}, dtype, 7), w = random_on_gpu({n, k}, dtype, 8);
  Tensor c = Tensor::empty({m, n}, dtype, Device::cuda(0));
  run_flops(state, 2.0 * double(m) * double(n) * double(k), [&] { kernels::gemm(a, w.t(), c); });
  state.SetLabel(std::string(dtype_name(dtype)));
}

// Attention, DeepSeek-V3 MLA shapes: q, k [B, 16, 4096, 192], v [B, 16, 4096, 128], bf16, causal;
// B = the argument. The causal forward does half of 2·B·H·T²·(Dqk + Dv) flops (S = Q·Kᵀ and P·V
// over the visible half of the scores); the backward is counted as 2.5x the forward (dV, dP, dK,
// dQ and the recomputed S, as flash attention counts it), so forward + backward = 3.5x.
constexpr int64_t kAttnHeads = 16, kAttnT = 4096, kAttnDqk = 192, kAttnDv = 128;

struct AttentionInputs {
  Tensor q, k, v;
  double scale, forward_flops;
};

AttentionInputs attention_inputs(int64_t B) {
  return {random_on_gpu({B, kAttnHeads, kAttnT, kAttnDqk}, DType::bf16, 11),
          random_on_gpu({B, kAttnHeads, kAttnT, kAttnDqk}, DType::bf16, 12),
          random_on_gpu({B, kAttnHeads, kAttnT, kAttnDv}, DType::bf16, 13), 1.0 / std::sqrt(double(kAttnDqk)),
          0.5 * 2.0 * double(B * kAttnHeads) * double(kAttnT) * double(kAttnT) * double(kAttnDqk + kAttnDv)};
}

void BM_CudaAttentionForward(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const AttentionInputs in = attention_inputs(state.range(0));
  run_flops(state, in.forward_flops,
            [&] { benchmark::DoNotOptimize(kernels::attention_forward(in.q, in.k, in.v, in.scale, /*causal=*/true)); });
  state.SetLabel("bf16 causal B=" + std::to_string(state.range(0)));
}

void BM_CudaAttentionForwardBackward(benchmark::State& state) {
  if (!have_gpu(state)) return;
  const AttentionInputs in = attention_inputs(state.range(0));
  const Tensor dout = random_on_gpu({state.range(0), kAttnHeads, kAttnT, kAttnDv}, DType::f32, 14);
  run_flops(state, 3.5 * in.forward_flops, [&] {
    const kernels::AttentionOutput fwd = kernels::attention_forward(in.q, in.k, in.v, in.scale, /*causal=*/true);
    benchmark::DoNotOptimize(
        kernels::attention_backward(in.q, in.k, in.v, fwd.out, fwd.lse, dout, in.scale, /*causal=*/true));
  });
  state.SetLabel("bf16 causal B=" + std::to_string(state.range(0)));
}

// The same shapes through cuDNN's fused flash attention (kernels/attention_backend.h), called
// directly whatever DAEDALUS_ATTENTION says; skipped in a build without cuDNN or where it does not load.
bool have_cudnn(benchmark::State& state) {
  if (!have_gpu(state)) return false;
  const std::string why = kernels::cudnn_attention_built() ? kernels::cudnn_load_error() : "built without cuDNN";
  if (!why.empty()) state.SkipWithError(why.c_str());
  return why.empty();
}

void BM_CudaCudnnAttentionForward(benchmark::State& state) {
  if (!have_cudnn(state)) return;
  const int64_t B = state.range(0);
  const AttentionInputs in = attention_inputs(B);
  const Tensor out = Tensor::empty({B, kAttnHeads, kAttnT, kAttnDv}, DType::f32, Device::cuda(0));
  const Tensor lse = Tensor::empty({B, kAttnHeads, kAttnT}, DType::f32, Device::cuda(0));
  run_flops(state, in.forward_flops, [&] {
    if (!kernels::cudnn_attention_forward(in.q, in.k, in.v, out, lse, in.scale, /*causal=*/true))
      state.SkipWithError("cuDNN turned the graph down (see stderr)");
  });
  state.SetLabel("cuDNN " + std::to_string(kernels::cudnn_runtime_version()) + " bf16 causal B=" + std::to_string(B));
}

void BM_CudaCudnnAttentionForwardBackward(benchmark::State& state) {
  if (!have_cudnn(state)) return;
  const int64_t B = state.range(0);
  const AttentionInputs in = attention_inputs(B);
  const Device gpu = Device::cuda(0);
  const Tensor dout = random_on_gpu({B, kAttnHeads, kAttnT, kAttnDv}, DType::f32, 14);
  const Tensor out = Tensor::empty({B, kAttnHeads, kAttnT, kAttnDv}, DType::f32, gpu);
  const Tensor lse = Tensor::empty({B, kAttnHeads, kAttnT}, DType::f32, gpu);
  const Tensor dq = Tensor::empty(in.q.shape(), DType::bf16, gpu), dk = Tensor::empty(in.k.shape(), DType::bf16, gpu);
  const Tensor dv = Tensor::empty(in.v.shape(), DType::bf16, gpu);
  run_flops(state, 3.5 * in.forward_flops, [&] {
    if (!kernels::cudnn_attention_forward(in.q, in.k, in.v, out, lse, in.scale, /*causal=*/true) ||
        !kernels::cudnn_attention_backward(in.q, in.k, in.v, out, lse, dout, dq, dk, dv, in.scale, /*causal=*/true))
      state.SkipWithError("cuDNN turned the graph down (see stderr)");
  });
  state.SetLabel("cuDNN " + std::to_string(kernels::cudnn_runtime_version()) + " bf16 causal B=" + std::to_string(B));
}

BENCHMARK(BM_CudaCopyBytes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaAddInPlace)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaAddAllocating)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaCast)->Arg(0)->Arg(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaTransposedCopy)->UseRealTime()->Unit(benchmark::kMillisecond);
// DeepSeek-V3 (hidden 7168, MoE expert intermediate 2048) with 4096 tokens: a dense 4096 x 7168 x
// 16384 projection and an expert's gate/up projection 4096 x 2048 x 7168 (M, N, K).
BENCHMARK(BM_CudaGemm)
    ->ArgsProduct({{4096}, {7168}, {16384}, {0, 1}})
    ->Args({4096, 2048, 7168, 0})
    ->Args({4096, 2048, 7168, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaAttentionForward)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaAttentionForwardBackward)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaCudnnAttentionForward)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaCudnnAttentionForwardBackward)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace daedalus
