// Reductions (sum, mean, max, amax, *_all, sum_to_shape) against double-precision references on
// ragged shapes, every dim, keepdim on and off, contiguous and strided inputs, fp32 and bf16.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "autograd/kernels/reduce.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::bytes;
using testing::expect_error;

using testing::all_close;
using testing::kRaggedSizes;

// Relative error of one round-to-nearest into the output dtype: 2^-p for a p-bit significand, fp32
// p = 24, bf16 p = 8. (testing::unit_roundoff says 2^-9 for bf16, half the true bound: the value
// 1 + 2^-8 rounds to 1, an error of 2^-8 relative.)
double rounding_rtol(DType dtype) { return dtype == DType::bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -24); }

enum class Layout { contiguous, transposed, sliced };
const Layout kLayouts[] = {Layout::contiguous, Layout::transposed, Layout::sliced};

// A tensor of `shape` whose memory layout is `layout`: contiguous; every dim reversed (a permuted
// view of a contiguous tensor of the reversed shape); or every other element of the last dim.
Tensor make_input(const Shape& shape, DType dtype, Layout layout, uint64_t seed) {
  switch (layout) {
    case Layout::contiguous: return testing::random_tensor(shape, seed, dtype);
    case Layout::transposed: {
      Shape reversed(shape.rbegin(), shape.rend());
      std::vector<int> order;
      for (int d = int(shape.size()) - 1; d >= 0; --d) order.push_back(d);
      return testing::random_tensor(reversed, seed, dtype).permute(order);
    }
    case Layout::sliced: {
      Shape wide = shape;
      wide.back() = 2 * shape.back() + 1;
      return testing::random_tensor(wide, seed, dtype).slice(-1, 1, wide.back(), 2);
    }
  }
  return {};
}

// Ill-conditioned rows for determinism tests: normal values, plus +2^60 at row position 3 and -2^60
// at n / 2 + 17. In double, a giant absorbs whatever is added to it, so the fp32 result keeps only
// the values summed after the two cancel, and which ones those are depends on the association order
// (where the block boundaries fall). A thread-count-dependent order would change the bits.
Tensor cancelling_rows(const Shape& shape, uint64_t seed, DType dtype) {
  std::vector<double> v = testing::random_tensor(shape, seed).to_doubles();
  const size_t n = size_t(shape.back());
  for (size_t r = 0; r < v.size() / n; ++r) {
    v[r * n + 3] = std::ldexp(1.0, 60);
    v[r * n + n / 2 + 17] = -std::ldexp(1.0, 60);
  }
  return Tensor::from_values(v, shape, dtype);
}

enum class Kind { sum, mean, max, amax };

Tensor run(Kind kind, const Tensor& x, int dim, bool keepdim) {
  switch (kind) {
    case Kind::sum: return kernels::sum(x, dim, keepdim);
    case Kind::mean: return kernels::mean(x, dim, keepdim);
    case Kind::max: return kernels::max(x, dim, keepdim);
    case Kind::amax: return kernels::amax(x, dim, keepdim);
  }
  return {};
}

struct Reference {
  std::vector<double> values;
  double atol = 0;  // bound on the double-accumulation error (ours and the reference's)
};

// Plain double loops over the exact input values; output in row-major order of the kept dims.
Reference reference(Kind kind, const std::vector<double>& x, const Shape& shape, int d) {
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < d; ++i) outer *= shape[size_t(i)];
  for (size_t i = size_t(d) + 1; i < shape.size(); ++i) inner *= shape[i];
  const int64_t n = shape[size_t(d)];
  Reference ref;
  ref.values.resize(size_t(outer * inner));
  double max_abs_sum = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      double s = 0, abs_sum = 0, mx = -INFINITY, amx = 0;
      for (int64_t k = 0; k < n; ++k) {
        const double v = x[size_t((o * n + k) * inner + i)];
        s += v;
        abs_sum += std::fabs(v);
        mx = std::max(mx, v);
        amx = std::max(amx, std::fabs(v));
      }
      max_abs_sum = std::max(max_abs_sum, abs_sum);
      double& out = ref.values[size_t(o * inner + i)];
      switch (kind) {
        case Kind::sum: out = s; break;
        case Kind::mean: out = s / double(n); break;
        case Kind::max: out = mx; break;
        case Kind::amax: out = amx; break;
      }
    }
  }
  // Two double sums of n terms (kernel and reference), each off by at most n 2^-53 sum|x|; max and
  // amax are exact.
  if (kind == Kind::sum) ref.atol = 2 * double(n) * std::ldexp(max_abs_sum, -53);
  if (kind == Kind::mean) ref.atol = 2 * std::ldexp(max_abs_sum, -53) + std::ldexp(max_abs_sum / double(n), -52);
  return ref;
}

const char* kind_name(Kind k) {
  constexpr const char* names[] = {"sum", "mean", "max", "amax"};
  return names[int(k)];
}

TEST(Reduce, EveryDimKeepdimLayoutAndDtypeMatchesDoubleReference) {
  const std::vector<Shape> shapes = {{kRaggedSizes[4]},
                                     {kRaggedSizes[2], kRaggedSizes[3]},
                                     {kRaggedSizes[1], kRaggedSizes[2], kRaggedSizes[3]},
                                     {kRaggedSizes[0], kRaggedSizes[4], kRaggedSizes[1]},
                                     {kRaggedSizes[3], kRaggedSizes[1], kRaggedSizes[0], kRaggedSizes[2]},
                                     {3, 8193, 2}};  // several 4096-element blocks along the reduced dim
  uint64_t seed = 1;
  for (const Shape& shape : shapes) {
    const int nd = int(shape.size());
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (Layout layout : kLayouts) {
        const Tensor x = make_input(shape, dtype, layout, seed++);
        ASSERT_EQ(x.shape(), shape);
        const std::vector<double> xs = x.to_doubles();
        for (int d = 0; d < nd; ++d) {
          for (Kind kind : {Kind::sum, Kind::mean, Kind::max, Kind::amax}) {
            const Reference ref = reference(kind, xs, shape, d);
            // Each dim both ways: positive without keepdim, negative with it.
            for (const bool keepdim : {false, true}) {
              const int dim = keepdim ? d - nd : d;
              const Tensor y = run(kind, x, dim, keepdim);
              Shape expect_shape = shape;
              if (keepdim) {
                expect_shape[size_t(d)] = 1;
              } else {
                expect_shape.erase(expect_shape.begin() + d);
              }
              ASSERT_EQ(y.shape(), expect_shape) << kind_name(kind) << " dim " << dim;
              ASSERT_EQ(y.dtype(), dtype);
              // sum/mean: accumulated in double, rounded once into the output dtype; max/amax: exact.
              const bool exact = kind == Kind::max || kind == Kind::amax;
              EXPECT_TRUE(all_close(y, ref.values, exact ? 0.0 : rounding_rtol(dtype), ref.atol))
                  << kind_name(kind) << " of " << x.describe() << " strides " << shape_str(x.strides()) << " dim "
                  << dim << " keepdim " << keepdim;
            }
          }
        }
      }
    }
  }
}

TEST(Reduce, ResultBitsDoNotDependOnInputLayout) {
  // The reduced elements are visited in logical order whatever the strides, so a transposed view
  // and its contiguous copy give identical bits (not just close ones).
  const Tensor x = make_input({kRaggedSizes[3], 40, kRaggedSizes[2]}, DType::f32, Layout::transposed, 7);
  const Tensor c = x.contiguous();
  for (int d = 0; d < 3; ++d) {
    EXPECT_EQ(bytes(kernels::sum(x, d)), bytes(kernels::sum(c, d))) << "dim " << d;
    EXPECT_EQ(bytes(kernels::mean(x, d)), bytes(kernels::mean(c, d))) << "dim " << d;
  }
  EXPECT_EQ(bytes(kernels::sum_to_shape(x, {1, 40, 1})), bytes(kernels::sum_to_shape(c, {1, 40, 1})));
  // Permutations that the kernel reduces in memory order without a copy: a 2-d transpose, and a
  // swap of the two leading dims with 5000 > 4096 elements (two blocks) along the reduced one.
  const Tensor t = make_input({kRaggedSizes[4], kRaggedSizes[3]}, DType::bf16, Layout::transposed, 8);
  const Tensor swapped = testing::random_tensor({kRaggedSizes[2], 5000, kRaggedSizes[1]}, 9).permute({1, 0, 2});
  for (const Tensor& v : {t, swapped}) {
    ASSERT_FALSE(v.is_contiguous());
    const Tensor vc = v.contiguous();
    for (int d = 0; d < v.dim(); ++d) {
      EXPECT_EQ(bytes(kernels::sum(v, d)), bytes(kernels::sum(vc, d))) << v.describe() << " dim " << d;
      EXPECT_EQ(bytes(kernels::amax(v, d)), bytes(kernels::amax(vc, d))) << v.describe() << " dim " << d;
    }
  }
}

TEST(Reduce, SameBitsWithOneTwoAndThreeThreads) {
  // Large enough to run in parallel (> 32768 elements), with several 4096-element blocks per output.
  const Tensor x = cancelling_rows({kRaggedSizes[4], kRaggedSizes[3]}, 11, DType::f32);
  const Tensor tall = cancelling_rows({3, 40000}, 12, DType::bf16);
  const int saved = omp_get_max_threads();
  std::vector<std::vector<std::vector<uint8_t>>> runs;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    runs.push_back({bytes(kernels::sum(x, 0)), bytes(kernels::sum(x, 1)), bytes(kernels::mean(x, 0)),
                    bytes(kernels::amax(x, 1)), bytes(kernels::sum_all(x)), bytes(kernels::sum(tall, 1)),
                    bytes(kernels::sum(tall.t(), 0)), bytes(kernels::sum_all(tall)), bytes(kernels::amax_all(tall)),
                    bytes(kernels::sum_to_shape(x, {1, kRaggedSizes[3]}))});
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(runs[0], runs[2]);
}

TEST(Reduce, SumAllAndAmaxAllAreFp32Scalars) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (Layout layout : kLayouts) {
      // 993 x 65 = 64545 elements: sixteen 4096-element blocks.
      const Tensor x = make_input({kRaggedSizes[4], kRaggedSizes[2]}, dtype, layout, 21);
      const std::vector<double> xs = x.to_doubles();
      double s = 0, abs_sum = 0, amx = 0;
      for (double v : xs) {
        s += v;
        abs_sum += std::fabs(v);
        amx = std::max(amx, std::fabs(v));
      }
      const Tensor total = kernels::sum_all(x), peak = kernels::amax_all(x);
      EXPECT_EQ(total.shape(), Shape{});
      EXPECT_EQ(total.dtype(), DType::f32);
      EXPECT_EQ(peak.shape(), Shape{});
      EXPECT_EQ(peak.dtype(), DType::f32);
      // One rounding to fp32 plus two double accumulations of n terms (see reference()).
      const double atol = 2 * double(xs.size()) * std::ldexp(abs_sum, -53);
      EXPECT_TRUE(all_close(total, {s}, rounding_rtol(DType::f32), atol)) << x.describe();
      EXPECT_TRUE(all_close(peak, {amx}, 0, 0)) << x.describe();  // exact: bf16 and fp32 values fit fp32
    }
  }
  EXPECT_EQ(kernels::sum_all(Tensor::zeros({0, 3})).item(), 0.0);
  EXPECT_EQ(kernels::amax_all(Tensor::zeros({0})).item(), 0.0);
  EXPECT_EQ(kernels::sum_all(Tensor::full({}, -2.5)).item(), -2.5);
}

TEST(Reduce, Bf16SumIsRoundedOnceFromDouble) {
  // 1 + 2^-8 + 2^-30 lies just above the midpoint between the bf16 neighbours 1 and 1 + 2^-7, so it
  // rounds up. Rounding through fp32 first would lose the 2^-30, land on the midpoint and round to 1.
  const Tensor x = Tensor::from_values({1.0, std::ldexp(1.0, -8), std::ldexp(1.0, -30)}, {3}, DType::bf16);
  EXPECT_EQ(kernels::sum(x, 0).item(), 1.0 + std::ldexp(1.0, -7));
  const Tensor below = Tensor::from_values({1.0, std::ldexp(1.0, -8), -std::ldexp(1.0, -30)}, {3}, DType::bf16);
  EXPECT_EQ(kernels::sum(below, 0).item(), 1.0);
  EXPECT_EQ(round_from_double<bf16>(1.0 + std::ldexp(1.0, -8)).bits, from_float<bf16>(1.0f).bits);  // tie: even
  EXPECT_EQ(round_from_double<bf16>(-(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40))).bits,
            from_float<bf16>(-1.0078125f).bits);
}

TEST(Reduce, SumToShapeReducesLeadingAndSizeOneDims) {
  const Shape from = {kRaggedSizes[1], kRaggedSizes[2], kRaggedSizes[3]};  // [7, 65, 129]
  const std::vector<Shape> targets = {{65, 129},   {1, 129},   {65, 1},    {129},     {1},       {},
                                      {7, 1, 129}, {7, 65, 1}, {1, 65, 1}, {7, 1, 1}, {1, 1, 1}, {7, 65, 129}};
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (Layout layout : kLayouts) {
      const Tensor x = make_input(from, dtype, layout, 31);
      const std::vector<double> xs = x.to_doubles();
      for (const Shape& target : targets) {
        const size_t lead = from.size() - target.size();
        const Shape kept = [&] {  // target, left-padded with 1s to x's rank
          Shape s(lead, 1);
          s.insert(s.end(), target.begin(), target.end());
          return s;
        }();
        std::vector<double> expect(size_t(shape_numel(target)), 0.0), abs_sum(expect.size(), 0.0);
        int64_t terms = 1;
        for (size_t d = 0; d < from.size(); ++d)
          if (kept[d] == 1) terms *= from[d];
        for (int64_t a = 0; a < from[0]; ++a)
          for (int64_t b = 0; b < from[1]; ++b)
            for (int64_t c = 0; c < from[2]; ++c) {
              const int64_t o = testing::flat(kept, {kept[0] == 1 ? 0 : a, kept[1] == 1 ? 0 : b, kept[2] == 1 ? 0 : c});
              const double v = xs[size_t(testing::flat(from, {a, b, c}))];
              expect[size_t(o)] += v;
              abs_sum[size_t(o)] += std::fabs(v);
            }
        const double max_abs_sum = *std::max_element(abs_sum.begin(), abs_sum.end());
        const Tensor y = kernels::sum_to_shape(x, target);
        ASSERT_EQ(y.shape(), target);
        ASSERT_EQ(y.dtype(), dtype);
        // All reduced dims are summed together in double and rounded once (identity when nothing is
        // reduced: then y is a rounding of exact values, i.e. exact).
        EXPECT_TRUE(all_close(y, expect, rounding_rtol(dtype), 2 * double(terms) * std::ldexp(max_abs_sum, -53)))
            << x.describe() << " -> " << shape_str(target);
      }
    }
  }
}

TEST(Reduce, MaxAndAmaxPropagateNaN) {
  std::vector<double> v = {1, -5, 2, 3, 0.5, -0.25};
  v[4] = std::numeric_limits<double>::quiet_NaN();  // row 1 of [2, 3]
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = Tensor::from_values(v, {2, 3}, dtype);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    EXPECT_TRUE(all_close(kernels::max(x, 1), {2, nan}, 0, 0));
    EXPECT_TRUE(all_close(kernels::amax(x, 1), {5, nan}, 0, 0));
    EXPECT_TRUE(all_close(kernels::max(x, 0), {3, nan, 2}, 0, 0));
    EXPECT_TRUE(all_close(kernels::amax(x, 0), {3, nan, 2}, 0, 0));
    EXPECT_TRUE(std::isnan(kernels::amax_all(x).item()));
    EXPECT_TRUE(all_close(kernels::sum(x, 1), {-2, nan}, 0, 0));
    // NaN first in the row must not be replaced by a later number either.
    const Tensor first = Tensor::from_values({nan, 1, 2}, {3}, dtype);
    EXPECT_TRUE(std::isnan(kernels::max(first, 0).item()));
    EXPECT_TRUE(std::isnan(kernels::amax(first, 0).item()));
  }
  // -inf is an ordinary value.
  EXPECT_EQ(kernels::max(Tensor::from_values({-INFINITY, -INFINITY}, {2}), 0).item(), -INFINITY);
  EXPECT_EQ(kernels::amax(Tensor::from_values({-INFINITY, 1}, {2}), 0).item(), INFINITY);
}

TEST(Reduce, ErrorsNameTheOpAndShapes) {
  const Tensor x = Tensor::zeros({2, 3});
  expect_error([&] { kernels::sum(x, 2); }, {"sum", "dimension 2", "[2, 3]"});
  expect_error([&] { kernels::mean(x, -3); }, {"mean", "dimension -3", "[2, 3]"});
  expect_error([&] { kernels::max(Tensor::zeros({2, 0}), 1); }, {"max", "[2, 0]", "empty"});
  expect_error([&] { kernels::amax(Tensor::zeros({2}, DType::f8e4m3), 0); }, {"amax", "fp8e4m3"});
  expect_error([&] { kernels::sum_to_shape(x, {4}); }, {"sum_to_shape", "[4]", "[2, 3]"});
  expect_error([&] { kernels::sum_to_shape(x, {1, 2, 3}); }, {"sum_to_shape", "[1, 2, 3]", "[2, 3]"});
  expect_error([&] { kernels::sum_to_shape(x, {3, 1}); }, {"sum_to_shape", "[3, 1]", "[2, 3]"});
  expect_error([&] { kernels::sum(Tensor(), 0); }, {"sum", "undefined"});
}

TEST(Reduce, EmptyReductions) {
  // Sum over an empty dim is 0, amax 0 (the identity of max |x|), mean 0/0 = NaN.
  const Tensor x = Tensor::zeros({3, 0});
  EXPECT_TRUE(all_close(kernels::sum(x, 1), {0, 0, 0}, 0, 0));
  EXPECT_TRUE(all_close(kernels::amax(x, 1), {0, 0, 0}, 0, 0));
  EXPECT_TRUE(std::isnan(kernels::mean(x, 1).to_doubles()[0]));
  EXPECT_EQ(kernels::sum(x, 0).shape(), Shape{0});
}

}  // namespace
}  // namespace daedalus
