// Row gather and (weighted) scatter-add by index, the MoE permute / unpermute, against double
// references: ragged shapes, repeated indices, int32/int64 indices, fp32/bf16 data, strided operands.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>

#include "autograd/kernels/index.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::bytes;
using testing::cancelling_sources;
using testing::cyclic_index;
using testing::expect_error;

using testing::all_close;
using testing::kRaggedSizes;

// Relative error of one rounding into `dtype`: fp32 2^-24, bf16 2^-8 (8-bit significand).
double rounding_rtol(DType dtype) { return dtype == DType::bf16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -24); }

// m indices drawn from [0, range) (seeded), `dtype`; strided: every other element of a [2m] vector.
Tensor make_index(int64_t m, int64_t range, DType dtype, uint64_t seed, bool strided) {
  Generator gen(seed);
  std::vector<double> v(size_t(strided ? 2 * m : m));
  for (double& x : v) x = double(gen.next_u64() % uint64_t(range));
  const Tensor t = Tensor::from_values(v, {int64_t(v.size())}, dtype);
  return strided ? t.slice(0, 0, 2 * m, 2) : t;
}

// [n, d]: contiguous, or the transpose of a contiguous [d, n].
Tensor make_rows(int64_t n, int64_t d, DType dtype, bool transposed, uint64_t seed) {
  return transposed ? testing::random_tensor({d, n}, seed, dtype).t() : testing::random_tensor({n, d}, seed, dtype);
}

TEST(Index, GatherRowsCopiesExactly) {
  uint64_t seed = 1;
  for (int64_t n : {int64_t(1), int64_t(65)}) {
    for (int64_t d : kRaggedSizes) {
      for (DType dtype : {DType::f32, DType::bf16, DType::f8e4m3, DType::i32}) {
        for (DType index_dtype : {DType::i32, DType::i64}) {
          for (const bool strided : {false, true}) {
            const Tensor x = make_rows(n, d, DType::f32, /*transposed=*/false, seed++).to(dtype);
            const Tensor x_view = strided ? x.t().contiguous().t() : x;  // strides (1, n) when strided
            const Tensor index = make_index(kRaggedSizes[1] * 19, n, index_dtype, seed++, strided);  // 133 rows
            const Tensor y = kernels::gather_rows(x_view, index);
            ASSERT_EQ(y.shape(), (Shape{index.size(0), d}));
            ASSERT_EQ(y.dtype(), dtype);
            const std::vector<double> xs = x_view.to_doubles(), is = index.to_doubles();
            std::vector<double> expect;
            for (double r : is)
              for (int64_t j = 0; j < d; ++j) expect.push_back(xs[size_t(int64_t(r) * d + j)]);
            EXPECT_TRUE(all_close(y, expect, 0, 0)) << x_view.describe() << " index " << index.describe();
          }
        }
      }
    }
  }
}

// dst [n, d] (dst_dtype) += (weight *) src [m, d] (src_dtype) by m random indices in [0, used).
void check_scatter(int64_t n, int64_t d, int64_t m, int64_t used, DType dst_dtype, DType src_dtype, DType index_dtype,
                   bool strided, bool weighted, uint64_t seed) {
  // dst as a transposed view when strided: the kernel must write through it into the base tensor.
  const Tensor base =
      strided ? testing::random_tensor({d, n}, seed, dst_dtype) : testing::random_tensor({n, d}, seed, dst_dtype);
  const Tensor dst = strided ? base.t() : base;
  const Tensor src = make_rows(m, d, src_dtype, strided, seed + 1);
  const Tensor index = make_index(m, used, index_dtype, seed + 2, strided);
  const Tensor weight = testing::random_tensor({m}, seed + 3, DType::f32);
  const std::vector<double> before = dst.to_doubles(), ss = src.to_doubles(), is = index.to_doubles(),
                            ws = weight.to_doubles();
  const std::vector<uint8_t> before_bits = bytes(dst);

  std::vector<double> expect = before, abs_sum(before.size());
  for (size_t k = 0; k < before.size(); ++k) abs_sum[k] = std::fabs(before[k]);
  std::vector<int64_t> count(size_t(n), 0);
  for (int64_t i = 0; i < m; ++i) {
    const int64_t r = int64_t(is[size_t(i)]);
    ++count[size_t(r)];
    const double w = weighted ? ws[size_t(i)] : 1.0;
    for (int64_t j = 0; j < d; ++j) {
      expect[size_t(r * d + j)] += w * ss[size_t(i * d + j)];
      abs_sum[size_t(r * d + j)] += std::fabs(w * ss[size_t(i * d + j)]);
    }
  }
  if (weighted) {
    kernels::scatter_add_rows(dst, index, src, weight);
  } else {
    kernels::scatter_add_rows(dst, index, src);
  }
  const double max_abs = *std::max_element(abs_sum.begin(), abs_sum.end());
  const int64_t terms = 1 + *std::max_element(count.begin(), count.end());
  const std::string what =
      fmt::format("dst {} src {} index {} weighted {}", dst.describe(), src.describe(), index.describe(), weighted);
  // Each row accumulated in double from its old value and rounded once into dst's dtype; atol covers
  // two double sums (kernel, reference) of `terms` terms, each within terms 2^-53 sum|term|. The
  // products w * src are exact in double.
  EXPECT_TRUE(all_close(dst, expect, rounding_rtol(dst_dtype), 2 * double(terms) * std::ldexp(max_abs, -53))) << what;
  // Rows that no index names keep their exact bits (no round trip through the accumulator).
  const std::vector<uint8_t> after_bits = bytes(dst);
  const size_t row_bytes = size_t(d) * dtype_size(dst_dtype);
  for (int64_t r = 0; r < n; ++r) {
    if (count[size_t(r)] > 0) continue;
    EXPECT_EQ(0, std::memcmp(&before_bits[size_t(r) * row_bytes], &after_bits[size_t(r) * row_bytes], row_bytes))
        << "untouched row " << r << " changed; " << what;
  }
}

TEST(Index, ScatterAddRowsWithRepeatsMatchesDoubleReference) {
  uint64_t seed = 1000;
  for (int64_t d : kRaggedSizes) {
    for (DType dst_dtype : {DType::f32, DType::bf16}) {
      for (DType src_dtype : {DType::f32, DType::bf16}) {
        for (DType index_dtype : {DType::i32, DType::i64}) {
          for (const bool strided : {false, true}) {
            for (const bool weighted : {false, true}) {
              // 129 source rows into 65 destinations, indices from the first 40: repeats and untouched rows.
              check_scatter(kRaggedSizes[2], d, kRaggedSizes[3], 40, dst_dtype, src_dtype, index_dtype, strided,
                            weighted, seed);
              seed += 10;
            }
          }
        }
      }
    }
  }
  // A single destination row receiving every source (MoE: every token routed to one expert slot).
  check_scatter(1, kRaggedSizes[4], kRaggedSizes[4], 1, DType::f32, DType::bf16, DType::i64, false, true, 7);
}

// The CPU kernel sums each row's sources in increasing index order — it equals that sum in double
// rounded once, bit for bit — and testing::scatter_order_probe sees the order: the same sources in
// the opposite order give other bits (the CUDA twin is held to the CPU's bits with this probe).
TEST(Index, ScatterAddRowsSumsInIncreasingSourceOrderAndTheProbeSeesIt) {
  const int64_t n = 300;
  const testing::ScatterOrderProbe probe = testing::scatter_order_probe(n, 2400, 21);
  const int64_t m = probe.src.size(0), d = probe.src.size(1);
  const std::vector<int64_t> rows = probe.index.to_vector<int64_t>();
  const std::vector<double> src = probe.src.to_doubles();
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor init = testing::random_tensor({n, d}, 23, dtype);
    const std::vector<double> old = init.to_doubles();
    // Increasing source order, then the reverse, in double from the old value, rounded once.
    std::vector<std::vector<double>> sums(2, old);
    for (int64_t step = 0; step < m; ++step)
      for (int order = 0; order < 2; ++order) {
        const int64_t i = order == 0 ? step : m - 1 - step;
        for (int64_t j = 0; j < d; ++j) sums[size_t(order)][size_t(rows[size_t(i)] * d + j)] += src[size_t(i * d + j)];
      }
    Tensor got = init.clone();
    kernels::scatter_add_rows(got, probe.index, probe.src);
    EXPECT_EQ(bytes(got), bytes(Tensor::from_values(sums[0], {n, d}, dtype))) << dtype_name(dtype);
    EXPECT_NE(bytes(got), bytes(Tensor::from_values(sums[1], {n, d}, dtype))) << dtype_name(dtype);
  }
}

TEST(Index, PermuteThenCombineWithGateWeights) {
  // MoE round trip: 65 tokens, top-2 of 7 experts. Slot s = 2t + c holds token t; sort the slots by
  // expert (stable), gather the token rows into that order, then combine them back with the gates.
  const int64_t tokens = kRaggedSizes[2], d = kRaggedSizes[3];
  const Tensor x = testing::random_tensor({tokens, d}, 5, DType::bf16);
  Generator gen(6);
  std::vector<std::pair<int64_t, int64_t>> slots;  // (expert, token)
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t e0 = int64_t(gen.next_u64() % 7), e1 = (e0 + 1 + int64_t(gen.next_u64() % 6)) % 7;
    slots.push_back({e0, t});
    slots.push_back({e1, t});
  }
  std::stable_sort(slots.begin(), slots.end(), [](auto a, auto b) { return a.first < b.first; });
  std::vector<int32_t> order;
  for (auto [e, t] : slots) order.push_back(int32_t(t));
  const Tensor index = Tensor::from_vector(order, {int64_t(order.size())});
  const Tensor gate = Tensor::full({int64_t(order.size())}, 0.5);
  const Tensor permuted = kernels::gather_rows(x, index);  // [2T, D] in expert order
  Tensor out = Tensor::zeros({tokens, d}, DType::f32);
  kernels::scatter_add_rows(out, index, permuted, gate);
  // Each token gets 0.5 x + 0.5 x: exact in double, exact in fp32 (x is bf16).
  EXPECT_TRUE(all_close(out, x.to_doubles(), 0, 0));
}

TEST(Index, SameBitsWithOneTwoAndThreeThreads) {
  // 993 rows into 7 destinations, D = 129: parallel (> 32768 elements), heavy repetition.
  const int64_t m = kRaggedSizes[4], d = kRaggedSizes[3];
  const Tensor index = cyclic_index(m, 7, DType::i32);
  const Tensor src = cancelling_sources(m, d, 7, 4, DType::f32);
  const Tensor weight = Tensor::full({m}, 0.75);  // one value, so w 2^60 and -w 2^60 still cancel
  const Tensor x = testing::random_tensor({7, d}, 6, DType::bf16);
  const int saved = omp_get_max_threads();
  std::vector<std::vector<uint8_t>> scatter, weighted, gather;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    Tensor a = Tensor::zeros({7, d}, DType::bf16), b = Tensor::zeros({7, d}, DType::f32);
    kernels::scatter_add_rows(a, index, src);
    kernels::scatter_add_rows(b, index, src, weight);
    scatter.push_back(bytes(a));
    weighted.push_back(bytes(b));
    gather.push_back(bytes(kernels::gather_rows(x, index)));
  }
  omp_set_num_threads(saved);
  for (int k : {1, 2}) {
    EXPECT_EQ(scatter[0], scatter[size_t(k)]);
    EXPECT_EQ(weighted[0], weighted[size_t(k)]);
    EXPECT_EQ(gather[0], gather[size_t(k)]);
  }
}

TEST(Index, OutOfRangeIndicesNameOpPositionValueAndRange) {
  const Tensor x = Tensor::zeros({10, 4});
  for (DType index_dtype : {DType::i32, DType::i64}) {
    const Tensor too_big = Tensor::from_values({0, 9, 3, 10, 2}, {5}, index_dtype);
    const Tensor negative = Tensor::from_values({0, -3}, {2}, index_dtype);
    expect_error([&] { kernels::gather_rows(x, too_big); }, {"gather_rows", "index[3] = 10", "[0, 10)", "[10, 4]"});
    expect_error([&] { kernels::gather_rows(x, negative); }, {"gather_rows", "index[1] = -3", "[0, 10)"});
    // On error nothing is written, even the rows before the bad index.
    Tensor dst = testing::random_tensor({10, 4}, 1);
    const std::vector<uint8_t> before = bytes(dst);
    expect_error(
        [&] {
          kernels::scatter_add_rows(dst, too_big, Tensor::ones({5, 4}));
        },
        {"scatter_add_rows", "index[3] = 10", "[0, 10)", "[10, 4]"});
    expect_error(
        [&] {
          kernels::scatter_add_rows(dst, negative, Tensor::ones({2, 4}), Tensor::ones({2}));
        },
        {"scatter_add_rows", "index[1] = -3"});
    EXPECT_EQ(bytes(dst), before);
  }
  const Tensor index = Tensor::from_values({0, 1}, {2}, DType::i64);
  expect_error([&] { kernels::gather_rows(Tensor::zeros({10}), index); }, {"gather_rows", "x", "2-d", "[10]"});
  expect_error([&] { kernels::gather_rows(x, index.view({1, 2})); }, {"gather_rows", "index", "1-d", "[1, 2]"});
  expect_error([&] { kernels::gather_rows(x, index.to(DType::f32)); }, {"gather_rows", "fp32"});
  expect_error(
      [&] {
        kernels::scatter_add_rows(x, index, Tensor::zeros({3, 4}));
      },
      {"scatter_add_rows", "[3, 4]", "[2]", "[10, 4]"});
  expect_error([&] { kernels::scatter_add_rows(x, index, Tensor::zeros({2, 5})); }, {"scatter_add_rows", "[2, 5]"});
  expect_error(
      [&] {
        kernels::scatter_add_rows(x, index, Tensor::zeros({2, 4}), Tensor::ones({3}));
      },
      {"scatter_add_rows", "weight", "[3]", "[2]"});
  expect_error(
      [&] {
        kernels::scatter_add_rows(x, index, Tensor::zeros({2, 4}), Tensor::ones({2}, DType::bf16));
      },
      {"scatter_add_rows", "weight", "bf16"});
  expect_error(
      [&] {
        kernels::scatter_add_rows(Tensor::zeros({10, 4}, DType::i32), index, Tensor::zeros({2, 4}));
      },
      {"scatter_add_rows", "dst", "int32"});
  expect_error(
      [&] {
        kernels::scatter_add_rows(Tensor::zeros({1, 4}).expand({10, 4}), index, Tensor::zeros({2, 4}));
      },
      {"scatter_add_rows", "expanded"});
}

}  // namespace
}  // namespace daedalus
