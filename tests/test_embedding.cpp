// Embedding lookup and its backward (scatter-add with repeated ids) against double references, for
// fp32/bf16 tables, int32/int64 ids, contiguous and strided operands.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "autograd/kernels/embedding.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::bytes;
using testing::cancelling_sources;
using testing::cyclic_index;
using testing::expect_error;

using testing::all_close;
using testing::kRaggedSizes;

// Ids drawn from [0, range) (seeded; small ranges force repeats), as a tensor of `dtype`. strided: every
// other element of a twice-as-long last dim.
Tensor make_ids(const Shape& shape, int64_t range, DType dtype, uint64_t seed, bool strided) {
  Generator gen(seed);
  Shape full = shape;
  if (strided && !full.empty()) full.back() *= 2;
  std::vector<double> v(size_t(shape_numel(full)));
  for (double& x : v) x = double(gen.next_u64() % uint64_t(range));
  const Tensor t = Tensor::from_values(v, full, dtype);
  return strided && !full.empty() ? t.slice(-1, 0, full.back(), 2) : t;
}

// A [v, d] table: contiguous, or the transpose of a contiguous [d, v].
Tensor make_table(int64_t v, int64_t d, DType dtype, bool transposed, uint64_t seed) {
  return transposed ? testing::random_tensor({d, v}, seed, dtype).t() : testing::random_tensor({v, d}, seed, dtype);
}

TEST(Embedding, ForwardCopiesTheRowsExactly) {
  const int64_t vocab = 65;
  uint64_t seed = 1;
  for (int64_t d : kRaggedSizes) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (DType id_dtype : {DType::i32, DType::i64}) {
        for (const bool strided : {false, true}) {
          const Tensor w = make_table(vocab, d, dtype, /*transposed=*/strided, seed++);
          const Tensor ids = make_ids({3, 7}, vocab, id_dtype, seed++, strided);
          const Tensor y = kernels::embedding(w, ids);
          ASSERT_EQ(y.shape(), (Shape{3, 7, d}));
          ASSERT_EQ(y.dtype(), dtype);
          const std::vector<double> ws = w.to_doubles(), is = ids.to_doubles();
          std::vector<double> expect;
          for (double id : is)
            for (int64_t j = 0; j < d; ++j) expect.push_back(ws[size_t(int64_t(id) * d + j)]);
          EXPECT_TRUE(all_close(y, expect, 0, 0)) << w.describe() << " ids " << ids.describe();  // a copy: exact
        }
      }
    }
  }
  // A scalar id gives one row.
  const Tensor w = make_table(7, 5, DType::f32, false, 99);
  const Tensor row = kernels::embedding(w, Tensor::from_values({3}, {}, DType::i64));
  EXPECT_EQ(row.shape(), Shape{5});
  EXPECT_TRUE(all_close(row, w.select(0, 3).to_doubles(), 0, 0));
}

TEST(Embedding, BackwardWithRepeatedIdsMatchesDoubleReference) {
  uint64_t seed = 100;
  for (int64_t d : kRaggedSizes) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (DType id_dtype : {DType::i32, DType::i64}) {
        for (const bool strided : {false, true}) {
          // 993 positions drawn from 7 ids: every id repeats ~140 times; vocab 12 leaves rows 7..11 unused.
          const int64_t vocab = 12, used = 7;
          const Tensor ids = make_ids({3, 331}, used, id_dtype, seed++, strided);
          const Tensor dy = strided ? testing::random_tensor({d, 3, 331}, seed++, dtype).permute({1, 2, 0})
                                    : testing::random_tensor({3, 331, d}, seed++, dtype);
          const Tensor dw = kernels::embedding_backward(dy, ids, vocab);
          ASSERT_EQ(dw.shape(), (Shape{vocab, d}));
          ASSERT_EQ(dw.dtype(), DType::f32);
          const std::vector<double> is = ids.to_doubles(), ys = dy.to_doubles();
          std::vector<double> expect(size_t(vocab * d), 0.0), abs_sum(expect.size(), 0.0);
          std::vector<int64_t> count(size_t(vocab), 0);
          for (size_t p = 0; p < is.size(); ++p) {
            const int64_t id = int64_t(is[p]);
            ++count[size_t(id)];
            for (int64_t j = 0; j < d; ++j) {
              expect[size_t(id * d + j)] += ys[p * size_t(d) + size_t(j)];
              abs_sum[size_t(id * d + j)] += std::fabs(ys[p * size_t(d) + size_t(j)]);
            }
          }
          const double max_abs = *std::max_element(abs_sum.begin(), abs_sum.end());
          const int64_t max_count = *std::max_element(count.begin(), count.end());
          // Accumulated in double, rounded once to fp32 (rtol 2^-24); atol covers the two double
          // sums of max_count terms (kernel and reference), each within max_count 2^-53 sum|dy|.
          EXPECT_TRUE(all_close(dw, expect, std::ldexp(1.0, -24), 2 * double(max_count) * std::ldexp(max_abs, -53)))
              << dy.describe() << " ids " << ids.describe();
          for (int64_t v = used; v < vocab; ++v)  // never-seen ids: exactly zero
            EXPECT_TRUE(all_close(dw.select(0, v), std::vector<double>(size_t(d), 0.0), 0, 0)) << v;
        }
      }
    }
  }
}

TEST(Embedding, BackwardSameBitsWithOneTwoAndThreeThreads) {
  // 4096 positions over 5 ids into D = 129: parallel (> 32768 elements), heavy repetition.
  const Tensor ids = cyclic_index(4096, 5, DType::i64);
  const Tensor dy = cancelling_sources(4096, kRaggedSizes[3], 5, 8, DType::bf16);
  const Tensor w = testing::random_tensor({5, 1000}, 9, DType::f32);
  const int saved = omp_get_max_threads();
  std::vector<std::vector<uint8_t>> back, fwd;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    back.push_back(bytes(kernels::embedding_backward(dy, ids, 5)));
    fwd.push_back(bytes(kernels::embedding(w, ids)));
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(back[0], back[1]);
  EXPECT_EQ(back[0], back[2]);
  EXPECT_EQ(fwd[0], fwd[1]);
  EXPECT_EQ(fwd[0], fwd[2]);
}

TEST(Embedding, OutOfRangeIdsNameThePositionIdAndVocab) {
  const Tensor w = Tensor::zeros({7, 4});
  for (DType id_dtype : {DType::i32, DType::i64}) {
    const Tensor too_big = Tensor::from_values({0, 1, 2, 3, 4, 7}, {2, 3}, id_dtype);
    expect_error([&] { kernels::embedding(w, too_big); }, {"embedding", "ids[1, 2] = 7", "[0, 7)", "[7, 4]"});
    const Tensor negative = Tensor::from_values({0, -1, 2}, {3}, id_dtype);
    expect_error([&] { kernels::embedding(w, negative); }, {"embedding", "ids[1] = -1", "[0, 7)"});
    expect_error(
        [&] {
          kernels::embedding_backward(Tensor::zeros({2, 3, 4}), too_big, 7);
        },
        {"embedding_backward", "ids[1, 2] = 7", "[0, 7)"});
  }
  const Tensor ids = Tensor::from_values({0, 1}, {2}, DType::i64);
  expect_error([&] { kernels::embedding(w, ids.to(DType::f32)); }, {"embedding", "fp32"});
  expect_error([&] { kernels::embedding(Tensor::zeros({7}), ids); }, {"embedding", "weight", "2-d", "[7]"});
  expect_error([&] { kernels::embedding(Tensor::zeros({7, 4}, DType::i32), ids); }, {"embedding", "int32"});
  expect_error(
      [&] {
        kernels::embedding_backward(Tensor::zeros({3, 4}), ids, 7);
      },
      {"embedding_backward", "[3, 4]", "[2]"});
  expect_error([&] { kernels::embedding_backward(Tensor::zeros({2, 4}), ids, -1); }, {"embedding_backward", "-1"});
}

}  // namespace
}  // namespace daedalus
