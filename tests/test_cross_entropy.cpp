// Fused cross-entropy kernels against a double reference and central finite differences;
// ignore_index, an all-ignored batch, out-of-range targets and shape errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "autograd/kernels/cross_entropy.h"
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

constexpr int64_t kIgnore = -100;

// ---- reference --------------------------------------------------------------------------------

struct CeRef {
  std::vector<double> lse;
  double loss = 0.0;
  int64_t valid = 0;
};

CeRef cross_entropy_ref(const std::vector<double>& x, const std::vector<int64_t>& targets, int64_t vocab) {
  CeRef ref;
  double total = 0.0;
  for (size_t r = 0; r < targets.size(); ++r) {
    const double* xr = x.data() + r * size_t(vocab);
    double m = -INFINITY, sum = 0.0;
    for (int64_t v = 0; v < vocab; ++v) m = std::max(m, xr[v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(xr[v] - m);
    ref.lse.push_back(m + std::log(sum));
    if (targets[r] == kIgnore) continue;
    total += ref.lse.back() - xr[targets[r]];
    ++ref.valid;
  }
  ref.loss = ref.valid > 0 ? total / double(ref.valid) : 0.0;
  return ref;
}

// dloss / valid * (softmax - onehot), zero rows for ignored targets.
std::vector<double> cross_entropy_backward_ref(const std::vector<double>& x, const std::vector<int64_t>& targets,
                                               int64_t vocab, double dloss) {
  const CeRef ref = cross_entropy_ref(x, targets, vocab);
  std::vector<double> dx(x.size(), 0.0);
  if (ref.valid == 0) return dx;
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] == kIgnore) continue;
    for (int64_t v = 0; v < vocab; ++v) {
      const size_t i = r * size_t(vocab) + size_t(v);
      dx[i] = dloss / double(ref.valid) * (std::exp(x[i] - ref.lse[r]) - (v == targets[r] ? 1.0 : 0.0));
    }
  }
  return dx;
}

// Deterministic targets in [0, vocab), every 5th row (from row 2) ignored.
std::vector<int64_t> make_targets(int64_t rows, int64_t vocab) {
  std::vector<int64_t> t(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) t[size_t(r)] = r % 5 == 2 ? kIgnore : (r * 7919 + 13) % vocab;
  return t;
}

Tensor targets_tensor(const std::vector<int64_t>& t, DType dtype) {
  if (dtype == DType::i64) return Tensor::from_vector(t, {int64_t(t.size())});
  return Tensor::from_vector(std::vector<int32_t>(t.begin(), t.end()), {int64_t(t.size())});
}

// ---- forward ----------------------------------------------------------------------------------

TEST(CrossEntropy, ForwardMatchesDoubleReferenceOnRaggedShapes) {
  // Logits N(0, 2^2): |x - max| <= ~16. Each expf argument x - max is rounded once (16 * 2^-24
  // relative in exp), plus an ulp of expf; the row sum, log and loss are in double, so lse and
  // each row's loss are off by <= ~17 * 2^-24 = 1e-6 absolute, then rounded to fp32 once.
  // atol 2e-6 + rtol 2^-23. bf16 logits are exact inputs and the outputs are fp32: same bounds.
  int layout = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (DType target_type : {DType::i32, DType::i64}) {
      for (int64_t rows : kRaggedSizes) {
        for (int64_t vocab : kRaggedSizes) {
          const Tensor logits = random_view(rows, vocab, uint64_t(rows * 31 + vocab), dtype, layout++ % 3, 2.0);
          const std::vector<int64_t> t = make_targets(rows, vocab);
          const kernels::CrossEntropyOutput out = kernels::cross_entropy(logits, targets_tensor(t, target_type));
          const CeRef ref = cross_entropy_ref(logits.to_doubles(), t, vocab);
          const std::string where =
              std::string(dtype_name(dtype)) + " " + std::to_string(rows) + "x" + std::to_string(vocab);
          ASSERT_EQ(out.loss.shape(), Shape{}) << where;
          ASSERT_EQ(out.loss.dtype(), DType::f32);
          ASSERT_EQ(out.lse.shape(), (Shape{rows}));
          ASSERT_EQ(out.lse.dtype(), DType::f32);
          EXPECT_EQ(out.valid, ref.valid) << where;
          EXPECT_TRUE(all_close(out.lse, ref.lse, 2 * kU32, 2e-6)) << where;
          EXPECT_TRUE(all_close(out.loss, {ref.loss}, 2 * kU32, 2e-6)) << where;
        }
      }
    }
  }
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  // Logits around 1e4 (bf16-exact): without the max shift every exp overflows. Tolerance as above
  // with |x - max| <= 2000: 2000 * 2^-24 relative in exp's argument only matters for terms that
  // are exp(-1000) = 0 anyway; the dominant terms have small arguments.
  const Tensor logits = Tensor::from_values({1e4, 1e4 - 1, -1e4, 0, 5000, 5001, 5002, 5003}, {2, 4});
  const std::vector<int64_t> t = {1, 0};
  const kernels::CrossEntropyOutput out = kernels::cross_entropy(logits, targets_tensor(t, DType::i64));
  const CeRef ref = cross_entropy_ref(logits.to_doubles(), t, 4);
  EXPECT_TRUE(std::isfinite(out.loss.item()));
  EXPECT_TRUE(all_close(out.loss, {ref.loss}, 2 * kU32, 2e-6));
  EXPECT_TRUE(all_close(out.lse, ref.lse, 2 * kU32, 2e-6));
}

// ---- backward ---------------------------------------------------------------------------------

TEST(CrossEntropy, BackwardMatchesAnalyticGradientAndFiniteDifferences) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 7}, {7, 65}, {65, 7}, {3, 129}};
  const double dloss = 0.75;
  for (auto [rows, vocab] : shapes) {
    const std::string where = std::to_string(rows) + "x" + std::to_string(vocab);
    const Tensor logits = random_view(rows, vocab, uint64_t(rows * vocab), DType::f32, /*layout=*/1, 2.0);
    const std::vector<int64_t> t = make_targets(rows, vocab);
    const Tensor targets = targets_tensor(t, DType::i32);
    const std::vector<double> xd = logits.to_doubles();
    const kernels::CrossEntropyOutput out = kernels::cross_entropy(logits, targets);
    const Tensor dx = kernels::cross_entropy_backward(logits, targets, out.lse, dloss, kIgnore, out.valid);
    ASSERT_EQ(dx.shape(), logits.shape());
    ASSERT_EQ(dx.dtype(), DType::f32);

    // The formula against central differences of L = dloss * loss(x) (FD error ~1e-10 here).
    // (vocab = vocab: clang 14 cannot capture a structured binding)
    const std::vector<double> fd = finite_differences(
        [&, vocab = vocab](const std::vector<double>& xs) { return dloss * cross_entropy_ref(xs, t, vocab).loss; }, xd);
    const std::vector<double> analytic = cross_entropy_backward_ref(xd, t, vocab, dloss);
    EXPECT_TRUE(all_close(Tensor::from_values(analytic, logits.shape()), fd, 1e-5, 1e-8)) << where;

    // The kernel recomputes p = exp(x - lse) in float from the fp32 lse: lse (|lse| <= ~12) is off
    // by 2^-24 |lse| plus the forward's 1e-6, x - lse rounds once (|x - lse| <= ~25): p is off by
    // <= ~3e-6 relative. At the target, p - 1 is taken in double, leaving that error absolute:
    // rtol 4e-6, atol 4e-6 * dloss / valid.
    const double scale = dloss / double(out.valid);
    EXPECT_TRUE(all_close(dx, analytic, 4e-6, 4e-6 * scale)) << where;
    EXPECT_TRUE(all_close(dx, fd, 4e-6, 4e-6 * scale + 1e-8)) << where;

    // Ignored rows are exactly zero.
    const std::vector<double> got = dx.to_doubles();
    for (int64_t r = 0; r < rows; ++r) {
      if (t[size_t(r)] != kIgnore) continue;
      for (int64_t v = 0; v < vocab; ++v) ASSERT_EQ(got[size_t(r * vocab + v)], 0.0) << where << " row " << r;
    }
  }
}

TEST(CrossEntropy, BackwardBf16MatchesAnalyticGradient) {
  // As the fp32 case plus one bf16 rounding of the output (2^-8 relative).
  for (int64_t vocab : kRaggedSizes) {
    const int64_t rows = 65;
    const Tensor logits = random_view(rows, vocab, uint64_t(vocab), DType::bf16, /*layout=*/2, 2.0);
    const std::vector<int64_t> t = make_targets(rows, vocab);
    const Tensor targets = targets_tensor(t, DType::i64);
    const kernels::CrossEntropyOutput out = kernels::cross_entropy(logits, targets);
    const Tensor dx = kernels::cross_entropy_backward(logits, targets, out.lse, 1.0, kIgnore, out.valid);
    ASSERT_EQ(dx.dtype(), DType::bf16);
    const double scale = 1.0 / double(out.valid);
    EXPECT_TRUE(
        all_close(dx, cross_entropy_backward_ref(logits.to_doubles(), t, vocab, 1.0), 4e-6 + kU16, 4e-6 * scale))
        << vocab;
  }
}

TEST(CrossEntropy, GlobalValidCountScalesTheGradient) {
  // A caller averaging over micro-batches passes the global count: twice the divisor, half the
  // gradient (exactly: a power-of-two scale).
  const Tensor logits = random_tensor({7, 65}, 3);
  const Tensor targets = targets_tensor(make_targets(7, 65), DType::i64);
  const kernels::CrossEntropyOutput out = kernels::cross_entropy(logits, targets);
  const Tensor local = kernels::cross_entropy_backward(logits, targets, out.lse, 1.0, kIgnore, out.valid);
  const Tensor global = kernels::cross_entropy_backward(logits, targets, out.lse, 1.0, kIgnore, 2 * out.valid);
  std::vector<double> half = local.to_doubles();
  for (double& v : half) v *= 0.5;
  EXPECT_TRUE(all_close(global, half, 0, 0));
}

TEST(CrossEntropy, AllIgnoredBatchHasZeroLossAndZeroGradients) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor logits = random_tensor({4, 9}, 5, dtype);
    const Tensor targets = Tensor::full({4}, -100, DType::i32);
    const kernels::CrossEntropyOutput out = kernels::cross_entropy(logits, targets);
    EXPECT_EQ(out.valid, 0);
    EXPECT_EQ(out.loss.item(), 0.0);  // not NaN (0 / 0)
    const Tensor dx = kernels::cross_entropy_backward(logits, targets, out.lse, 1.0, kIgnore, out.valid);
    EXPECT_TRUE(all_close(dx, std::vector<double>(36, 0.0), 0, 0));
    EXPECT_TRUE(
        all_close(out.lse, cross_entropy_ref(logits.to_doubles(), {-100, -100, -100, -100}, 9).lse, 2 * kU32, 2e-6));
  }
}

TEST(CrossEntropy, CustomIgnoreIndex) {
  // ignore_index = -1: a -1 target is skipped; -100 is now an out-of-range target.
  const Tensor logits = random_tensor({3, 5}, 6);
  const std::vector<double> xd = logits.to_doubles();
  const kernels::CrossEntropyOutput out =
      kernels::cross_entropy(logits, Tensor::from_vector<int64_t>({2, -1, 4}, {3}), /*ignore_index=*/-1);
  EXPECT_EQ(out.valid, 2);
  const double expect = 0.5 * ((cross_entropy_ref(xd, {2, -100, 4}, 5).lse[0] - xd[2]) +
                               (cross_entropy_ref(xd, {2, -100, 4}, 5).lse[2] - xd[14]));
  EXPECT_TRUE(all_close(out.loss, {expect}, 2 * kU32, 2e-6));
  EXPECT_THROW(kernels::cross_entropy(logits, Tensor::from_vector<int64_t>({2, -100, 4}, {3}), -1), InputError);
}

// ---- errors -----------------------------------------------------------------------------------

TEST(CrossEntropy, OutOfRangeTargetNamesRowValueAndVocab) {
  const Tensor logits = Tensor::zeros({3, 10});
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::cross_entropy(logits, Tensor::from_vector<int64_t>({0, 5, 10}, {3}));
                       }),
                       {"cross_entropy", "target 10", "row 2", "V = 10"}));
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::cross_entropy(logits, Tensor::from_vector<int32_t>({-1, 5, 9}, {3}));
                       }),
                       {"cross_entropy", "target -1", "row 0", "V = 10"}));
  const Tensor lse = Tensor::zeros({3});
  EXPECT_TRUE(mentions(
      error_of([&] {
        kernels::cross_entropy_backward(logits, Tensor::from_vector<int64_t>({0, 12, 1}, {3}), lse, 1.0, kIgnore, 3);
      }),
      {"cross_entropy_backward", "target 12", "row 1", "V = 10"}));
}

TEST(CrossEntropy, ErrorsNameTheOpAndBothShapes) {
  const Tensor logits = Tensor::zeros({4, 10});
  const Tensor targets = Tensor::from_vector<int64_t>({0, 1, 2, 3}, {4});
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::cross_entropy(logits, Tensor::from_vector<int64_t>({0, 1, 2, 3, 4}, {5}));
                       }),
                       {"cross_entropy", "[5]", "[4, 10]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::cross_entropy(logits, Tensor::zeros({4})); }),
                       {"cross_entropy", "targets", "fp32[4]"}));
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::cross_entropy(Tensor::zeros({2, 2, 10}), targets);
                       }),
                       {"cross_entropy", "[2, 2, 10]"}));
  EXPECT_TRUE(mentions(error_of([&] { kernels::cross_entropy(logits.to(DType::i32), targets); }),
                       {"cross_entropy", "int32[4, 10]"}));
  EXPECT_TRUE(
      mentions(error_of([&] { kernels::cross_entropy_backward(logits, targets, Tensor::zeros({5}), 1.0, kIgnore, 4); }),
               {"cross_entropy_backward", "lse", "[5]", "[4, 10]"}));
  EXPECT_TRUE(mentions(
      error_of([&] { kernels::cross_entropy_backward(logits, targets, Tensor::zeros({4}), 1.0, kIgnore, -1); }),
      {"cross_entropy_backward", "valid"}));
}

}  // namespace
}  // namespace daedalus
