// kernels::grouped_matmul on the CPU: each group's rows (or matrix) bit for bit the kernels::matmul
// of that group alone, for the three products, fp32 and bf16 operands and outputs, uneven groups
// (empty ones, one of a single row), strided operands; the zero weight gradient of a group without
// rows; and the error paths. The CUDA twin is tested against this in tests/test_cuda_math.cpp.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "autograd/kernels/gemm.h"
#include "autograd/kernels/grouped_gemm.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using kernels::GroupedProduct;
using testing::bit_identical;
using testing::random_tensor;

// Groups of 0, 5, 1, 0, 17 and 17 rows.
const std::vector<int64_t> kOffsets = {0, 0, 5, 6, 6, 23, 40};
constexpr int64_t kGroups = 6, kRows = 40, kN = 13, kK = 9;

struct Operands {
  Tensor a, b;
};

Operands operands(GroupedProduct p, DType dtype, uint64_t seed) {
  switch (p) {
    case GroupedProduct::a_bt:
      return {random_tensor({kRows, kK}, seed, dtype), random_tensor({kGroups, kN, kK}, seed + 1, dtype)};
    case GroupedProduct::a_b:
      return {random_tensor({kRows, kN}, seed, dtype), random_tensor({kGroups, kN, kK}, seed + 1, dtype)};
    case GroupedProduct::at_b:
      return {random_tensor({kRows, kN}, seed, dtype), random_tensor({kRows, kK}, seed + 1, dtype)};
  }
  return {};
}

// Group g's product computed alone: what grouped_linear's per-group loop computes.
Tensor group_product(GroupedProduct p, const Tensor& a, const Tensor& b, int64_t g, DType out) {
  const Tensor a_g = a.slice(0, kOffsets[size_t(g)], kOffsets[size_t(g) + 1]);
  switch (p) {
    case GroupedProduct::a_bt: return kernels::matmul(a_g, b.select(0, g).t(), out);
    case GroupedProduct::a_b: return kernels::matmul(a_g, b.select(0, g), out);
    case GroupedProduct::at_b:
      return kernels::matmul(a_g.t(), b.slice(0, kOffsets[size_t(g)], kOffsets[size_t(g) + 1]), out);
  }
  return {};
}

const std::vector<GroupedProduct> kProducts = {GroupedProduct::a_bt, GroupedProduct::a_b, GroupedProduct::at_b};

TEST(GroupedGemm, EachGroupIsItsOwnMatmulBitForBit) {
  for (GroupedProduct p : kProducts) {
    for (DType in : {DType::f32, DType::bf16}) {
      for (DType out : {DType::f32, DType::bf16}) {
        SCOPED_TRACE(::testing::Message() << "product " << int(p) << " " << dtype_name(in) << ">" << dtype_name(out));
        const Operands o = operands(p, in, 10 + uint64_t(p));
        const Tensor c = kernels::grouped_matmul(p, o.a, o.b, kOffsets, out);
        EXPECT_EQ(c.dtype(), out);
        EXPECT_TRUE(c.is_contiguous());
        ASSERT_EQ(c.shape(), p == GroupedProduct::a_bt  ? Shape({kRows, kN})
                             : p == GroupedProduct::a_b ? Shape({kRows, kK})
                                                        : Shape({kGroups, kN, kK}));
        for (int64_t g = 0; g < kGroups; ++g) {
          const int64_t begin = kOffsets[size_t(g)], end = kOffsets[size_t(g) + 1];
          if (p == GroupedProduct::at_b) {
            const Tensor want =
                begin == end ? Tensor::zeros({kN, kK}, out) : group_product(p, o.a, o.b, g, out);  // empty sum: 0
            EXPECT_TRUE(bit_identical(c.select(0, g).contiguous(), want)) << "group " << g;
          } else if (begin < end) {
            EXPECT_TRUE(bit_identical(c.slice(0, begin, end).contiguous(), group_product(p, o.a, o.b, g, out)))
                << "group " << g;
          }
        }
      }
    }
  }
}

// Non-contiguous operands (transposed views) are copied first: the same bits as contiguous ones.
TEST(GroupedGemm, StridedOperandsGiveTheContiguousResult) {
  for (GroupedProduct p : kProducts) {
    const Operands o = operands(p, DType::f32, 30);
    const Tensor a_strided = o.a.t().contiguous().t();
    const Tensor b_strided = o.b.transpose(-2, -1).contiguous().transpose(-2, -1);
    ASSERT_FALSE(a_strided.is_contiguous());
    EXPECT_TRUE(bit_identical(kernels::grouped_matmul(p, a_strided, b_strided, kOffsets),
                              kernels::grouped_matmul(p, o.a, o.b, kOffsets)))
        << "product " << int(p);
  }
}

TEST(GroupedGemm, NoRowsAtAll) {
  const std::vector<int64_t> none = {0, 0, 0};
  const Tensor y =
      kernels::grouped_matmul(GroupedProduct::a_bt, Tensor::zeros({0, kK}), Tensor::ones({2, kN, kK}), none);
  EXPECT_EQ(y.shape(), Shape({0, kN}));
  const Tensor dw = kernels::grouped_matmul(GroupedProduct::at_b, Tensor::zeros({0, kN}), Tensor::zeros({0, kK}), none);
  EXPECT_TRUE(bit_identical(dw, Tensor::zeros({2, kN, kK})));
}

TEST(GroupedGemm, ErrorsNameTheOpAndTheOperands) {
  const Tensor x = Tensor::zeros({6, 4}), w = Tensor::zeros({2, 3, 4});
  const std::vector<int64_t> offsets = {0, 2, 6};
  using P = GroupedProduct;
  testing::expect_error(
      [&] {
        kernels::grouped_matmul(P::a_bt, x, w, {0, 2, 5});
      },
      {"grouped_matmul", "[6, 4]", "[2, 3, 4]", "R = 5"});
  testing::expect_error([&] { kernels::grouped_matmul(P::a_bt, x, w, {0, 4, 2, 6}); }, {"offsets decrease at group 1"});
  testing::expect_error([&] { kernels::grouped_matmul(P::a_bt, x, w, {1, 6}); }, {"starting at 0"});
  testing::expect_error([&] { kernels::grouped_matmul(P::a_bt, x, w, {0, 6}); }, {"G = 1"});
  testing::expect_error([&] { kernels::grouped_matmul(P::a_b, x, w, offsets); }, {"a's columns 4 must match b's N"});
  testing::expect_error(
      [&] {
        kernels::grouped_matmul(P::at_b, x, Tensor::zeros({5, 4}), offsets);
      },
      {"b must be [R, K]"});
  testing::expect_error(
      [&] {
        kernels::grouped_matmul(P::a_bt, x, Tensor::zeros({2, 3, 4}, DType::bf16), offsets);
      },
      {"fp32[6, 4]", "bf16[2, 3, 4]", "both fp32 or both bf16"});
  testing::expect_error([&] { kernels::grouped_matmul(P::a_bt, x, w, offsets, DType::i32); },
                        {"unsupported output dtype int32"});
}

}  // namespace
}  // namespace daedalus
