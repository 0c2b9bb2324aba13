// Elementwise arithmetic with NumPy broadcasting, for fp32 and bf16 (bf16 is computed in float
// and rounded once on store). Outputs are new contiguous tensors of the operands' dtype.
#pragma once

#include <string_view>

#include "autograd/tensor.h"

namespace daedalus::kernels {

enum class BinaryOp : uint8_t { add, sub, mul, div, maximum, minimum };
enum class UnaryOp : uint8_t { neg, abs, exp, log, sqrt, rsqrt, square, sigmoid, silu };

std::string_view op_name(BinaryOp op);
std::string_view op_name(UnaryOp op);

// Broadcast result of two shapes (align right; sizes equal or 1), or InputError naming op and shapes.
Shape broadcast_shapes(std::string_view op, const Shape& a, const Shape& b);

// out = a (op) b; a, b broadcastable, same dtype and device.
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
inline Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::add, a, b); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }
inline Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::div, a, b); }

// out = op(x).
Tensor unary(UnaryOp op, const Tensor& x);

// out = alpha * x + beta.
Tensor affine(const Tensor& x, double alpha, double beta = 0.0);

// dst += alpha * src, in place; src broadcasts to dst's shape (gradient accumulation).
void add_(const Tensor& dst, const Tensor& src, double alpha = 1.0);

}  // namespace daedalus::kernels
