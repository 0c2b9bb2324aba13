// RMSNorm kernels against a double-precision reference; backward against the analytic gradient
// and central finite differences of the reference; dweight determinism across thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "autograd/kernels/rmsnorm.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::kU16;
using testing::kU32;

using testing::error_of;
using testing::finite_differences;
using testing::mentions;
using testing::random_view;
using testing::weighted_sum;

using testing::all_close;
using testing::kRaggedSizes;
using testing::random_tensor;

constexpr double kEps = 1e-6;

// ---- references -------------------------------------------------------------------------------

std::vector<double> rstd_ref(const std::vector<double>& x, int64_t dim, double eps) {
  std::vector<double> r(dim == 0 ? 0 : x.size() / size_t(dim));
  for (size_t i = 0; i < r.size(); ++i) {
    double ss = 0.0;
    for (int64_t d = 0; d < dim; ++d) ss += x[i * size_t(dim) + size_t(d)] * x[i * size_t(dim) + size_t(d)];
    r[i] = 1.0 / std::sqrt(ss / double(dim) + eps);
  }
  return r;
}

std::vector<double> rmsnorm_ref(const std::vector<double>& x, const std::vector<double>& w, double eps) {
  const int64_t dim = int64_t(w.size());
  const std::vector<double> r = rstd_ref(x, dim, eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r[i / size_t(dim)] * w[i % size_t(dim)];
  return y;
}

struct GradsRef {
  std::vector<double> dx, dw;
};

// dx = r w dy - x r^3 / D sum(dy w x); dw = sum_rows dy x r, with the given per-row r.
GradsRef rmsnorm_backward_ref(const std::vector<double>& dy, const std::vector<double>& x, const std::vector<double>& w,
                              const std::vector<double>& r) {
  const size_t dim = w.size();
  GradsRef g{std::vector<double>(x.size()), std::vector<double>(dim, 0.0)};
  for (size_t row = 0; row < r.size(); ++row) {
    const size_t o = row * dim;
    double dot = 0.0;
    for (size_t d = 0; d < dim; ++d) dot += dy[o + d] * w[d] * x[o + d];
    for (size_t d = 0; d < dim; ++d) {
      g.dx[o + d] = r[row] * w[d] * dy[o + d] - x[o + d] * r[row] * r[row] * r[row] / double(dim) * dot;
      g.dw[d] += dy[o + d] * x[o + d] * r[row];
    }
  }
  return g;
}

// A weight near 1 (like a trained norm): 1 + 0.3 * N(0, 1).
Tensor random_weight(int64_t dim, uint64_t seed, DType dtype) {
  Generator gen(seed);
  return Tensor::randn({dim}, gen, dtype, Device::cpu(), 1.0, 0.3);
}

// ---- forward ----------------------------------------------------------------------------------

TEST(RmsNorm, ForwardMatchesDoubleReferenceOnRaggedShapes) {
  // rstd: sum of squares in double, 1/sqrt in double, one fp32 rounding: rtol 2^-24, so 2e-7.
  // y (fp32) = x * rstd * w in float: the rounded rstd and two products, 3 roundings: rtol 4e-7
  // would do; 1e-6 leaves a margin and still fails on any real formula error.
  // bf16 y: plus one bf16 rounding (2^-8). bf16 weight: exact input, nothing added.
  int layout = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (DType wtype : {DType::f32, DType::bf16}) {
      const double out_u = dtype == DType::f32 ? kU32 : kU16;
      for (int64_t rows : kRaggedSizes) {
        for (int64_t dim : kRaggedSizes) {
          const Tensor x = random_view(rows, dim, uint64_t(rows * 7 + dim), dtype, layout++ % 3);
          const Tensor w = random_weight(dim, uint64_t(dim), wtype);
          const kernels::RmsNormOutput out = kernels::rmsnorm(x, w, kEps);
          const std::vector<double> xd = x.to_doubles();
          ASSERT_EQ(out.y.shape(), x.shape());
          ASSERT_EQ(out.y.dtype(), dtype);
          ASSERT_EQ(out.rstd.shape(), (Shape{rows}));
          ASSERT_EQ(out.rstd.dtype(), DType::f32);
          const std::string where = std::string(dtype_name(dtype)) + "/" + std::string(dtype_name(wtype)) + " " +
                                    std::to_string(rows) + "x" + std::to_string(dim);
          EXPECT_TRUE(all_close(out.rstd, rstd_ref(xd, dim, kEps), 2e-7, 0)) << where;
          EXPECT_TRUE(all_close(out.y, rmsnorm_ref(xd, w.to_doubles(), kEps), 1e-6 + out_u, 0)) << where;
        }
      }
    }
  }
}

TEST(RmsNorm, LeadingDimsAreRowsAndEpsMatters) {
  // x [2, 3, 8]: 6 rows. A tiny-norm row shows eps: mean(x^2) = 1e-8, so rstd = 1/sqrt(1e-8 + eps).
  std::vector<double> v(48);
  for (size_t i = 0; i < v.size(); ++i) v[i] = i < 8 ? 1e-4 : std::sin(double(i));
  const Tensor x = Tensor::from_values(v, {2, 3, 8});
  const Tensor w = Tensor::ones({8});
  for (double eps : {1e-6, 1e-2}) {
    const kernels::RmsNormOutput out = kernels::rmsnorm(x, w, eps);
    EXPECT_EQ(out.rstd.shape(), (Shape{6}));
    EXPECT_TRUE(all_close(out.rstd, rstd_ref(x.to_doubles(), 8, eps), 2e-7, 0)) << eps;
    EXPECT_TRUE(all_close(out.y, rmsnorm_ref(x.to_doubles(), w.to_doubles(), eps), 1e-6, 0)) << eps;
  }
}

// ---- backward ---------------------------------------------------------------------------------

TEST(RmsNorm, BackwardMatchesAnalyticGradientAndFiniteDifferences) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 7}, {7, 65}, {65, 7}, {3, 129}};
  for (auto [rows, dim] : shapes) {
    const std::string where = std::to_string(rows) + "x" + std::to_string(dim);
    const Tensor x = random_view(rows, dim, uint64_t(rows * dim), DType::f32, /*layout=*/1);
    const Tensor w = random_weight(dim, 3, DType::f32);
    const Tensor dy = random_view(rows, dim, 77, DType::f32, /*layout=*/2);
    const std::vector<double> xd = x.to_doubles(), wd = w.to_doubles(), dyd = dy.to_doubles();
    const kernels::RmsNormOutput out = kernels::rmsnorm(x, w, kEps);
    const kernels::RmsNormGrads g = kernels::rmsnorm_backward(dy, x, w, out.rstd);
    ASSERT_EQ(g.dx.shape(), x.shape());
    ASSERT_EQ(g.dweight.shape(), (Shape{dim}));
    ASSERT_EQ(g.dweight.dtype(), DType::f32);

    // 1. The formulas: analytic gradient with the exact rstd against central differences of
    //    L = sum(dy * rmsnorm(x, w)) over x and over w (FD error ~1e-9, see test_softmax).
    const GradsRef exact = rmsnorm_backward_ref(dyd, xd, wd, rstd_ref(xd, dim, kEps));
    const std::vector<double> fd_x = finite_differences(
        [&](const std::vector<double>& xs) { return weighted_sum(dyd, rmsnorm_ref(xs, wd, kEps)); }, xd);
    const std::vector<double> fd_w = finite_differences(
        [&](const std::vector<double>& ws) { return weighted_sum(dyd, rmsnorm_ref(xd, ws, kEps)); }, wd);
    EXPECT_TRUE(all_close(Tensor::from_values(exact.dx, x.shape(), DType::f32), fd_x, 1e-5, 1e-7)) << where;
    EXPECT_TRUE(all_close(Tensor::from_values(exact.dw, w.shape(), DType::f32), fd_w, 1e-5, 1e-7)) << where;

    // 2. The kernel against the formula in double with its own stored rstd: dot, combination and
    //    dweight sums are in double, one fp32 rounding each: rtol 2 * 2^-24; atol 1e-12 for
    //    elements where the two dx terms cancel (their double error is ~1e-16 of the terms).
    const GradsRef same = rmsnorm_backward_ref(dyd, xd, wd, out.rstd.to_doubles());
    EXPECT_TRUE(all_close(g.dx, same.dx, 2 * kU32, 1e-12)) << where;
    EXPECT_TRUE(all_close(g.dweight, same.dw, 2 * kU32, 1e-12)) << where;

    // 3. The kernel against finite differences: its rstd is rounded to fp32 (2^-24 relative),
    //    entering dx up to cubed: 3 * 2^-24 relative of each term, terms of size |w dy| r < ~10
    //    that may cancel: rtol 1e-6 and atol 2e-6. dweight sums up to 65 products of size < ~10,
    //    each 2^-24 relative off: atol 1e-5. (Observed: <= 4e-7 and 8e-7.)
    EXPECT_TRUE(all_close(g.dx, fd_x, 1e-6, 2e-6)) << where;
    EXPECT_TRUE(all_close(g.dweight, fd_w, 1e-6, 1e-5)) << where;
  }
}

TEST(RmsNorm, BackwardBf16MatchesAnalyticGradient) {
  // bf16 x, dy and weight are exact inputs; dx is combined in double and rounded once to bf16
  // (via float: 2^-8 + 2^-24); dweight stays fp32 (2 * 2^-24 as above).
  for (int64_t rows : kRaggedSizes) {
    const int64_t dim = 65;
    const Tensor x = random_view(rows, dim, uint64_t(rows), DType::bf16, /*layout=*/1);
    const Tensor w = random_weight(dim, 4, DType::bf16);
    const Tensor dy = random_tensor({rows, dim}, 8, DType::bf16);
    const kernels::RmsNormOutput out = kernels::rmsnorm(x, w, kEps);
    const kernels::RmsNormGrads g = kernels::rmsnorm_backward(dy, x, w, out.rstd);
    ASSERT_EQ(g.dx.dtype(), DType::bf16);
    const GradsRef same = rmsnorm_backward_ref(dy.to_doubles(), x.to_doubles(), w.to_doubles(), out.rstd.to_doubles());
    EXPECT_TRUE(all_close(g.dx, same.dx, kU16 + kU32, 1e-12)) << rows;
    EXPECT_TRUE(all_close(g.dweight, same.dw, 2 * kU32, 1e-12)) << rows;
  }
}

TEST(RmsNorm, DweightIsBitwiseIdenticalForAnyThreadCount) {
  // 993 x 129 is above the parallel threshold. Rows 0 and 992 are equal with dy = +-1e20, so their
  // dweight terms cancel exactly but only after absorbing whatever was added to them first: the
  // fp32 result depends on the summation order (a sum over per-thread partials would change with
  // the thread count). Fixed row blocks must give the same bits for every thread count.
  std::vector<double> xv = random_tensor({993, 129}, 1).to_doubles();
  std::vector<double> dyv = random_tensor({993, 129}, 2).to_doubles();
  for (size_t d = 0; d < 129; ++d) {
    xv[992 * 129 + d] = xv[d];
    dyv[d] = 1e20;
    dyv[992 * 129 + d] = -1e20;
  }
  const Tensor x = Tensor::from_values(xv, {993, 129}), dy = Tensor::from_values(dyv, {993, 129});
  const Tensor w = random_weight(129, 3, DType::f32);
  const Tensor rstd = kernels::rmsnorm(x, w, kEps).rstd;
  const int saved = omp_get_max_threads();
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3, 8}) {
    omp_set_num_threads(threads);
    results.push_back(kernels::rmsnorm_backward(dy, x, w, rstd).dweight.to_vector<float>());
  }
  omp_set_num_threads(saved);
  for (size_t i = 1; i < results.size(); ++i)
    EXPECT_EQ(std::memcmp(results[0].data(), results[i].data(), results[0].size() * sizeof(float)), 0) << i;
}

// ---- errors -----------------------------------------------------------------------------------

TEST(RmsNorm, ErrorsNameTheOpAndBothShapes) {
  const Tensor x = Tensor::zeros({3, 4});
  const Tensor rstd = Tensor::ones({3});
  EXPECT_TRUE(mentions(error_of([&] { kernels::rmsnorm(x, Tensor::ones({5}), kEps); }), {"rmsnorm", "[5]", "[3, 4]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::rmsnorm(x, Tensor::ones({4, 1}), kEps); }), {"rmsnorm", "[4, 1]"}));
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::rmsnorm(Tensor::zeros({3, 4}, DType::i32), Tensor::ones({4}), kEps);
                       }),
                       {"rmsnorm", "int32"}));
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::rmsnorm_backward(Tensor::zeros({4, 3}), x, Tensor::ones({4}), rstd);
                       }),
                       {"rmsnorm_backward", "[4, 3]", "[3, 4]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::rmsnorm_backward(x.to(DType::bf16), x, Tensor::ones({4}), rstd); }),
                       {"rmsnorm_backward", "bf16[3, 4]", "fp32[3, 4]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::rmsnorm_backward(x, x, Tensor::ones({4}), Tensor::ones({4})); }),
                       {"rmsnorm_backward", "rstd", "[4]", "[3, 4]"}));
}

}  // namespace
}  // namespace daedalus
