// RoPE kernel: a hand-computed case, both layouts against a double reference, the permutation
// that relates them, inverse(forward) = identity, and backward against finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <string_view>

#include "autograd/kernels/rope.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::kU16;
using testing::kU32;

using testing::error_of;
using testing::finite_differences;
using testing::mentions;
using testing::weighted_sum;

using kernels::RopeLayout;
using testing::all_close;
using testing::kRaggedSizes;
using testing::random_tensor;

// ---- reference --------------------------------------------------------------------------------

// x [B, T, H, D] row-major doubles; exact angles in double.
std::vector<double> rope_ref(const std::vector<double>& x, const Shape& shape, const std::vector<double>& pos,
                             double theta, RopeLayout layout, bool inverse) {
  const int64_t T = shape[1], H = shape[2], D = shape[3];
  std::vector<double> y(x.size());
  for (size_t row = 0; row * size_t(D) < x.size(); ++row) {
    const int64_t t = int64_t(row / size_t(H)) % T;
    for (int64_t j = 0; j < D / 2; ++j) {
      const double angle = pos[size_t(t)] * std::pow(theta, -2.0 * double(j) / double(D));
      const double c = std::cos(angle), s = inverse ? -std::sin(angle) : std::sin(angle);
      const size_t i0 = row * size_t(D) + size_t(layout == RopeLayout::interleaved ? 2 * j : j);
      const size_t i1 = i0 + size_t(layout == RopeLayout::interleaved ? 1 : D / 2);
      y[i0] = x[i0] * c - x[i1] * s;
      y[i1] = x[i0] * s + x[i1] * c;
    }
  }
  return y;
}

// P: the last dim reordered as evens then odds, [x0, x2, ..., x1, x3, ...].
std::vector<double> evens_then_odds(const std::vector<double>& x, int64_t dim) {
  std::vector<double> p(x.size());
  for (size_t row = 0; row * size_t(dim) < x.size(); ++row)
    for (int64_t j = 0; j < dim / 2; ++j) {
      p[row * size_t(dim) + size_t(j)] = x[row * size_t(dim) + size_t(2 * j)];
      p[row * size_t(dim) + size_t(dim / 2 + j)] = x[row * size_t(dim) + size_t(2 * j + 1)];
    }
  return p;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double e : v) m = std::max(m, std::fabs(e));
  return m;
}

// Positions 1000 + 3t (a decode-time offset, not arange) as int32 or int64.
Tensor positions_for(int64_t seq, DType dtype) {
  std::vector<double> p(static_cast<size_t>(seq));
  for (int64_t t = 0; t < seq; ++t) p[size_t(t)] = double(1000 + 3 * t);
  return Tensor::from_values(p, {seq}, dtype);
}

// ---- tests ------------------------------------------------------------------------------------

TEST(Rope, HandComputedCase) {
  // D = 4, theta = 100: frequencies 100^0 = 1 and 100^(-2/4) = 0.1. Two positions, 0 and 2:
  // angles (0, 0) and (2, 0.2). x = [1, 2, 3, 4] at both.
  const Tensor x = Tensor::from_values({1, 2, 3, 4, 1, 2, 3, 4}, {1, 2, 1, 4});
  const Tensor pos = Tensor::from_vector<int64_t>({0, 2}, {2});
  const double c2 = std::cos(2.0), s2 = std::sin(2.0), c02 = std::cos(0.2), s02 = std::sin(0.2);
  // interleaved: pairs (1, 2) at angle 2 and (3, 4) at angle 0.2.
  const std::vector<double> interleaved = {
      1, 2, 3, 4, 1 * c2 - 2 * s2, 1 * s2 + 2 * c2, 3 * c02 - 4 * s02, 3 * s02 + 4 * c02};
  // half: pairs (1, 3) at angle 2 and (2, 4) at angle 0.2.
  const std::vector<double> half = {1, 2, 3, 4, 1 * c2 - 3 * s2, 2 * c02 - 4 * s02, 1 * s2 + 3 * c2, 2 * s02 + 4 * c02};
  // fp32 table (one rounding of cos and sin) and float arithmetic: a few ulps of |x| <= 4.
  EXPECT_TRUE(all_close(kernels::rope(x, pos, 100.0, RopeLayout::interleaved), interleaved, 0, 4e-6));
  EXPECT_TRUE(all_close(kernels::rope(x, pos, 100.0, RopeLayout::half), half, 0, 4e-6));
}

TEST(Rope, ForwardMatchesDoubleReferenceOnRaggedShapes) {
  // fp32: cos and sin rounded once (2^-24 each), two products and a sum in float: |error| <=
  // ~5 * 2^-24 * (|a| + |b|) <= 10 * 2^-24 * max|x|, so atol 12 * 2^-24 * max|x| (an absolute
  // bound: a rotated element can be near 0 while its pair is not). bf16 adds one output rounding.
  // x is a [B, T, H, D] view of a [B, H, T, D] buffer (the attention layout), so it is strided.
  int case_index = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half}) {
      for (int64_t seq : kRaggedSizes) {
        for (int64_t dim : {2, 8, 66}) {
          const int64_t batch = 2, heads = case_index % 2 ? 3 : 1;
          const DType pos_type = case_index++ % 3 ? DType::i64 : DType::i32;
          const Tensor x = random_tensor({batch, heads, seq, dim}, uint64_t(seq * dim), dtype).transpose(1, 2);
          const Tensor pos = positions_for(seq, pos_type);
          const std::vector<double> xd = x.to_doubles();
          for (bool inverse : {false, true}) {
            const Tensor y = kernels::rope(x, pos, 10000.0, layout, inverse);
            ASSERT_EQ(y.shape(), x.shape());
            ASSERT_EQ(y.dtype(), dtype);
            ASSERT_TRUE(y.is_contiguous());
            EXPECT_TRUE(all_close(y, rope_ref(xd, x.shape(), pos.to_doubles(), 10000.0, layout, inverse),
                                  dtype == DType::f32 ? 0 : kU16, 12 * kU32 * max_abs(xd)))
                << dtype_name(dtype) << (layout == RopeLayout::half ? " half" : " interleaved") << " T=" << seq
                << " D=" << dim << (inverse ? " inverse" : "");
          }
        }
      }
    }
  }
}

TEST(Rope, LayoutsDifferByAFixedPermutation) {
  // rope(P(x), half) == P(rope(x, interleaved)): the same pairs rotated by the same float angles,
  // so bit for bit. And the layouts are not the same function (P is not the identity for D > 2).
  const Shape shape = {2, 5, 3, 16};
  const Tensor x = random_tensor(shape, 21);
  const Tensor pos = Tensor::arange(5);
  const Tensor px = Tensor::from_values(evens_then_odds(x.to_doubles(), 16), shape);
  const Tensor inter = kernels::rope(x, pos, 10000.0, RopeLayout::interleaved);
  const Tensor half_of_px = kernels::rope(px, pos, 10000.0, RopeLayout::half);
  EXPECT_TRUE(all_close(half_of_px, evens_then_odds(inter.to_doubles(), 16), 0, 0));
  EXPECT_FALSE(all_close(kernels::rope(x, pos, 10000.0, RopeLayout::half), inter, 1e-3, 1e-3));
}

TEST(Rope, InverseUndoesForward) {
  // Two rotations in float: 2 * 12 * 2^-24 * max|x| (see above). bf16 rounds the intermediate
  // and the result: 2 roundings of 2^-8 of elements <= sqrt(2) max|x|.
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half}) {
      const Tensor x = random_tensor({3, 65, 2, 64}, 5, dtype);
      const Tensor pos = positions_for(65, DType::i64);
      const Tensor back = kernels::rope(kernels::rope(x, pos, 10000.0, layout), pos, 10000.0, layout, /*inverse=*/true);
      const double scale = max_abs(x.to_doubles());
      const double atol = dtype == DType::f32 ? 24 * kU32 * scale : 3 * kU16 * scale;
      EXPECT_TRUE(all_close(back, x, 0, atol)) << dtype_name(dtype);
    }
  }
}

TEST(Rope, BackwardIsInverseRotationAndMatchesFiniteDifferences) {
  for (RopeLayout layout : {RopeLayout::interleaved, RopeLayout::half}) {
    const Shape shape = {2, 7, 3, 10};
    const Tensor x = random_tensor(shape, 31);
    const Tensor w = random_tensor(shape, 32);  // dy
    const Tensor pos = positions_for(7, DType::i32);
    const std::vector<double> xd = x.to_doubles(), wd = w.to_doubles(), pd = pos.to_doubles();
    const Tensor dx = kernels::rope(w, pos, 10000.0, layout, /*inverse=*/true);

    // The formula: the inverse rotation of dy is the gradient of L = sum(dy * rope(x)).
    // FD error ~1e-9 (|L| < 100, h = 1e-6).
    const std::vector<double> fd = finite_differences(
        [&](const std::vector<double>& xs) {
          return weighted_sum(wd, rope_ref(xs, shape, pd, 10000.0, layout, false));
        },
        xd);
    const std::vector<double> analytic = rope_ref(wd, shape, pd, 10000.0, layout, /*inverse=*/true);
    EXPECT_TRUE(all_close(Tensor::from_values(analytic, shape), fd, 1e-5, 1e-7));
    // The kernel: fp32 table and arithmetic as in the forward test, 12 * 2^-24 * max|dy|.
    EXPECT_TRUE(all_close(dx, fd, 0, 12 * kU32 * max_abs(wd) + 1e-7));
  }
}

TEST(Rope, ErrorsNameTheOpAndShapes) {
  const Tensor x = Tensor::zeros({1, 4, 2, 8});
  const Tensor pos = Tensor::arange(4);
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::rope(Tensor::zeros({1, 4, 2, 7}), pos, 1e4, RopeLayout::half);
                       }),
                       {"rope", "[1, 4, 2, 7]", "even"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::rope(x, Tensor::arange(5), 1e4, RopeLayout::half); }),
                       {"rope", "[5]", "[1, 4, 2, 8]"}));
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::rope(Tensor::zeros({4, 2, 8}), pos, 1e4, RopeLayout::half);
                       }),
                       {"rope", "[4, 2, 8]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::rope(x, Tensor::zeros({4}), 1e4, RopeLayout::half); }),
                       {"rope", "positions", "fp32"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::rope(x.to(DType::i32), pos, 1e4, RopeLayout::half); }),
                       {"rope", "int32[1, 4, 2, 8]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::rope(x, pos, 0.0, RopeLayout::half); }), {"rope", "theta"}));
}

}  // namespace
}  // namespace daedalus
