// The basic ops on the tape (elementwise arithmetic with broadcasting, reductions, views and joins,
// matrix products) through the gradient-check harness, contiguous and as transposed views, with
// forward values against the raw kernels (bit for bit) and gradients in the inputs' dtype.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/gemm.h"
#include "autograd/kernels/reduce.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/linear.h"
#include "autograd/ops/shape.h"
#include "tests/gradcheck.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::all_close;
using testing::expect_gradcheck;
using testing::GradcheckOptions;
using testing::OpFn;
using testing::random_tensor;
using testing::same;

// Normal values pushed away from zero (|b| >= 1): denominators for div, so 1/b stays smooth over
// the finite-difference step.
Tensor away_from_zero(const Shape& shape, uint64_t seed) {
  std::vector<double> v = random_tensor(shape, seed).to_doubles();
  for (double& x : v) x += x < 0 ? -1.0 : 1.0;
  return Tensor::from_values(v, shape);
}

// ---- elementwise arithmetic ---------------------------------------------------------------------

TEST(OpsBasic, BinaryArithmeticBroadcastsAndGradcheck) {
  struct Binary {
    const char* name;
    Var (*op)(const Var&, const Var&);
    kernels::BinaryOp kernel;
  };
  const Binary binaries[] = {{"add", ops::add, kernels::BinaryOp::add},
                             {"sub", ops::sub, kernels::BinaryOp::sub},
                             {"mul", ops::mul, kernels::BinaryOp::mul},
                             {"div", ops::div, kernels::BinaryOp::div}};
  // Same shape; b broadcast along rows ([4]) and along columns ([3, 1]); a broadcast; both.
  const std::pair<Shape, Shape> shapes[] = {{{3, 4}, {3, 4}}, {{3, 4}, {4}},    {{3, 4}, {3, 1}},
                                            {{4}, {3, 4}},    {{3, 1}, {1, 4}}, {{2, 3, 4}, {3, 1}}};
  uint64_t seed = 1;
  for (const Binary& b : binaries) {
    for (const auto& [sa, sb] : shapes) {
      SCOPED_TRACE(std::string(b.name) + " " + shape_str(sa) + " with " + shape_str(sb));
      const Tensor x = random_tensor(sa, seed++), y = away_from_zero(sb, seed++);
      EXPECT_TRUE(same(b.op(Var(x), Var(y)).value(), kernels::binary(b.kernel, x, y)));
      const auto op = b.op;
      expect_gradcheck([op](const std::vector<Var>& in) { return op(in[0], in[1]); }, {x, y});
      // One side frozen: only the other receives (and needs) a gradient.
      for (const bool first : {true, false}) {
        GradcheckOptions one;
        one.requires_grad = {first, !first};
        expect_gradcheck([op](const std::vector<Var>& in) { return op(in[0], in[1]); }, {x, y}, one);
      }
    }
  }
}

TEST(OpsBasic, AffineMatchesKernelAndGradcheck) {
  const Tensor x = random_tensor({3, 7}, 20);
  EXPECT_TRUE(same(ops::affine(Var(x), -2.5, 0.75).value(), kernels::affine(x, -2.5, 0.75)));
  expect_gradcheck([](const std::vector<Var>& in) { return ops::affine(in[0], -2.5, 0.75); }, {x});
  expect_gradcheck([](const std::vector<Var>& in) { return ops::affine(in[0], 3.0); }, {random_tensor({13}, 21)});
}

// ---- reductions ---------------------------------------------------------------------------------

TEST(OpsBasic, SumAndMeanOverDimsMatchKernelsAndGradcheck) {
  const Tensor x = random_tensor({3, 4, 5}, 30);
  for (const int dim : {0, 1, 2, -1, -3}) {
    for (const bool keepdim : {false, true}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + (keepdim ? " keepdim" : ""));
      EXPECT_TRUE(same(ops::sum(Var(x), dim, keepdim).value(), kernels::sum(x, dim, keepdim)));
      EXPECT_TRUE(same(ops::mean(Var(x), dim, keepdim).value(), kernels::mean(x, dim, keepdim)));
      expect_gradcheck([=](const std::vector<Var>& in) { return ops::sum(in[0], dim, keepdim); }, {x});
      expect_gradcheck([=](const std::vector<Var>& in) { return ops::mean(in[0], dim, keepdim); }, {x});
    }
  }
  const Tensor v = random_tensor({7}, 31);
  expect_gradcheck([](const std::vector<Var>& in) { return ops::mean(in[0], 0); }, {v});
}

TEST(OpsBasic, SumAllAndMeanAllMatchKernelsAndGradcheck) {
  uint64_t seed = 40;
  for (const Shape& shape : {Shape{1}, Shape{13}, Shape{7, 13}, Shape{3, 7, 13}}) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor x = random_tensor(shape, seed++);
    const Var s = ops::sum_all(Var(x)), m = ops::mean_all(Var(x));
    EXPECT_TRUE(same(s.value(), kernels::sum_all(x)));
    EXPECT_EQ(s.shape(), Shape{});
    EXPECT_EQ(m.dtype(), DType::f32);
    EXPECT_TRUE(same(m.value(), kernels::affine(kernels::sum_all(x), 1.0 / double(x.numel()))));
    expect_gradcheck([](const std::vector<Var>& in) { return ops::sum_all(in[0]); }, {x});
    expect_gradcheck([](const std::vector<Var>& in) { return ops::mean_all(in[0]); }, {x});
  }
}

// ---- views and joins ----------------------------------------------------------------------------

TEST(OpsBasic, ReshapeTransposePermuteGradcheck) {
  const Tensor x = random_tensor({3, 4, 5}, 50);
  for (const Shape& shape : {Shape{12, 5}, Shape{-1}, Shape{5, 3, 4}, Shape{3, 1, 20}}) {
    SCOPED_TRACE("reshape " + shape_str(shape));
    EXPECT_TRUE(same(ops::reshape(Var(x), shape).value(), x.reshape(shape)));
    expect_gradcheck([shape](const std::vector<Var>& in) { return ops::reshape(in[0], shape); }, {x});
  }
  for (const auto& [d0, d1] : {std::pair{0, 2}, std::pair{-1, -2}, std::pair{1, 1}}) {
    SCOPED_TRACE("transpose " + std::to_string(d0) + " " + std::to_string(d1));
    EXPECT_TRUE(same(ops::transpose(Var(x), d0, d1).value(), x.transpose(d0, d1)));
    expect_gradcheck([a = d0, b = d1](const std::vector<Var>& in) { return ops::transpose(in[0], a, b); }, {x});
  }
  for (const std::vector<int>& order : {std::vector<int>{2, 0, 1}, std::vector<int>{1, -1, 0}}) {
    SCOPED_TRACE("permute");
    EXPECT_TRUE(same(ops::permute(Var(x), order).value(), x.permute(order)));
    expect_gradcheck([order](const std::vector<Var>& in) { return ops::permute(in[0], order); }, {x});
  }
}

TEST(OpsBasic, ExpandIsAViewAndSumsItsGradient) {
  const Tensor x = random_tensor({3, 1, 5}, 55);
  const Var y = ops::expand(Var(x), {2, 3, 4, 5});
  EXPECT_TRUE(y.value().shares_storage(x));
  EXPECT_EQ(y.value().stride(2), 0);
  // d/dx of sum(w * expand(x)) sums w over the 2 x 4 broadcast copies of each element.
  expect_gradcheck([](const std::vector<Var>& in) { return ops::expand(in[0], {2, 3, 4, 5}); }, {x});
}

TEST(OpsBasic, SliceWithStepGradcheck) {
  const Tensor x = random_tensor({3, 7, 5}, 60);
  struct Slice {
    int d;
    int64_t start, end, step;
  };
  for (const Slice& s :
       {Slice{1, 1, 7, 2}, Slice{0, 1, 3, 1}, Slice{-1, 0, 5, 3}, Slice{1, -5, -1, 1}, Slice{2, 4, 5, 1}}) {
    SCOPED_TRACE("slice d=" + std::to_string(s.d) + " [" + std::to_string(s.start) + ", " + std::to_string(s.end) +
                 ") step " + std::to_string(s.step));
    EXPECT_TRUE(same(ops::slice(Var(x), s.d, s.start, s.end, s.step).value(), x.slice(s.d, s.start, s.end, s.step)));
    expect_gradcheck([s](const std::vector<Var>& in) { return ops::slice(in[0], s.d, s.start, s.end, s.step); }, {x});
  }
}

TEST(OpsBasic, ConcatGradcheck) {
  const Tensor a = random_tensor({3, 2}, 70), b = random_tensor({3, 4}, 71), c = random_tensor({3, 1}, 72);
  const Var joined = ops::concat({Var(a), Var(b), Var(c)}, 1);
  ASSERT_EQ(joined.shape(), (Shape{3, 7}));
  std::vector<double> want;
  for (int64_t r = 0; r < 3; ++r)
    for (const Tensor* t : {&a, &b, &c})
      for (int64_t j = 0; j < t->size(1); ++j) want.push_back(t->to_doubles()[static_cast<size_t>(r * t->size(1) + j)]);
  EXPECT_TRUE(all_close(joined.value(), want, 0, 0));
  const OpFn cat1 = [](const std::vector<Var>& in) { return ops::concat(in, 1); };
  const OpFn cat0 = [](const std::vector<Var>& in) { return ops::concat(in, -2); };
  expect_gradcheck(cat1, {a, b, c});
  expect_gradcheck(cat0, {random_tensor({1, 4}, 73), random_tensor({2, 4}, 74)});
  // A frozen part in the middle gets no gradient; the others still do.
  GradcheckOptions middle_frozen;
  middle_frozen.requires_grad = {true, false, true};
  expect_gradcheck(cat1, {a, b, c}, middle_frozen);
}

TEST(OpsBasic, SplitGradcheck) {
  const Tensor x = random_tensor({3, 13}, 80);
  const std::vector<Var> parts = ops::split(Var(x), {4, 2, 7}, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_TRUE(same(parts[1].value(), x.slice(1, 4, 6)));
  // Pieces used out of order, one unused (its gradient is zero-filled by the tape).
  expect_gradcheck(
      [](const std::vector<Var>& in) {
        const std::vector<Var> p = ops::split(in[0], {4, 2, 7}, 1);
        return ops::concat({p[2], p[0]}, 1);
      },
      {x});
  expect_gradcheck([](const std::vector<Var>& in) { return ops::split(in[0], {4, 2, 7}, -1)[1]; }, {x});
  expect_gradcheck(
      [](const std::vector<Var>& in) {
        const std::vector<Var> p = ops::split(in[0], {1, 0, 2}, 0);
        return ops::mul(p[0], p[2]);  // [1, 13] * [2, 13]: both pieces, broadcast
      },
      {x});
}

// ---- matrix products ----------------------------------------------------------------------------

TEST(OpsBasic, MatmulGradcheck) {
  // 2-d; batched; a batched with b shared; a shared with b batched.
  const std::pair<Shape, Shape> shapes[] = {
      {{3, 7}, {7, 5}}, {{2, 3, 7}, {2, 7, 5}}, {{2, 3, 7}, {7, 5}}, {{3, 7}, {2, 7, 5}}, {{1, 1}, {1, 13}}};
  uint64_t seed = 90;
  for (const auto& [sa, sb] : shapes) {
    SCOPED_TRACE(shape_str(sa) + " x " + shape_str(sb));
    const Tensor a = random_tensor(sa, seed++), b = random_tensor(sb, seed++);
    EXPECT_TRUE(same(ops::matmul(Var(a), Var(b)).value(), kernels::matmul(a, b)));
    expect_gradcheck([](const std::vector<Var>& in) { return ops::matmul(in[0], in[1]); }, {a, b});
  }
}

TEST(OpsBasic, LinearGradcheck) {
  const Tensor w = random_tensor({5, 7}, 100), bias = random_tensor({5}, 101);
  for (const Shape& xs : {Shape{3, 7}, Shape{2, 3, 7}, Shape{7}}) {
    SCOPED_TRACE(shape_str(xs));
    const Tensor x = random_tensor(xs, 102);
    Shape ys = xs;
    ys.back() = 5;
    const Tensor y = kernels::matmul(x.reshape({-1, 7}), w.t()).view(ys);
    EXPECT_TRUE(same(ops::linear(Var(x), Var(w)).value(), y));
    EXPECT_TRUE(same(ops::linear(Var(x), Var(w), Var(bias)).value(), kernels::add(y, bias)));
    expect_gradcheck([](const std::vector<Var>& in) { return ops::linear(in[0], in[1]); }, {x, w});
    expect_gradcheck([](const std::vector<Var>& in) { return ops::linear(in[0], in[1], in[2]); }, {x, w, bias});
    GradcheckOptions frozen_weight;
    frozen_weight.requires_grad = {true, false, true};
    expect_gradcheck([](const std::vector<Var>& in) { return ops::linear(in[0], in[1], in[2]); }, {x, w, bias},
                     frozen_weight);
  }
}

// ---- dtypes -------------------------------------------------------------------------------------

TEST(OpsBasic, Bf16InputsGetBf16Gradients) {
  // The ops keep every gradient in its input's dtype (the tape rejects any other); outputs of the
  // products are fp32.
  Var a(random_tensor({3, 4}, 110, DType::bf16), true), b(random_tensor({4}, 111, DType::bf16), true);
  Var w(random_tensor({5, 4}, 112, DType::bf16), true), bias(random_tensor({5}, 113), true);
  const Var h = ops::mul(ops::add(a, b), ops::div(ops::sub(a, b), ops::affine(b, 0.0, 2.0)));
  const Var s = ops::mean(ops::sum(h, 0, /*keepdim=*/true), 1);
  const Var lin = ops::linear(ops::reshape(ops::transpose(a, 0, 1), {3, 4}), w, bias);
  const Var prod = ops::matmul(a, ops::permute(w, {1, 0}));
  EXPECT_EQ(h.dtype(), DType::bf16);
  EXPECT_EQ(lin.dtype(), DType::f32);
  backward(ops::add(ops::add(ops::sum_all(s), ops::mean_all(lin)), ops::sum_all(prod)));
  EXPECT_EQ(a.grad().dtype(), DType::bf16);
  EXPECT_EQ(b.grad().dtype(), DType::bf16);
  EXPECT_EQ(w.grad().dtype(), DType::bf16);
  EXPECT_EQ(bias.grad().dtype(), DType::f32);
}

}  // namespace
}  // namespace daedalus

namespace daedalus {
namespace {

TEST(OpsBasic, CastRoundsForwardAndConvertsTheGradientBack) {
  const Tensor x = testing::random_tensor({7, 13}, 41);
  Var xv(x, true);
  const Var y = ops::cast(xv, DType::bf16);
  EXPECT_TRUE(testing::same(y.value(), kernels::cast(x, DType::bf16)));
  backward(ops::sum_all(ops::cast(ops::affine(y, 2.0), DType::f32)));
  EXPECT_EQ(xv.grad().dtype(), DType::f32);
  EXPECT_TRUE(testing::all_close(xv.grad(), std::vector<double>(7 * 13, 2.0), 0, 0));
  EXPECT_TRUE(ops::cast(xv, DType::f32).slot() == xv.slot());  // same dtype: the Var itself
}

}  // namespace
}  // namespace daedalus
