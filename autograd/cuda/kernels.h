// CUDA twins of the CPU kernels: same operands, same contract (see the matching autograd/kernels/
// header for shapes and semantics). Called only through the dispatchers in autograd/kernels/.
#pragma once

#include "autograd/kernels/elementwise.h"
#include "autograd/tensor.h"

namespace daedalus::cuda {

// copy.cu
void copy(const Tensor& dst, const Tensor& src, Fp8Overflow overflow);
void fill(const Tensor& dst, double value);

// elementwise.cu (operands already expanded to the output shape)
void binary(kernels::BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b);
void unary(kernels::UnaryOp op, const Tensor& out, const Tensor& x);
void affine(const Tensor& out, const Tensor& x, float alpha, float beta);
void add_(const Tensor& dst, const Tensor& src, float alpha);

// attention.cu (kernels/attention.h; head dims up to 256). q, k [B, H, T, Dqk], v [B, H, T, Dv] of
// one float dtype, any strides. Forward: out [B, H, T, Dv] and lse [B, H, T] fp32 contiguous.
// Backward: out, dout fp32 any strides; lse fp32 contiguous; dq, dk, dv contiguous in q's dtype.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                       double scale, bool causal);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, double scale,
                        bool causal);

}  // namespace daedalus::cuda
