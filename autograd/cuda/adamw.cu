// CUDA twin of autograd/kernels/adamw.cpp: the AdamW update and the gradient sums of squares.
//
// adamw_step: one thread per element (grid-stride), the CPU's double expression evaluated with
// explicitly rounded operations (__dmul_rn, __dadd_rn, __ddiv_rn, __dsqrt_rn: nvcc may not fuse
// them into FMAs), and the same single rounding to the storage type (round_from_double_device, the
// twin of the CPU's round-to-odd bf16 store). The CPU build has no FMA either (x86-64 baseline), so
// both give the same bits for the same inputs.
//
// sum_squares: each tensor is cut into blocks of 8192 elements (as on the CPU); a thread block sums
// one of them in double with a fixed tree (block_sum), a second kernel adds the block sums of each
// tensor in block order. No atomics: the same bits on every run. Against the CPU, which sums each
// block in index order, only the order of the double additions differs (relative difference
// ~1e-16 of the sum of squares).
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "autograd/cuda/accumulate.cuh"
#include "autograd/cuda/adamw.h"
#include "autograd/cuda/row_reduce.cuh"
#include "autograd/cuda/stream.h"
#include "autograd/tensor.h"

namespace daedalus::cuda {

namespace {

constexpr int64_t kNormBlock = 8192;  // elements per partial sum; the CPU kernel uses the same
static_assert(kNormBlock % kRowThreads == 0, "a norm block is a whole number of thread strides");

__device__ __forceinline__ double load(float s) { return double(s); }
__device__ __forceinline__ double load(bf16 s) { return double(to_float(s)); }

template <typename S>
__global__ void adamw_kernel(float* p, float* g, S* m, S* v, int64_t n, kernels::AdamwConstants c) {
  const double one_minus_beta1 = __dsub_rn(1.0, c.beta1), one_minus_beta2 = __dsub_rn(1.0, c.beta2);
  const double keep = __dsub_rn(1.0, c.decay);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (c.grad_scale != 1.0) g[i] = __double2float_rn(__dmul_rn(double(g[i]), c.grad_scale));
    const double gi = g[i];
    const S mi = round_from_double_device<S>(__dadd_rn(__dmul_rn(c.beta1, load(m[i])), __dmul_rn(one_minus_beta1, gi)));
    const S vi = round_from_double_device<S>(
        __dadd_rn(__dmul_rn(c.beta2, load(v[i])), __dmul_rn(__dmul_rn(one_minus_beta2, gi), gi)));
    m[i] = mi;
    v[i] = vi;
    const double denom = __dadd_rn(__ddiv_rn(__dsqrt_rn(load(vi)), c.bc2_sqrt), c.eps);
    const double pi = __dmul_rn(double(p[i]), keep);
    p[i] = __double2float_rn(__dsub_rn(pi, __ddiv_rn(__dmul_rn(c.step_size, load(mi)), denom)));
  }
}

// partial[b] = sum of x[b * kNormBlock, min(n, (b + 1) * kNormBlock))^2; one thread block per b.
__global__ void sum_squares_blocks_kernel(double* partial, const float* x, int64_t n) {
  __shared__ double smem[kRowThreads / 32];
  const int64_t begin = int64_t(blockIdx.x) * kNormBlock;
  const int64_t end = begin + kNormBlock < n ? begin + kNormBlock : n;
  double s = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kRowThreads) {
    const double xi = x[i];
    s = __dadd_rn(s, __dmul_rn(xi, xi));
  }
  s = block_sum(s, smem);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// out[t] = partial[first[t]] + ... + partial[first[t + 1] - 1], in order; one thread per tensor.
__global__ void sum_partials_kernel(double* out, const double* partial, const int64_t* first, int64_t tensors) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t >= tensors) return;
  double s = 0.0;
  for (int64_t b = first[t]; b < first[t + 1]; ++b) s = __dadd_rn(s, partial[b]);
  out[t] = s;
}

}  // namespace

void adamw_step(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v, const kernels::AdamwConstants& c) {
  DAEDALUS_CUDA_CHECK(cudaSetDevice(w.device().index));
  const cudaStream_t stream = compute_stream(w.device().index);
  const int64_t n = w.numel();
  if (m.dtype() == DType::bf16) {
    adamw_kernel<bf16><<<blocks_for(n), kThreads, 0, stream>>>(w.data<float>(), g.data<float>(), m.data<bf16>(),
                                                               v.data<bf16>(), n, c);
  } else {
    adamw_kernel<float><<<blocks_for(n), kThreads, 0, stream>>>(w.data<float>(), g.data<float>(), m.data<float>(),
                                                                v.data<float>(), n, c);
  }
  DAEDALUS_CUDA_CHECK_LAUNCH();
}

void sum_squares(const std::vector<Tensor>& xs, std::vector<double>& out) {
  const Device device = xs.front().device();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = compute_stream(device.index);
  const int64_t tensors = int64_t(xs.size());
  std::vector<int64_t> first(xs.size() + 1, 0);
  for (size_t t = 0; t < xs.size(); ++t) first[t + 1] = first[t] + (xs[t].numel() + kNormBlock - 1) / kNormBlock;
  // Doubles in 8-byte int64 storage (there is no fp64 tensor dtype).
  const Tensor partial_storage = Tensor::empty({first.back()}, DType::i64, device);
  const Tensor sums_storage = Tensor::empty({tensors}, DType::i64, device);
  auto* partial = static_cast<double*>(partial_storage.data_ptr());
  auto* sums = static_cast<double*>(sums_storage.data_ptr());
  const Tensor first_dev = Tensor::from_vector(first, {tensors + 1}, device);
  for (size_t t = 0; t < xs.size(); ++t) {
    const int64_t blocks = first[t + 1] - first[t];
    if (blocks == 0) continue;
    sum_squares_blocks_kernel<<<unsigned(blocks), kRowThreads, 0, stream>>>(partial + first[t], xs[t].data<float>(),
                                                                            xs[t].numel());
    DAEDALUS_CUDA_CHECK_LAUNCH();
  }
  sum_partials_kernel<<<unsigned((tensors + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      sums, partial, first_dev.data<int64_t>(), tensors);
  DAEDALUS_CUDA_CHECK_LAUNCH();
  out.assign(xs.size(), 0.0);
  copy_bytes(out.data(), Device::cpu(), sums, device, out.size() * sizeof(double));
}

}  // namespace daedalus::cuda
