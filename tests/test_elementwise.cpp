// Elementwise arithmetic and broadcasting against double-precision references.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/kernels/elementwise.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using kernels::BinaryOp;
using kernels::UnaryOp;
using testing::all_close;
using testing::random_tensor;
using testing::unit_roundoff;

double ref_binary(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
    case BinaryOp::maximum: return std::max(a, b);
    case BinaryOp::minimum: return std::min(a, b);
  }
  return 0;
}

double ref_unary(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::abs: return std::fabs(x);
    case UnaryOp::exp: return std::exp(x);
    case UnaryOp::log: return std::log(x);
    case UnaryOp::sqrt: return std::sqrt(x);
    case UnaryOp::rsqrt: return 1 / std::sqrt(x);
    case UnaryOp::square: return x * x;
    case UnaryOp::sigmoid: return 1 / (1 + std::exp(-x));
    case UnaryOp::silu: return x / (1 + std::exp(-x));
  }
  return 0;
}

// Broadcast reference over row-major shapes: out index -> operand index with size-1 dims pinned.
std::vector<double> broadcast_ref(BinaryOp op, const Tensor& a, const Tensor& b, const Shape& out) {
  const auto va = a.to_doubles(), vb = b.to_doubles();
  std::vector<double> r(static_cast<size_t>(shape_numel(out)));
  const size_t n = out.size();
  auto operand_index = [&](const Shape& s, const std::vector<int64_t>& idx) {
    std::vector<int64_t> sub;
    for (size_t i = n - s.size(); i < n; ++i) sub.push_back(s[i - (n - s.size())] == 1 ? 0 : idx[i]);
    return testing::flat(s, sub);
  };
  std::vector<int64_t> idx(n, 0);
  for (size_t lin = 0; lin < r.size(); ++lin) {
    int64_t rem = int64_t(lin);
    for (size_t d = n; d-- > 0;) {
      idx[d] = rem % out[d];
      rem /= out[d];
    }
    r[lin] = ref_binary(op, va[size_t(operand_index(a.shape(), idx))], vb[size_t(operand_index(b.shape(), idx))]);
  }
  return r;
}

TEST(Elementwise, BinaryOpsOnRaggedShapesAndDtypes) {
  // fp32: one rounding of the exact result (|err| <= 2^-24 |ref|), so rtol = 2 u.
  // bf16: inputs are bf16 values, the op runs in fp32 and rounds once to bf16: rtol = 2^-8 (+ fp32 error).
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t n : testing::kRaggedSizes) {
      const Tensor a = random_tensor({3, n}, 1 + uint64_t(n), dtype);
      Tensor b = random_tensor({3, n}, 2 + uint64_t(n), dtype);
      for (BinaryOp op :
           {BinaryOp::add, BinaryOp::sub, BinaryOp::mul, BinaryOp::div, BinaryOp::maximum, BinaryOp::minimum}) {
        const Tensor out = kernels::binary(op, a, b);
        EXPECT_EQ(out.dtype(), dtype);
        const double rtol = 2 * unit_roundoff(dtype) + unit_roundoff(DType::f32);
        // add/sub of nearly cancelling values: the error is relative to the operands, hence atol.
        const double atol = (op == BinaryOp::add || op == BinaryOp::sub) ? 8 * unit_roundoff(dtype) : 0;
        EXPECT_TRUE(all_close(out, broadcast_ref(op, a, b, a.shape()), rtol, atol))
            << kernels::op_name(op) << " " << dtype_name(dtype) << " n=" << n;
      }
    }
  }
}

TEST(Elementwise, BroadcastingAndStridedOperands) {
  const Tensor a = random_tensor({65, 7}, 5);
  const Tensor row = random_tensor({7}, 6);
  const Tensor col = random_tensor({65, 1}, 7);
  const double rtol = 2 * unit_roundoff(DType::f32);
  EXPECT_TRUE(all_close(kernels::mul(a, row), broadcast_ref(BinaryOp::mul, a, row, {65, 7}), rtol, 0));
  EXPECT_TRUE(all_close(kernels::mul(col, row), broadcast_ref(BinaryOp::mul, col, row, {65, 7}), rtol, 0));
  // A transposed view and a sliced view as operands.
  const Tensor big = random_tensor({7, 129}, 8);
  const Tensor at = big.slice(1, 64, 129);  // [7, 65] with row stride 129
  const Tensor bt = a.t();                  // [7, 65] transposed
  EXPECT_FALSE(at.is_contiguous());
  EXPECT_TRUE(all_close(kernels::sub(at, bt), broadcast_ref(BinaryOp::sub, at.contiguous(), bt.contiguous(), {7, 65}),
                        rtol, 8 * unit_roundoff(DType::f32)));
  // 3-d broadcast [2,1,4] x [3,1] -> [2,3,4]
  const Tensor p = random_tensor({2, 1, 4}, 9), q = random_tensor({3, 1}, 10);
  EXPECT_TRUE(all_close(kernels::add(p, q), broadcast_ref(BinaryOp::add, p, q, {2, 3, 4}), rtol, 1e-6));
}

TEST(Elementwise, UnaryOps) {
  // std::exp/log in float are within 1-2 ulp; sigmoid/silu compose 3 roundings: rtol 8 u for fp32.
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t n : testing::kRaggedSizes) {
      Tensor x = random_tensor({n}, 20 + uint64_t(n), dtype);
      const Tensor pos = kernels::unary(UnaryOp::abs, x);  // for log/sqrt/rsqrt
      for (UnaryOp op : {UnaryOp::neg, UnaryOp::abs, UnaryOp::exp, UnaryOp::log, UnaryOp::sqrt, UnaryOp::rsqrt,
                         UnaryOp::square, UnaryOp::sigmoid, UnaryOp::silu}) {
        const bool needs_positive = op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt;
        const Tensor& in = needs_positive ? pos : x;
        std::vector<double> ref = in.to_doubles();
        for (double& v : ref) v = ref_unary(op, v);
        const double rtol = dtype == DType::f32 ? 8 * unit_roundoff(DType::f32)
                                                : unit_roundoff(DType::bf16) * 1.01;  // bf16: one final rounding
        // log near 1 is near 0: absolute error relative to the argument, ~u.
        const double atol = op == UnaryOp::log ? 4 * unit_roundoff(dtype) : 0;
        EXPECT_TRUE(all_close(kernels::unary(op, in), ref, rtol, atol))
            << kernels::op_name(op) << " " << dtype_name(dtype) << " n=" << n;
      }
    }
  }
}

TEST(Elementwise, AffineAndInPlaceAccumulate) {
  const Tensor x = random_tensor({129, 7}, 30);
  std::vector<double> ref = x.to_doubles();
  for (double& v : ref) v = 0.5 * v - 3.0;
  EXPECT_TRUE(all_close(kernels::affine(x, 0.5, -3.0), ref, 2 * unit_roundoff(DType::f32), 1e-6));

  // Gradient accumulation: g += 2 * dy, dy broadcast over rows.
  Tensor g = random_tensor({129, 7}, 31);
  const Tensor dy = random_tensor({7}, 32);
  const auto g0 = g.to_doubles(), d = dy.to_doubles();
  kernels::add_(g, dy, 2.0);
  std::vector<double> want(g0.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = g0[i] + 2.0 * d[i % 7];
  EXPECT_TRUE(all_close(g, want, 2 * unit_roundoff(DType::f32), 1e-6));
  EXPECT_THROW(kernels::add_(dy, g, 1.0), InputError);  // cannot broadcast [129, 7] into [7]
}

TEST(Elementwise, ErrorsNameTheOpAndBothShapes) {
  const Tensor a = Tensor::zeros({3, 4}), b = Tensor::zeros({5});
  try {
    kernels::add(a, b);
    FAIL() << "add of [3, 4] and [5] succeeded";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("add"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[3, 4]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[5]"), std::string::npos) << msg;
  }
  try {
    kernels::mul(a, Tensor::zeros({3, 4}, DType::bf16));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("mul: dtypes fp32 and bf16 differ"), std::string::npos) << e.what();
  }
  try {
    kernels::unary(UnaryOp::exp, Tensor::zeros({2}, DType::i64));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("exp: unsupported dtype int64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kernels::unary(UnaryOp::exp, Tensor::zeros({2}, DType::f8e4m3)), InputError);
  EXPECT_THROW(kernels::add(a, Tensor()), InputError);
}

}  // namespace
}  // namespace daedalus
