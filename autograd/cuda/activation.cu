// CUDA twins of autograd/kernels/activation: SiLU and sigmoid backward, SwiGLU forward and backward.
// Elementwise over operands of one shape with any strides (through Layout); outputs contiguous.
// The float formulas are the CPU's, with the same exp(-|x|) form of d silu / dx; expf may differ
// from the CPU's by an ulp or two; the one multiply-add is written with __fmul_rn (no FMA).
#include <cuda_runtime.h>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"
#include "autograd/cuda/swiglu.cuh"

namespace daedalus::cuda {

namespace {

// s (1 + x (1 - s)) with s = sigma(x), 1 - s taken from exp(-|x|), never as a difference.
__device__ __forceinline__ float silu_grad(float x) {
  float s, one_minus_s;
  if (x >= 0.0f) {
    const float e = expf(-x);
    s = 1.0f / (1.0f + e);
    one_minus_s = e * s;
  } else {
    const float e = expf(x);
    one_minus_s = 1.0f / (1.0f + e);
    s = e * one_minus_s;
  }
  return s * (1.0f + __fmul_rn(x, one_minus_s));  // rounded before the add, as on the CPU (no FMA)
}

enum class Op { silu_backward, sigmoid_backward, swiglu };

template <Op kOp>
__device__ __forceinline__ float apply(float a, float b) {
  if constexpr (kOp == Op::silu_backward) return b * silu_grad(a);       // a = x, b = dy
  if constexpr (kOp == Op::sigmoid_backward) return b * a * (1.0f - a);  // a = y, b = dy
  return swiglu_value(a, b);                                             // a = gate, b = up
}

// out[i] (contiguous) = f(a[i], b[i]) over strided a, b.
template <typename T, Op kOp>
__global__ void map2_kernel(T* out, const T* a, Layout al, const T* b, Layout bl, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_float<T>(apply<kOp>(to_float(a[element_offset(al, i)]), to_float(b[element_offset(bl, i)])));
}

template <typename T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* gate, Layout gl, const T* up, Layout ul, const T* dy,
                                       Layout dl, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[element_offset(gl, i)]);
    const float u = to_float(up[element_offset(ul, i)]);
    const float d = to_float(dy[element_offset(dl, i)]);
    dgate[i] = from_float<T>(d * u * silu_grad(g));
    dup[i] = from_float<T>(d * g * sigmoid(g));
  }
}

template <Op kOp>
void launch_map2(std::string_view name, const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(out.device().index));
  const cudaStream_t stream = compute_stream(out.device().index);
  dispatch_float(name, out.dtype(), [&]<typename T>() {
    map2_kernel<T, kOp><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(out.data_ptr()),
                                                                static_cast<const T*>(a.data_ptr()), layout_of(a),
                                                                static_cast<const T*>(b.data_ptr()), layout_of(b), n);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void silu_backward(const Tensor& dx, const Tensor& x, const Tensor& dy) {
  launch_map2<Op::silu_backward>("silu_backward", dx, x, dy);
}

void sigmoid_backward(const Tensor& dx, const Tensor& y, const Tensor& dy) {
  launch_map2<Op::sigmoid_backward>("sigmoid_backward", dx, y, dy);
}

void swiglu(const Tensor& h, const Tensor& gate, const Tensor& up) { launch_map2<Op::swiglu>("swiglu", h, gate, up); }

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& gate, const Tensor& up, const Tensor& dy) {
  const int64_t n = dgate.numel();
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(dgate.device().index));
  const cudaStream_t stream = compute_stream(dgate.device().index);
  dispatch_float("swiglu_backward", gate.dtype(), [&]<typename T>() {
    swiglu_backward_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
        static_cast<T*>(dgate.data_ptr()), static_cast<T*>(dup.data_ptr()), static_cast<const T*>(gate.data_ptr()),
        layout_of(gate), static_cast<const T*>(up.data_ptr()), layout_of(up), static_cast<const T*>(dy.data_ptr()),
        layout_of(dy), n);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace daedalus::cuda
