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

}  // namespace daedalus::cuda
