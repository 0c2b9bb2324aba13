// CUDA twins of autograd/kernels/elementwise: binary (operands pre-expanded), unary, affine, add_.
// Same float formulas as the CPU kernels; transcendental results may differ in the last bits.
#include <cuda_runtime.h>

#include "autograd/cuda/kernels.h"
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

// out[i] = f(a[i], b[i]); `scale` carries affine's / add_'s coefficients.
enum class Mode { binary, unary, affine, axpy };

template <typename T, Mode kMode>
__global__ void elementwise_kernel(T* out, Layout ol, const T* a, Layout al, const T* b, Layout bl, int64_t n,
                                   int op, float alpha, float beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = to_float(a[element_offset(al, i)]);
    float y;
    if constexpr (kMode == Mode::binary) {
      y = apply_binary(BinaryOp(op), x, to_float(b[element_offset(bl, i)]));
    } else if constexpr (kMode == Mode::unary) {
      y = apply_unary(UnaryOp(op), x);
    } else if constexpr (kMode == Mode::affine) {
      y = alpha * x + beta;
    } else {
      y = x + alpha * to_float(b[element_offset(bl, i)]);
    }
    out[element_offset(ol, i)] = from_float<T>(y);
  }
}

template <Mode kMode>
void launch(std::string_view name, const Tensor& out, const Tensor& a, const Tensor* b, int op, float alpha,
            float beta) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(out.device().index));
  dispatch_float(name, out.dtype(), [&]<typename T>() {
    const T* pb = b ? static_cast<const T*>(b->data_ptr()) : nullptr;
    const Layout lb = b ? layout_of(*b) : Layout{};
    elementwise_kernel<T, kMode><<<blocks_for(n), kThreads>>>(static_cast<T*>(out.data_ptr()), layout_of(out),
                                                               static_cast<const T*>(a.data_ptr()), layout_of(a),
                                                               pb, lb, n, op, alpha, beta);
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
