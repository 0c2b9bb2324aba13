// CUDA twins of the CPU kernels: same operands, same contract (see the matching autograd/kernels/
// header for shapes and semantics). Called only through the dispatchers in autograd/kernels/.
#pragma once

#include <string_view>

#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/reduce.h"
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

// reduce.cu, index.cu, topk.cu, gemm.cu
// x contiguous [outer, n, inner] reduced over n -> out contiguous [outer * inner] (any shape), x's
// dtype or fp32.
void reduce(kernels::ReduceKind kind, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out);
// index any shape and strides; throws the CPU check's InputError for the first bad element.
void check_index_range(std::string_view op, const Tensor& index, std::string_view name, int64_t limit,
                       std::string_view context);
// out [M, D] contiguous = x [N, D] (any strides, any dtype)[index [M] contiguous, in range].
void gather_rows(const Tensor& out, const Tensor& x, const Tensor& index);
// dst [N, D] += weight * src [M, D] by index [M] contiguous (in range); weight contiguous fp32 [M]
// or undefined (all ones).
void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src, const Tensor& weight);
// x contiguous [rows, n] -> values [rows, k] (x's dtype), indices [rows, k] int64, contiguous.
void topk(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t k);
// c = alpha * a·b + beta * c; operands checked by the dispatcher (K >= 1, c non-empty).
void gemm(const Tensor& a, const Tensor& b, const Tensor& c, float alpha, float beta);

}  // namespace daedalus::cuda
