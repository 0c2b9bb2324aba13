// CUDA twins of autograd/kernels/elementwise: binary (operands pre-expanded), unary, affine, add_.
// Same float formulas as the CPU kernels; transcendental results may differ in the last bits.
#include <cuda_runtime.h>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"

namespace daedalus::cuda {

using kernels::BinaryOp;
using kernels::UnaryOp;

namespace {

__device__ __forceinline__ float apply_binary(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
    case BinaryOp::maximum: return a > b || isnan(a) ? a : b;
    case BinaryOp::minimum: return a < b || isnan(a) ? a : b;
  }
  return 0.0f;
}

__device__ __forceinline__ float apply_unary(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::abs: return fabsf(x);
    case UnaryOp::exp: return expf(x);
    case UnaryOp::log: return logf(x);
    case UnaryOp::sqrt: return sqrtf(x);
    case UnaryOp::rsqrt: return 1.0f / sqrtf(x);
    case UnaryOp::square: return x * x;
    case UnaryOp::sigmoid: return 1.0f / (1.0f + expf(-x));
    case UnaryOp::silu: return x / (1.0f + expf(-x));
  }
  return 0.0f;
}

enum class Mode { binary, unary, affine, axpy };  // axpy: out = a + alpha * b

template <Mode kMode>
__device__ __forceinline__ float compute(int op, float x, float y, float alpha, float beta) {
  if constexpr (kMode == Mode::binary) return apply_binary(BinaryOp(op), x, y);
  if constexpr (kMode == Mode::unary) return apply_unary(UnaryOp(op), x);
  if constexpr (kMode == Mode::affine) return alpha * x + beta;
  return x + alpha * y;
}

template <Mode kMode>
inline constexpr bool kReadsB = kMode == Mode::binary || kMode == Mode::axpy;

// Any layout: out[i] = f(a[i], b[i]) through element_offset.
template <typename T, Mode kMode>
__global__ void elementwise_kernel(T* out, Layout ol, const T* a, Layout al, const T* b, Layout bl, int64_t n, int op,
                                   float alpha, float beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float y = kReadsB<kMode> ? to_float(b[element_offset(bl, i)]) : 0.0f;
    out[element_offset(ol, i)] = from_float<T>(compute<kMode>(op, to_float(a[element_offset(al, i)]), y, alpha, beta));
  }
}

// Contiguous, 16-byte aligned operands: 16 bytes per load and store, then a scalar tail.
template <typename T, Mode kMode>
__global__ void elementwise_packed_kernel(T* out, const T* a, const T* b, int64_t n, int op, float alpha, float beta) {
  constexpr int N = 16 / int(sizeof(T));
  using P = Pack<T, N>;
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t p = first; p < packs; p += stride) {
    const P pa = reinterpret_cast<const P*>(a)[p];
    P pb{};
    if constexpr (kReadsB<kMode>) pb = reinterpret_cast<const P*>(b)[p];
    P po;
#pragma unroll
    for (int k = 0; k < N; ++k)
      po.v[k] = from_float<T>(compute<kMode>(op, to_float(pa.v[k]), to_float(pb.v[k]), alpha, beta));
    reinterpret_cast<P*>(out)[p] = po;
  }
  for (int64_t i = packs * N + first; i < n; i += stride) {
    const float y = kReadsB<kMode> ? to_float(b[i]) : 0.0f;
    out[i] = from_float<T>(compute<kMode>(op, to_float(a[i]), y, alpha, beta));
  }
}

template <Mode kMode>
void launch(std::string_view name, const Tensor& out, const Tensor& a, const Tensor* b, int op, float alpha,
            float beta) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(out.device().index));
  const cudaStream_t stream = compute_stream(out.device().index);
  dispatch_float(name, out.dtype(), [&]<typename T>() {
    T* po = static_cast<T*>(out.data_ptr());
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = b ? static_cast<const T*>(b->data_ptr()) : nullptr;
    if (packable({&out, &a}, 16) && (b == nullptr || packable({b}, 16))) {
      elementwise_packed_kernel<T, kMode>
          <<<blocks_for(n / (16 / int64_t(sizeof(T))) + 1), kThreads, 0, stream>>>(po, pa, pb, n, op, alpha, beta);
    } else {
      elementwise_kernel<T, kMode><<<blocks_for(n), kThreads, 0, stream>>>(
          po, layout_of(out), pa, layout_of(a), pb, b ? layout_of(*b) : Layout{}, n, op, alpha, beta);
    }
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  launch<Mode::binary>(kernels::op_name(op), out, a, &b, int(op), 0.0f, 0.0f);
}

void unary(UnaryOp op, const Tensor& out, const Tensor& x) {
  launch<Mode::unary>(kernels::op_name(op), out, x, nullptr, int(op), 0.0f, 0.0f);
}

void affine(const Tensor& out, const Tensor& x, float alpha, float beta) {
  launch<Mode::affine>("affine", out, x, nullptr, 0, alpha, beta);
}

void add_(const Tensor& dst, const Tensor& src, float alpha) {
  launch<Mode::axpy>("add_", dst, dst, &src, 0, alpha, 0.0f);
}

}  // namespace daedalus::cuda
