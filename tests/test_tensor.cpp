// Tensor metadata, views (they share storage and read the right elements) and copies.
#include <gtest/gtest.h>

#include "autograd/tensor.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::all_close;

Tensor iota(const Shape& shape, DType dtype = DType::f32) {
  std::vector<double> v(size_t(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = double(i);
  return Tensor::from_values(v, shape, dtype);
}

TEST(Tensor, CreationAndMetadata) {
  Tensor t = Tensor::zeros({3, 4, 5});
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.numel(), 60);
  EXPECT_EQ(t.strides(), (Shape{20, 5, 1}));
  EXPECT_EQ(t.size(-1), 5);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.nbytes(), 240u);
  EXPECT_EQ(t.describe(), "fp32[3, 4, 5] on cpu");
  EXPECT_TRUE(all_close(t, std::vector<double>(60, 0.0), 0, 0));
  EXPECT_TRUE(all_close(Tensor::full({2, 2}, 2.5, DType::bf16), {2.5, 2.5, 2.5, 2.5}, 0, 0));
  EXPECT_TRUE(all_close(Tensor::arange(5), {0, 1, 2, 3, 4}, 0, 0));
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, EveryDtypeRoundTripsRepresentableValues) {
  // Values exactly representable in every dtype survive creation and readback unchanged.
  const std::vector<double> values = {0, 1, -2, 0.5, 3, -448 / 64.0, 7, 16};
  for (DType d : {DType::f32, DType::bf16, DType::f8e4m3, DType::f8e5m2, DType::i32, DType::i64}) {
    std::vector<double> expect = values;
    if (!is_floating(d))
      for (double& v : expect) v = std::trunc(v);
    Tensor t = Tensor::from_values(values, {2, 4}, d);
    EXPECT_EQ(t.dtype(), d);
    EXPECT_TRUE(all_close(t, expect, 0, 0)) << dtype_name(d);
  }
}

TEST(Tensor, TransposeIsAViewReadingTheRightElements) {
  Tensor a = iota({2, 3});
  Tensor t = a.t();
  EXPECT_TRUE(t.shares_storage(a));
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_TRUE(all_close(t.contiguous(), {0, 3, 1, 4, 2, 5}, 0, 0));
}

TEST(Tensor, SliceSelectAndStep) {
  Tensor a = iota({4, 5});
  EXPECT_TRUE(all_close(a.slice(1, 1, 4), {1, 2, 3, 6, 7, 8, 11, 12, 13, 16, 17, 18}, 0, 0));
  EXPECT_TRUE(all_close(a.slice(0, -2, 4), {10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, 0, 0));
  EXPECT_TRUE(all_close(a.slice(1, 0, 5, 2).select(0, 3), {15, 17, 19}, 0, 0));
  EXPECT_TRUE(all_close(a.select(1, -1), {4, 9, 14, 19}, 0, 0));
  EXPECT_EQ(a.slice(0, 3, 1).numel(), 0);  // empty, like Python
}

TEST(Tensor, ReshapeViewsWhenPossibleAndCopiesOtherwise) {
  Tensor a = iota({2, 3, 4});
  Tensor v = a.reshape({6, -1});
  EXPECT_TRUE(v.shares_storage(a));
  EXPECT_EQ(v.shape(), (Shape{6, 4}));
  // A slice along the last dim is not viewable as a flat vector: reshape copies, view refuses.
  Tensor s = a.slice(2, 0, 2);
  Tensor r = s.reshape({-1});
  EXPECT_FALSE(r.shares_storage(a));
  EXPECT_TRUE(all_close(r, {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21}, 0, 0));
  EXPECT_THROW(s.view({-1}), InputError);
  // Splitting a transposed dim's contiguous group is still a view.
  Tensor p = a.permute({1, 0, 2});  // [3, 2, 4]
  Tensor q = p.reshape({3, 2, 2, 2});
  EXPECT_TRUE(q.shares_storage(a));
  EXPECT_TRUE(all_close(q.contiguous(), p.contiguous().to_doubles(), 0, 0));
}

TEST(Tensor, ExpandUnsqueezeSqueeze) {
  Tensor a = iota({3});
  Tensor e = a.unsqueeze(0).expand({2, 3});
  EXPECT_EQ(e.strides(), (Shape{0, 1}));
  EXPECT_TRUE(all_close(e.contiguous(), {0, 1, 2, 0, 1, 2}, 0, 0));
  EXPECT_EQ(a.unsqueeze(-1).shape(), (Shape{3, 1}));
  EXPECT_EQ(a.unsqueeze(1).squeeze(1).shape(), (Shape{3}));
  EXPECT_THROW(a.expand({2, 4}), InputError);
}

TEST(Tensor, CopyIntoStridedDestinationAndCast) {
  Tensor a = iota({3, 4});
  Tensor dst = Tensor::zeros({4, 3}, DType::bf16);
  Tensor view = dst.t();  // write through a transposed view
  view.copy_(a);
  EXPECT_TRUE(all_close(dst, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}, 0, 0));
  Tensor c = a.clone();
  EXPECT_FALSE(c.shares_storage(a));
  c.fill_(1.0);
  EXPECT_EQ(a.to_doubles()[1], 1.0);  // the source is untouched
  EXPECT_EQ(c.to_doubles()[5], 1.0);
}

TEST(Tensor, PrintingShowsValuesDtypeAndShape) {
  const std::string s = to_string(iota({2, 3}, DType::bf16));
  EXPECT_EQ(s, "tensor([[0, 1, 2],\n        [3, 4, 5]], dtype=bf16, shape=[2, 3], device=cpu)");
  const std::string big = to_string(iota({100}), 2);
  EXPECT_EQ(big, "tensor([0, 1, ..., 98, 99], dtype=fp32, shape=[100], device=cpu)");
}

TEST(Tensor, ErrorsNameTheOpAndShapes) {
  Tensor a = Tensor::zeros({2, 3});
  try {
    a.view({4, 2});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4, 2]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(a.transpose(0, 2), InputError);
  EXPECT_THROW(a.select(0, 2), InputError);
  EXPECT_THROW(a.data<bf16>(), InputError);
  EXPECT_THROW(Tensor::empty({-1}), InputError);
  EXPECT_THROW(a.copy_(Tensor::zeros({3, 2})), InputError);
}

TEST(Tensor, CudaWithoutADeviceIsAClearError) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present; see test_cuda_kernels";
  try {
    Tensor::zeros({2}, DType::f32, Device::cuda(0));
    FAIL() << "allocating on cuda:0 without a device succeeded";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("built without CUDA") != std::string::npos ||
                msg.find("device(s) are visible") != std::string::npos)
        << msg;
  }
}

TEST(Tensor, MemoryStatsTrackLiveAndPeakBytes) {
  Allocator& cpu = allocator_for(Device::cpu());
  const int64_t before = cpu.stats().current_bytes;
  {
    Tensor t = Tensor::empty({1000}, DType::f32);
    EXPECT_EQ(cpu.stats().current_bytes, before + 4000);
    EXPECT_GE(cpu.stats().peak_bytes, before + 4000);
  }
  EXPECT_EQ(cpu.stats().current_bytes, before);
}

}  // namespace
}  // namespace daedalus

namespace daedalus {
namespace {

TEST(Allocator, FreedLargeBlocksAreReusedAndReleasedOnRequest) {
  Allocator& cpu = allocator_for(Device::cpu());
  cpu.empty_cache();
  const MemoryStats s0 = cpu.stats();
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({3 << 20}, DType::f32);  // 12 MiB: cached when freed
    first = t.data_ptr();
  }
  const MemoryStats s1 = cpu.stats();
  EXPECT_EQ(s1.cached_bytes, s0.cached_bytes + (12 << 20));
  {
    Tensor t = Tensor::empty({3 << 20}, DType::bf16, Device::cpu()).view({-1});  // 6 MiB: another size class
    EXPECT_NE(t.data_ptr(), first);
    Tensor u = Tensor::empty({(3 << 20) - 5}, DType::f32);  // same 12 MiB class: the cached block
    EXPECT_EQ(u.data_ptr(), first);
    EXPECT_EQ(cpu.stats().cache_hits, s1.cache_hits + 1);
    EXPECT_EQ(cpu.stats().current_bytes, s0.current_bytes + (6 << 20) + int64_t(((3 << 20) - 5) * 4));
  }
  cpu.empty_cache();
  EXPECT_EQ(cpu.stats().cached_bytes, 0);
  // Small blocks bypass the cache (malloc handles them well).
  { Tensor small = Tensor::empty({1000}); }
  EXPECT_EQ(cpu.stats().cached_bytes, 0);
}

}  // namespace
}  // namespace daedalus

namespace daedalus {
namespace {

TEST(Tensor, ContiguousOfTransposedViewsMatchesElementwiseReference) {
  // The tiled transpose path: ragged sizes around the 64 tile, batched, sliced, with a cast.
  for (int64_t r : {1, 7, 65, 129}) {
    for (int64_t c : {7, 64, 993}) {
      const Tensor x = testing::random_tensor({3, r, c}, uint64_t(r * 1000 + c));
      const Tensor t = x.transpose(1, 2);  // [3, c, r], stride(-2) == 1
      const std::vector<double> v = x.to_doubles();
      std::vector<double> want(v.size());
      for (int64_t b = 0; b < 3; ++b)
        for (int64_t i = 0; i < c; ++i)
          for (int64_t j = 0; j < r; ++j) want[size_t((b * c + i) * r + j)] = v[size_t((b * r + j) * c + i)];
      EXPECT_TRUE(testing::all_close(t.contiguous(), want, 0, 0)) << r << "x" << c;
      EXPECT_TRUE(testing::all_close(t.to(DType::bf16), Tensor::from_values(want, t.shape(), DType::bf16), 0, 0));
    }
  }
  // A transposed slice writes into a strided destination row by row.
  const Tensor x = testing::random_tensor({100, 200}, 5);
  const Tensor src = x.slice(1, 10, 150).t();  // [140, 100]
  Tensor dst = Tensor::zeros({140, 300});
  dst.slice(1, 50, 150).copy_(src);
  EXPECT_TRUE(testing::all_close(dst.slice(1, 50, 150), src.contiguous(), 0, 0));
  EXPECT_TRUE(testing::all_close(dst.slice(1, 0, 50), std::vector<double>(140 * 50, 0.0), 0, 0));
}

}  // namespace
}  // namespace daedalus
