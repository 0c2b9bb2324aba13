// SmallVector (the type behind Shape): every operation checked against std::vector, on both sides
// of the inline capacity, including the growth from inline to heap storage.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "autograd/small_vector.h"
#include "autograd/tensor.h"

namespace daedalus {
namespace {

using Small = SmallVector<int64_t, 4>;

std::vector<int64_t> as_vector(const Small& s) { return std::vector<int64_t>(s.begin(), s.end()); }

TEST(SmallVector, ConstructorsMatchStdVector) {
  EXPECT_EQ(as_vector(Small()), std::vector<int64_t>());
  EXPECT_EQ(as_vector(Small(3)), std::vector<int64_t>(3));
  EXPECT_EQ(as_vector(Small(6, 7)), std::vector<int64_t>(6, 7));  // beyond the inline capacity
  EXPECT_EQ(as_vector(Small{1, 2, 3}), (std::vector<int64_t>{1, 2, 3}));
  const std::vector<int64_t> v = {5, 4, 3, 2, 1};
  EXPECT_EQ(as_vector(Small(v.begin() + 1, v.end())), (std::vector<int64_t>{4, 3, 2, 1}));
  EXPECT_EQ(Small{9}.size(), 1u);  // braces hold elements, as with std::vector
  EXPECT_EQ(Small(2).size(), 2u);  // parentheses hold a count
}

TEST(SmallVector, StaysInlineUpToItsCapacityThenGrows) {
  Small s;
  EXPECT_EQ(s.capacity(), 4u);
  for (int64_t i = 0; i < 4; ++i) s.push_back(i);
  EXPECT_EQ(s.capacity(), 4u);
  s.push_back(4);
  EXPECT_GE(s.capacity(), 5u);
  EXPECT_EQ(as_vector(s), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  s.push_back(s.front());  // an element of the vector itself, across a possible growth
  for (int k = 0; k < 4; ++k) s.push_back(s.back());
  EXPECT_EQ(as_vector(s), (std::vector<int64_t>{0, 1, 2, 3, 4, 0, 0, 0, 0, 0}));
}

TEST(SmallVector, CopyAndMoveKeepElementsInlineAndOnHeap) {
  for (size_t n : {size_t(0), size_t(2), size_t(4), size_t(9)}) {
    Small a;
    for (size_t i = 0; i < n; ++i) a.push_back(int64_t(10 * i + 1));
    const std::vector<int64_t> want = as_vector(a);
    Small copy = a;
    EXPECT_EQ(as_vector(copy), want);
    copy.push_back(-1);  // independent of the original
    EXPECT_EQ(as_vector(a), want);
    Small moved = std::move(a);
    EXPECT_EQ(as_vector(moved), want);
    EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): a moved-from SmallVector is empty
    Small assigned{7, 7, 7, 7, 7, 7};
    assigned = moved;
    EXPECT_EQ(as_vector(assigned), want);
    Small move_assigned{1};
    move_assigned = std::move(moved);
    EXPECT_EQ(as_vector(move_assigned), want);
    const Small& alias = assigned;
    assigned = alias;  // self-assignment keeps the elements
    EXPECT_EQ(as_vector(assigned), want);
  }
}

TEST(SmallVector, RandomEditsMatchStdVector) {
  // Insert, erase, resize, pop and assign at random positions, checking after every step.
  std::mt19937 rng(7);
  Small s;
  std::vector<int64_t> ref;
  for (int step = 0; step < 2000; ++step) {
    const int64_t value = int64_t(rng() % 100);
    const size_t pos = ref.empty() ? 0 : rng() % (ref.size() + 1);
    switch (rng() % 8) {
      case 0:
      case 1:
        s.push_back(value);
        ref.push_back(value);
        break;
      case 2:
        s.insert(s.begin() + pos, value);
        ref.insert(ref.begin() + pos, value);
        break;
      case 3:
        if (pos < ref.size()) {
          s.erase(s.begin() + pos);
          ref.erase(ref.begin() + pos);
        }
        break;
      case 4:
        if (!ref.empty()) {
          s.pop_back();
          ref.pop_back();
        }
        break;
      case 5: {
        const size_t n = rng() % 10;
        s.resize(n, value);
        ref.resize(n, value);
        break;
      }
      case 6: {
        const size_t end = pos + rng() % (ref.size() - pos + 1);
        s.erase(s.begin() + pos, s.begin() + end);
        ref.erase(ref.begin() + pos, ref.begin() + end);
        break;
      }
      case 7:
        if (!ref.empty()) {
          const size_t n = rng() % ref.size();
          s.insert(s.begin() + pos, s.begin(), s.begin() + n);  // a range from itself
          const std::vector<int64_t> head(ref.begin(), ref.begin() + n);
          ref.insert(ref.begin() + pos, head.begin(), head.end());
        }
        break;
    }
    ASSERT_EQ(as_vector(s), ref) << "after step " << step;
  }
}

TEST(SmallVector, ComparesLikeStdVector) {
  EXPECT_EQ((Small{1, 2, 3}), (Small{1, 2, 3}));
  EXPECT_NE((Small{1, 2, 3}), (Small{1, 2}));
  EXPECT_NE((Small{1, 2, 3, 4, 5}), (Small{1, 2, 3, 4, 6}));
  EXPECT_LT((Small{1, 2}), (Small{1, 2, 0}));
  EXPECT_LT((Small{1, 2, 3}), (Small{1, 3}));
  EXPECT_EQ(Small(), Small());
  EXPECT_THROW((void)Small{1}.at(1), std::out_of_range);
}

TEST(SmallVector, ShapeFormatsAndViewsLikeBefore) {
  // Shape is a SmallVector: more dims than it keeps inline still work through views.
  EXPECT_EQ(shape_str(Shape{2, 3, 4}), "[2, 3, 4]");
  EXPECT_EQ(shape_str(Shape{}), "[]");
  Tensor t = Tensor::zeros({1, 2, 1, 3, 1, 2, 1});
  EXPECT_EQ(t.strides(), (Shape{12, 6, 6, 2, 2, 1, 1}));
  EXPECT_EQ(t.unsqueeze(0).shape(), (Shape{1, 1, 2, 1, 3, 1, 2, 1}));
  EXPECT_EQ(t.squeeze(4).select(1, 1).shape(), (Shape{1, 1, 3, 2, 1}));
}

}  // namespace
}  // namespace daedalus
