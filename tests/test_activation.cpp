// SiLU / sigmoid backward and SwiGLU kernels against double references and central finite
// differences.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <string_view>

#include "autograd/kernels/activation.h"
#include "autograd/kernels/elementwise.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::kU16;
using testing::kU32;

using testing::error_of;
using testing::finite_differences;
using testing::mentions;
using testing::random_view;

using testing::all_close;
using testing::kRaggedSizes;
using testing::random_tensor;

// ---- references -------------------------------------------------------------------------------

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu(double x) { return x * sigmoid(x); }
double dsilu(double x) { return sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))); }

template <typename F>
std::vector<double> map(const std::vector<double>& a, const std::vector<double>& b, F f) {
  std::vector<double> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = f(a[i], b[i]);
  return out;
}

// Tolerances. Inputs are N(0, 3^2) (sigmoid's tails and silu's minimum near -1.28 both show up).
// fp32 forward: expf (1 ulp), 1 + e, the division and two products, about 5 roundings with no
// cancellation: rtol 1e-6 (~17 ulps; observed <= 3 ulps). Backward: 1 - s is computed without
// cancellation, but 1 + x (1 - s) cancels near x = -1.28, where the float error is a few ulps of
// the terms (~1) times |dy s| <= 5: atol 1e-6 on top of rtol 1e-6.
// bf16: the inputs are exact for the reference, the output adds one rounding of 2^-8.
double rtol_for(DType dtype) { return dtype == DType::f32 ? 1e-6 : 1e-6 + kU16; }

// ---- forward ----------------------------------------------------------------------------------

TEST(Activation, SwigluMatchesDoubleReferenceOnRaggedShapes) {
  int layout = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t rows : kRaggedSizes) {
      for (int64_t cols : kRaggedSizes) {
        const Tensor gate = random_view(rows, cols, uint64_t(rows * 3 + cols), dtype, layout++ % 3, 3.0);
        const Tensor up = random_view(rows, cols, uint64_t(rows + cols * 5), dtype, layout % 3);
        const Tensor h = kernels::swiglu(gate, up);
        ASSERT_EQ(h.shape(), gate.shape());
        ASSERT_EQ(h.dtype(), dtype);
        ASSERT_TRUE(h.is_contiguous());
        EXPECT_TRUE(all_close(h,
                              map(gate.to_doubles(), up.to_doubles(), [](double g, double u) { return silu(g) * u; }),
                              rtol_for(dtype), 0))
            << dtype_name(dtype) << " " << rows << "x" << cols;
      }
    }
  }
}

// ---- backward ---------------------------------------------------------------------------------

TEST(Activation, SiluAndSigmoidBackwardMatchDoubleReferenceOnRaggedShapes) {
  int layout = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t rows : kRaggedSizes) {
      for (int64_t cols : {1, 65, 993}) {
        const Tensor x = random_view(rows, cols, uint64_t(rows * 11 + cols), dtype, layout++ % 3, 3.0);
        const Tensor dy = random_view(rows, cols, uint64_t(rows + 3), dtype, layout % 3);
        const Tensor y = kernels::unary(kernels::UnaryOp::sigmoid, x);
        const std::vector<double> xd = x.to_doubles(), dyd = dy.to_doubles(), yd = y.to_doubles();
        const std::string where =
            std::string(dtype_name(dtype)) + " " + std::to_string(rows) + "x" + std::to_string(cols);
        EXPECT_TRUE(all_close(kernels::silu_backward(x, dy),
                              map(xd, dyd, [](double v, double g) { return g * dsilu(v); }), rtol_for(dtype), 1e-6))
            << where;
        // From the stored y: 1 - y is exact for y >= 0.5 (Sterbenz) and rounds once otherwise.
        EXPECT_TRUE(all_close(kernels::sigmoid_backward(y, dy),
                              map(yd, dyd, [](double s, double g) { return g * s * (1.0 - s); }), rtol_for(dtype), 0))
            << where;
      }
    }
  }
}

TEST(Activation, SwigluBackwardMatchesDoubleReferenceOnRaggedShapes) {
  int layout = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t rows : kRaggedSizes) {
      for (int64_t cols : {1, 7, 129}) {
        const Tensor gate = random_view(rows, cols, uint64_t(rows * 13 + cols), dtype, layout++ % 3, 3.0);
        const Tensor up = random_view(rows, cols, uint64_t(rows + 1), dtype, (layout + 1) % 3);
        const Tensor dy = random_view(rows, cols, uint64_t(cols + 2), dtype, (layout + 2) % 3);
        const std::vector<double> gd = gate.to_doubles(), ud = up.to_doubles(), dyd = dy.to_doubles();
        const kernels::SwigluGrads g = kernels::swiglu_backward(gate, up, dy);
        ASSERT_EQ(g.dgate.dtype(), dtype);
        ASSERT_EQ(g.dup.shape(), gate.shape());
        std::vector<double> dgate(gd.size()), dup(gd.size());
        for (size_t i = 0; i < gd.size(); ++i) {
          dgate[i] = dyd[i] * ud[i] * dsilu(gd[i]);
          dup[i] = dyd[i] * silu(gd[i]);
        }
        const std::string where =
            std::string(dtype_name(dtype)) + " " + std::to_string(rows) + "x" + std::to_string(cols);
        // dgate carries an extra factor |up| <= 5 on the cancellation error: atol 5e-6.
        EXPECT_TRUE(all_close(g.dgate, dgate, rtol_for(dtype), 5e-6)) << where;
        EXPECT_TRUE(all_close(g.dup, dup, rtol_for(dtype), 0)) << where;
      }
    }
  }
}

TEST(Activation, BackwardsMatchFiniteDifferences) {
  // L = sum(w * f(x)) in double, central differences with h = 1e-6 (error ~1e-9 for |L| < 100).
  // The kernels are fp32 and compared with the tolerances above plus the FD error.
  const Tensor x = random_tensor({7, 65}, 41, DType::f32, 3.0);
  const Tensor up = random_tensor({7, 65}, 42);
  const Tensor w = random_tensor({7, 65}, 43);
  const std::vector<double> xd = x.to_doubles(), ud = up.to_doubles(), wd = w.to_doubles();
  auto loss = [&](auto f) {
    return [&wd, f](const std::vector<double>& v) {
      double s = 0.0;
      for (size_t i = 0; i < v.size(); ++i) s += wd[i] * f(v[i], i);
      return s;
    };
  };
  const std::vector<double> fd_silu = finite_differences(loss([](double v, size_t) { return silu(v); }), xd);
  const std::vector<double> fd_sigmoid = finite_differences(loss([](double v, size_t) { return sigmoid(v); }), xd);
  const std::vector<double> fd_gate =
      finite_differences(loss([&ud](double v, size_t i) { return silu(v) * ud[i]; }), xd);
  const std::vector<double> fd_up = finite_differences(loss([&xd](double v, size_t i) { return silu(xd[i]) * v; }), ud);

  // The formulas in double against FD.
  EXPECT_TRUE(all_close(Tensor::from_values(map(xd, wd, [](double v, double g) { return g * dsilu(v); }), {7, 65}),
                        fd_silu, 1e-5, 1e-7));
  // The kernels against FD. sigmoid_backward gets the kernel's y (a few ulps off): rtol 1e-6.
  EXPECT_TRUE(all_close(kernels::silu_backward(x, w), fd_silu, 1e-6, 1e-6));
  EXPECT_TRUE(
      all_close(kernels::sigmoid_backward(kernels::unary(kernels::UnaryOp::sigmoid, x), w), fd_sigmoid, 1e-6, 1e-7));
  const kernels::SwigluGrads g = kernels::swiglu_backward(x, up, w);
  EXPECT_TRUE(all_close(g.dgate, fd_gate, 1e-6, 5e-6));
  EXPECT_TRUE(all_close(g.dup, fd_up, 1e-6, 1e-7));
}

TEST(Activation, LargeInputsSaturateWithoutNaN) {
  // exp(-x) overflows to inf in float for x < -88: sigma -> 0, silu -> -0, gradients -> 0; for
  // large positive x, sigma -> 1 and d silu -> 1.
  const Tensor x = Tensor::from_values({-1e4, -100, -88.5, 88.5, 100, 1e4}, {6});
  const Tensor dy = Tensor::ones({6});
  const std::vector<double> dx = kernels::silu_backward(x, dy).to_doubles();
  const std::vector<double> h = kernels::swiglu(x, dy).to_doubles();
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_TRUE(std::isfinite(dx[i])) << i;
    EXPECT_TRUE(std::isfinite(h[i])) << i;
  }
  EXPECT_TRUE(all_close(kernels::silu_backward(x, dy), {0, 0, 0, 1, 1, 1}, 0, 1e-30));
  EXPECT_TRUE(all_close(kernels::swiglu(x, dy), {0, 0, 0, 88.5, 100, 1e4}, 0, 1e-30));
}

// ---- errors -----------------------------------------------------------------------------------

TEST(Activation, ErrorsNameTheOpAndBothShapes) {
  const Tensor a = Tensor::zeros({3, 4}), b = Tensor::zeros({4, 3});
  EXPECT_TRUE(mentions(error_of([&] { kernels::swiglu(a, b); }), {"swiglu", "[3, 4]", "[4, 3]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::silu_backward(a, b); }), {"silu_backward", "[3, 4]", "[4, 3]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::sigmoid_backward(a, b); }), {"sigmoid_backward", "[3, 4]", "[4, 3]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::swiglu_backward(a, a, b); }), {"swiglu_backward", "[3, 4]", "[4, 3]"}));
  EXPECT_TRUE(
      mentions(error_of([&] { kernels::swiglu(a, a.to(DType::bf16)); }), {"swiglu", "fp32[3, 4]", "bf16[3, 4]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::silu_backward(a.to(DType::i64), a.to(DType::i64)); }),
                       {"silu_backward", "int64"}));
}

}  // namespace
}  // namespace daedalus
