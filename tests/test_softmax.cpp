// Softmax and log-softmax kernels against a double-precision reference; backward against the
// analytic gradient and against central finite differences of the reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "autograd/kernels/softmax.h"
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

// bf16 keeps 8 significant bits, so one round-to-nearest is off by at most 2^-8 relative (half an
// ulp of 2^-7 at the bottom of a binade; 1 + 2^-8 rounds to 1).

// ---- references (double, from the exact input values) ----------------------------------------

std::vector<double> softmax_ref(const std::vector<double>& x, int64_t cols, bool log) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r * size_t(cols) < x.size(); ++r) {
    const double* xr = x.data() + r * size_t(cols);
    double m = -INFINITY, sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) m = std::max(m, xr[c]);
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(xr[c] - m);
    for (int64_t c = 0; c < cols; ++c)
      y[r * size_t(cols) + size_t(c)] = log ? xr[c] - m - std::log(sum) : std::exp(xr[c] - m) / sum;
  }
  return y;
}

// dx = y * (dy - sum(dy * y)) (softmax) or dy - exp(y) * sum(dy) (log-softmax), per row.
std::vector<double> softmax_backward_ref(const std::vector<double>& y, const std::vector<double>& dy, int64_t cols,
                                         bool log) {
  std::vector<double> dx(y.size());
  for (size_t r = 0; r * size_t(cols) < y.size(); ++r) {
    const size_t o = r * size_t(cols);
    double s = 0.0;
    for (int64_t c = 0; c < cols; ++c) s += log ? dy[o + size_t(c)] : dy[o + size_t(c)] * y[o + size_t(c)];
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = o + size_t(c);
      dx[i] = log ? dy[i] - std::exp(y[i]) * s : y[i] * (dy[i] - s);
    }
  }
  return dx;
}

// ---- forward ----------------------------------------------------------------------------------

TEST(Softmax, ForwardMatchesDoubleReferenceOnRaggedShapes) {
  // Inputs with std 3 (peaky rows, |x - max| up to ~30). fp32: x - max costs one rounding,
  // relative error <= 30 * 2^-24 in exp's argument, plus one ulp of expf and the final rounding
  // (the row sum is in double): < 2.5e-6 relative, so rtol 1e-5.
  // log_softmax: lse inherits the exps' error as an absolute error (<= ~2e-6), then x - lse is
  // rounded once: atol 4e-6 plus one rounding of the output.
  // bf16: the inputs are exact for the reference, the output adds one bf16 rounding (2^-8).
  for (DType dtype : {DType::f32, DType::bf16}) {
    const double out_u = dtype == DType::f32 ? kU32 : kU16;
    int layout = 0;
    for (int64_t rows : kRaggedSizes) {
      for (int64_t cols : kRaggedSizes) {
        const Tensor x = random_view(rows, cols, uint64_t(rows * 1000 + cols), dtype, layout++ % 3, 3.0);
        const std::vector<double> xd = x.to_doubles();
        const Tensor y = kernels::softmax(x);
        const Tensor ly = kernels::log_softmax(x);
        ASSERT_EQ(y.shape(), x.shape());
        ASSERT_EQ(y.dtype(), dtype);
        ASSERT_TRUE(y.is_contiguous());
        EXPECT_TRUE(all_close(y, softmax_ref(xd, cols, false), 1e-5 + out_u, 0))
            << dtype_name(dtype) << " " << rows << "x" << cols;
        EXPECT_TRUE(all_close(ly, softmax_ref(xd, cols, true), 2 * out_u, 4e-6))
            << dtype_name(dtype) << " " << rows << "x" << cols;
      }
    }
  }
}

TEST(Softmax, ThreeDimensionalPermutedInputReducesOverLastDim) {
  // [2, 65, 7] viewed from a [7, 2, 65] buffer: the softmax runs over the logical last dim.
  const Tensor x = random_tensor({7, 2, 65}, 11).permute({1, 2, 0});
  ASSERT_FALSE(x.is_contiguous());
  EXPECT_TRUE(all_close(kernels::softmax(x), softmax_ref(x.to_doubles(), 7, false), 1e-5, 0));
}

TEST(Softmax, LargeValuesStayFinite) {
  // Without the max shift exp(1000) overflows and the row turns into inf/inf = NaN.
  const std::vector<double> v = {1000, 999, 998, -1000, 1000, 1000, 1000, 1000, 1e4, -1e4, 0, 5e3};
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = Tensor::from_values(v, {3, 4}, dtype);
    const std::vector<double> xd = x.to_doubles();  // bf16 holds all these values exactly
    const double u = dtype == DType::f32 ? kU32 : kU16;
    // Tolerances as in the ragged test; atol 1e-30 lets exp(-2000) be 0 in float.
    EXPECT_TRUE(all_close(kernels::softmax(x), softmax_ref(xd, 4, false), 1e-5 + u, 1e-30)) << dtype_name(dtype);
    EXPECT_TRUE(all_close(kernels::log_softmax(x), softmax_ref(xd, 4, true), 2 * u, 4e-6)) << dtype_name(dtype);
    for (double y : kernels::softmax(x).to_doubles()) EXPECT_TRUE(std::isfinite(y));
    for (double y : kernels::log_softmax(x).to_doubles()) EXPECT_TRUE(std::isfinite(y));
  }
}

// ---- backward ---------------------------------------------------------------------------------

TEST(Softmax, BackwardMatchesAnalyticGradientAndFiniteDifferences) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 7}, {7, 65}, {3, 129}};
  for (bool log : {false, true}) {
    for (auto [rows, cols] : shapes) {
      const std::string where =
          std::string(log ? "log_softmax " : "softmax ") + std::to_string(rows) + "x" + std::to_string(cols);
      const Tensor x = random_tensor({rows, cols}, uint64_t(rows + cols), DType::f32, 2.0);
      const Tensor w = random_view(rows, cols, 99, DType::f32, /*layout=*/1);  // dy, a transposed view
      const std::vector<double> xd = x.to_doubles(), wd = w.to_doubles();
      const Tensor y = log ? kernels::log_softmax(x) : kernels::softmax(x);
      const Tensor dx = log ? kernels::log_softmax_backward(y, w) : kernels::softmax_backward(y, w);

      // 1. The formula itself: analytic gradient at the exact reference y against central
      //    differences of L = sum(w * f(x)). FD error: truncation h^2 f''' ~ 1e-12 plus
      //    cancellation 1e-16 * |L| / h ~ 1e-9 (|L| < 100): atol 1e-7.
      // (cols = cols: clang 14 cannot capture a structured binding)
      const std::vector<double> fd = finite_differences(
          [&, cols = cols](const std::vector<double>& xs) { return weighted_sum(wd, softmax_ref(xs, cols, log)); }, xd);
      const std::vector<double> analytic = softmax_backward_ref(softmax_ref(xd, cols, log), wd, cols, log);
      EXPECT_TRUE(all_close(Tensor::from_values(analytic, {rows, cols}, DType::f32), fd, 1e-5, 1e-7)) << where;

      // 2. The kernel against the same formula evaluated in double on its own inputs (the stored
      //    y and dy): the row sum and the combination are in double, one fp32 rounding on store.
      EXPECT_TRUE(all_close(dx, softmax_backward_ref(y.to_doubles(), wd, cols, log), 2 * kU32, 1e-12)) << where;

      // 3. The kernel against finite differences: its y carries the forward error, a few ulps
      //    (softmax: relative; log_softmax: absolute in y, so relative in exp(y)), multiplied by
      //    |dy| + |sum(dy y)| < ~8 (softmax) or |sum(dy)| < ~3 sqrt(C) (log_softmax): rtol 1e-5
      //    and atol 1e-5 (observed: <= 3.3e-7 absolute).
      EXPECT_TRUE(all_close(dx, fd, 1e-5, 1e-5)) << where;
    }
  }
}

TEST(Softmax, BackwardBf16MatchesAnalyticGradient) {
  // bf16 y and dy are exact inputs for the reference; the kernel reduces in double and rounds
  // once to bf16 (via float: 2^-8 + 2^-24 relative).
  for (bool log : {false, true}) {
    for (int64_t cols : kRaggedSizes) {
      const Tensor x = random_tensor({65, cols}, uint64_t(cols), DType::bf16, 2.0);
      const Tensor y = log ? kernels::log_softmax(x) : kernels::softmax(x);
      const Tensor dy = random_view(65, cols, 5, DType::bf16, /*layout=*/2);
      const Tensor dx = log ? kernels::log_softmax_backward(y, dy) : kernels::softmax_backward(y, dy);
      ASSERT_EQ(dx.dtype(), DType::bf16);
      EXPECT_TRUE(all_close(dx, softmax_backward_ref(y.to_doubles(), dy.to_doubles(), cols, log), kU16 + kU32, 1e-30))
          << (log ? "log_softmax " : "softmax ") << cols;
    }
  }
}

// ---- errors -----------------------------------------------------------------------------------

TEST(Softmax, ErrorsNameTheOpAndBothShapes) {
  const Tensor y = Tensor::zeros({3, 4}), dy = Tensor::zeros({4, 3});
  EXPECT_TRUE(mentions(error_of([&] { kernels::softmax_backward(y, dy); }), {"softmax_backward", "[3, 4]", "[4, 3]"}));
  EXPECT_TRUE(
      mentions(error_of([&] { kernels::log_softmax_backward(y, dy); }), {"log_softmax_backward", "[3, 4]", "[4, 3]"}));
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::softmax_backward(y, Tensor::zeros({3, 4}, DType::bf16));
                       }),
                       {"softmax_backward", "fp32[3, 4]", "bf16[3, 4]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::softmax(Tensor::zeros({2, 2}, DType::i64)); }), {"softmax", "int64"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::log_softmax(Tensor::full({}, 1.0)); }), {"log_softmax", "[]"}));
}

}  // namespace
}  // namespace daedalus
