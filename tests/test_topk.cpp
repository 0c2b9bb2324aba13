// Top-k along the last dim against a stable full sort of the exact input values: ragged row lengths,
// ties (lower index first), all-equal rows, k = N, NaN, vocab-sized rows, strided input, fp32/bf16.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>

#include "autograd/kernels/topk.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::expect_error;

using testing::all_close;
using testing::kRaggedSizes;

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// The documented order: NaN above everything, then larger values, equal values by lower index.
// A stable sort by "a before b" on the values alone gives the index rule for free.
bool ranks_before(double a, double b) {
  if (std::isnan(a)) return !std::isnan(b);
  if (std::isnan(b)) return false;
  return a > b;
}

struct Expected {
  std::vector<double> values, indices;
};

Expected reference(const std::vector<double>& x, int64_t n, int64_t k) {
  Expected e;
  for (size_t r = 0; r < x.size() / size_t(n); ++r) {
    std::vector<int64_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    const double* row = x.data() + r * size_t(n);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return ranks_before(row[a], row[b]); });
    for (int64_t c = 0; c < k; ++c) {
      e.values.push_back(row[idx[size_t(c)]]);
      e.indices.push_back(double(idx[size_t(c)]));
    }
  }
  return e;
}

// Rows of `shape` with many ties: normal values rounded to quarters (fp32 and bf16 hold them exactly).
Tensor tied_values(const Shape& shape, uint64_t seed) {
  std::vector<double> v = testing::random_tensor(shape, seed).to_doubles();
  for (double& x : v) x = std::round(x * 4) / 4;
  return Tensor::from_values(v, shape);
}

void check(const Tensor& x, int64_t k, const std::string& what) {
  const int64_t n = x.size(-1);
  const kernels::TopK got = kernels::topk(x, k);
  Shape shape = x.shape();
  shape.back() = k;
  ASSERT_EQ(got.values.shape(), shape) << what;
  ASSERT_EQ(got.indices.shape(), shape) << what;
  ASSERT_EQ(got.values.dtype(), x.dtype()) << what;
  ASSERT_EQ(got.indices.dtype(), DType::i64) << what;
  const Expected e = reference(x.to_doubles(), n, k);
  // Selection copies values: exact. Indices must match the tie rule exactly.
  EXPECT_TRUE(all_close(got.values, e.values, 0, 0)) << what;
  EXPECT_TRUE(all_close(got.indices, e.indices, 0, 0)) << what;
}

TEST(TopK, RaggedRowsEveryKAndLayoutMatchStableSort) {
  uint64_t seed = 1;
  for (int64_t n : kRaggedSizes) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (int64_t k : {int64_t(1), std::min<int64_t>(8, n), n / 2 + 1, n}) {
        const Tensor random = testing::random_tensor({3, kRaggedSizes[1], n}, seed++, dtype);
        check(random, k, fmt::format("random {} k {}", random.describe(), k));
        const Tensor tied = tied_values({kRaggedSizes[2], n}, seed++).to(dtype);
        check(tied, k, fmt::format("tied {} k {}", tied.describe(), k));
        // Strided: the transpose of a contiguous [n, 7], and every other element of a [7, 2n].
        const Tensor transposed = tied_values({n, kRaggedSizes[1]}, seed++).to(dtype).t();
        check(transposed, k, fmt::format("transposed {} k {}", transposed.describe(), k));
        const Tensor sliced = testing::random_tensor({kRaggedSizes[1], 2 * n}, seed++, dtype).slice(1, 0, 2 * n, 2);
        check(sliced, k, fmt::format("sliced {} k {}", sliced.describe(), k));
      }
    }
  }
}

TEST(TopK, TiesGoToTheLowerIndex) {
  const Tensor x = Tensor::from_values({1, 3, 3, 2, 2, -1, 2, 2}, {2, 4});
  const kernels::TopK t2 = kernels::topk(x, 2);
  EXPECT_TRUE(all_close(t2.values, {3, 3, 2, 2}, 0, 0));
  EXPECT_TRUE(all_close(t2.indices, {1, 2, 0, 2}, 0, 0));
  const kernels::TopK t3 = kernels::topk(x, 3);
  EXPECT_TRUE(all_close(t3.indices, {1, 2, 3, 0, 2, 3}, 0, 0));
  // -0.0 and +0.0 tie (index order) and keep their own bits.
  const Tensor zeros = Tensor::from_values({-0.0, 0.0, -1.0}, {3});
  const kernels::TopK z = kernels::topk(zeros, 2);
  EXPECT_TRUE(all_close(z.indices, {0, 1}, 0, 0));
  const std::vector<float> zv = z.values.to_vector<float>();
  EXPECT_TRUE(std::signbit(zv[0]));
  EXPECT_FALSE(std::signbit(zv[1]));
}

TEST(TopK, AllEqualRowsGiveTheFirstKIndices) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t n : kRaggedSizes) {
      const Tensor x = Tensor::full({4, n}, 0.5, dtype);
      for (int64_t k : {int64_t(1), (n + 1) / 2, n}) {
        const kernels::TopK t = kernels::topk(x, k);
        std::vector<double> idx;
        for (int r = 0; r < 4; ++r)
          for (int64_t c = 0; c < k; ++c) idx.push_back(double(c));
        EXPECT_TRUE(all_close(t.indices, idx, 0, 0)) << "n " << n << " k " << k;
        EXPECT_TRUE(all_close(t.values, std::vector<double>(idx.size(), 0.5), 0, 0));
      }
    }
  }
}

TEST(TopK, KEqualsNIsADescendingStableSort) {
  const size_t n = size_t(kRaggedSizes[3]);
  const Tensor x = tied_values({5, int64_t(n)}, 77);
  const kernels::TopK t = kernels::topk(x, int64_t(n));
  const std::vector<double> v = t.values.to_doubles(), idx = t.indices.to_doubles();
  for (size_t r = 0; r < 5; ++r) {
    std::vector<double> seen(idx.begin() + long(r * n), idx.begin() + long((r + 1) * n));
    std::sort(seen.begin(), seen.end());
    for (size_t j = 0; j < seen.size(); ++j) ASSERT_EQ(seen[j], double(j)) << "row " << r << " is not a permutation";
    for (size_t j = r * n + 1; j < (r + 1) * n; ++j) {
      ASSERT_GE(v[j - 1], v[j]);
      if (v[j - 1] == v[j]) {
        ASSERT_LT(idx[j - 1], idx[j]);
      }
    }
  }
}

TEST(TopK, NaNRanksAboveInfinity) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = Tensor::from_values({1, kNaN, INFINITY, -kNaN, 3, -INFINITY}, {6}, dtype);
    const kernels::TopK t = kernels::topk(x, 4);
    EXPECT_TRUE(all_close(t.values, {kNaN, kNaN, INFINITY, 3}, 0, 0));
    EXPECT_TRUE(all_close(t.indices, {1, 3, 2, 4}, 0, 0));
    const kernels::TopK all = kernels::topk(x, 6);
    EXPECT_TRUE(all_close(all.indices, {1, 3, 2, 4, 0, 5}, 0, 0));
  }
}

TEST(TopK, VocabSizedRows) {
  // Top-k sampling over DeepSeek-V3's vocabulary (129280), bf16 logits: many exact ties.
  const int64_t vocab = 129280;
  const Tensor logits = testing::random_tensor({3, vocab}, 5, DType::bf16, 3.0);
  for (int64_t k : {int64_t(1), int64_t(50), int64_t(1000)}) check(logits, k, fmt::format("vocab k {}", k));
}

TEST(TopK, SameBitsWithOneTwoAndThreeThreads) {
  const Tensor x = tied_values({kRaggedSizes[4], 256}, 3).to(DType::bf16);  // 993 rows of 256 experts
  const int saved = omp_get_max_threads();
  std::vector<std::vector<int64_t>> idx;
  std::vector<std::vector<double>> val;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    const kernels::TopK t = kernels::topk(x, 8);
    idx.push_back(t.indices.to_vector<int64_t>());
    val.push_back(t.values.to_doubles());
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(idx[0], idx[1]);
  EXPECT_EQ(idx[0], idx[2]);
  EXPECT_EQ(val[0], val[1]);
  EXPECT_EQ(val[0], val[2]);
}

TEST(TopK, BadKAndInputsAreErrors) {
  const Tensor x = Tensor::zeros({2, 5});
  expect_error([&] { kernels::topk(x, 0); }, {"topk", "k = 0", "[1, 5]", "[2, 5]"});
  expect_error([&] { kernels::topk(x, 6); }, {"topk", "k = 6", "[1, 5]", "[2, 5]"});
  expect_error([&] { kernels::topk(x, -1); }, {"topk", "k = -1"});
  expect_error([&] { kernels::topk(Tensor::zeros({3, 0}), 1); }, {"topk", "k = 1", "[1, 0]", "[3, 0]"});
  expect_error([&] { kernels::topk(Tensor::full({}, 1.0), 1); }, {"topk", "1-d", "[]"});
  expect_error([&] { kernels::topk(Tensor::zeros({5}, DType::i64), 1); }, {"topk", "int64"});
}

}  // namespace
}  // namespace daedalus
