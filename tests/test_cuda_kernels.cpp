// Every CUDA kernel against its CPU twin (the numerical reference), on ragged shapes and views.
// Skips with a reason on machines without a CUDA device; scripts/gpu-check runs it on one.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::all_close;
using testing::random_tensor;

class Cuda : public testing::CudaTest {};

TEST_F(Cuda, HostDeviceRoundTripIsExactForEveryDtype) {
  for (DType d : {DType::f32, DType::bf16, DType::f8e4m3, DType::f8e5m2, DType::i32, DType::i64}) {
    const Tensor x = random_tensor({65, 129}, 1, DType::f32, 10.0).to(d);
    const Tensor back = x.to(gpu).to(Device::cpu());
    EXPECT_TRUE(all_close(back, x, 0, 0)) << dtype_name(d);
  }
}

TEST_F(Cuda, CastAndStridedCopyAreBitIdenticalToCpu) {
  // The codecs are shared host/device integer code: results must match bit for bit.
  const Tensor x = random_tensor({129, 65}, 2, DType::f32, 300.0);
  const Tensor xg = x.to(gpu);
  for (DType d : {DType::bf16, DType::f8e4m3, DType::f8e5m2, DType::i32}) {
    for (Fp8Overflow ov : {Fp8Overflow::saturate, Fp8Overflow::nonfinite}) {
      const Tensor cpu = kernels::cast(x.t(), d, ov);
      const Tensor gpu_out = kernels::cast(xg.t(), d, ov);
      EXPECT_EQ(gpu_out.device(), gpu);
      EXPECT_TRUE(all_close(gpu_out.to(Device::cpu()), cpu, 0, 0)) << dtype_name(d);
      // Contiguous operands take the packed (16-byte) kernels, with a ragged tail.
      EXPECT_TRUE(all_close(kernels::cast(xg, d, ov).to(Device::cpu()), kernels::cast(x, d, ov), 0, 0));
      // Contiguous but misaligned (offset by one element): the indexed kernels.
      EXPECT_TRUE(all_close(kernels::cast(xg.view({-1}).slice(0, 1, 8000), d, ov).to(Device::cpu()),
                            kernels::cast(x.view({-1}).slice(0, 1, 8000), d, ov), 0, 0));
    }
  }
  // Back from narrow types (fp8 -> fp32, bf16 -> fp32): packed with the wider type setting the width.
  for (DType d : {DType::bf16, DType::f8e4m3}) {
    const Tensor narrow = kernels::cast(x, d);
    EXPECT_TRUE(all_close(kernels::cast(narrow.to(gpu), DType::f32).to(Device::cpu()),
                          kernels::cast(narrow, DType::f32), 0, 0));
  }
  const Tensor sliced = xg.slice(0, 3, 100, 3).slice(1, 1, 64);
  EXPECT_TRUE(
      all_close(sliced.contiguous().to(Device::cpu()), x.slice(0, 3, 100, 3).slice(1, 1, 64).contiguous(), 0, 0));
}

TEST_F(Cuda, FillMatchesCpu) {
  for (DType d : {DType::f32, DType::bf16, DType::f8e4m3, DType::i64}) {
    const Tensor t = Tensor::full({7, 993}, 3.3, d, gpu);
    EXPECT_TRUE(all_close(t.to(Device::cpu()), Tensor::full({7, 993}, 3.3, d), 0, 0)) << dtype_name(d);
  }
}

TEST_F(Cuda, ElementwiseMatchesCpu) {
  // Same float formulas; expf/logf on the GPU are within 2 ulp of the CPU's, so rtol = 1e-6
  // (8 ulp) covers sigmoid/silu which compose three such operations. bf16 may then differ by one
  // bf16 step (2^-7 relative at most) when the float results straddle a rounding boundary.
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : testing::kRaggedSizes) {
      const Tensor a = random_tensor({3, n}, 10 + uint64_t(n), d), b = random_tensor({n}, 20 + uint64_t(n), d);
      const Tensor ag = a.to(gpu), bg = b.to(gpu);
      const double rtol = d == DType::f32 ? 1e-6 : std::ldexp(1.0, -7);
      for (auto op :
           {kernels::BinaryOp::add, kernels::BinaryOp::mul, kernels::BinaryOp::div, kernels::BinaryOp::maximum}) {
        EXPECT_TRUE(all_close(kernels::binary(op, ag, bg).to(Device::cpu()), kernels::binary(op, a, b), rtol, 0))
            << kernels::op_name(op) << " " << dtype_name(d) << " n=" << n;
      }
      for (auto op : {kernels::UnaryOp::exp, kernels::UnaryOp::silu, kernels::UnaryOp::sigmoid, kernels::UnaryOp::neg,
                      kernels::UnaryOp::square}) {
        EXPECT_TRUE(all_close(kernels::unary(op, ag.t()).to(Device::cpu()), kernels::unary(op, a.t()), rtol, 0))
            << kernels::op_name(op) << " " << dtype_name(d) << " n=" << n;
      }
      EXPECT_TRUE(all_close(kernels::affine(ag, 2.0, 1.0).to(Device::cpu()), kernels::affine(a, 2.0, 1.0), rtol, 0));
      // Same-shape contiguous operands: packed kernels (n is ragged, so the scalar tail runs too);
      // a view offset by one element is contiguous but misaligned: the indexed kernels.
      const Tensor c = random_tensor({3, n}, 30 + uint64_t(n), d), cg = c.to(gpu);
      EXPECT_TRUE(all_close(kernels::mul(ag, cg).to(Device::cpu()), kernels::mul(a, c), rtol, 0));
      EXPECT_TRUE(all_close(kernels::unary(kernels::UnaryOp::silu, cg).to(Device::cpu()),
                            kernels::unary(kernels::UnaryOp::silu, c), rtol, 0));
      const Tensor tail_gpu = cg.view({-1}).slice(0, 1, 3 * n), tail_cpu = c.view({-1}).slice(0, 1, 3 * n);
      EXPECT_TRUE(
          all_close(kernels::mul(tail_gpu, tail_gpu).to(Device::cpu()), kernels::mul(tail_cpu, tail_cpu), rtol, 0));
      Tensor in_place_cpu = c.clone(), in_place_gpu = cg.clone();
      kernels::add_(in_place_cpu, a, 0.25);
      kernels::add_(in_place_gpu, ag, 0.25);
      EXPECT_TRUE(all_close(in_place_gpu.to(Device::cpu()), in_place_cpu, rtol, 0));
      Tensor acc_cpu = a.clone(), acc_gpu = ag.clone();
      kernels::add_(acc_cpu, b, -0.5);
      kernels::add_(acc_gpu, bg, -0.5);
      EXPECT_TRUE(all_close(acc_gpu.to(Device::cpu()), acc_cpu, rtol, 0));
    }
  }
}

TEST_F(Cuda, MixedDevicesAreAnErrorNamingBoth) {
  const Tensor a = Tensor::zeros({4}), b = Tensor::zeros({4}, DType::f32, gpu);
  try {
    kernels::add(a, b);
    FAIL() << "add across devices succeeded";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("add: operands on cpu and cuda:0"), std::string::npos) << e.what();
  }
}

TEST_F(Cuda, AllocatorTracksDeviceMemory) {
  Allocator& alloc = allocator_for(gpu);
  const int64_t before = alloc.stats().current_bytes;
  void* first = nullptr;
  {
    const Tensor t = Tensor::empty({1 << 20}, DType::f32, gpu);
    first = t.data_ptr();
    EXPECT_EQ(alloc.stats().current_bytes, before + (4 << 20));
  }
  EXPECT_EQ(alloc.stats().current_bytes, before);
  // The freed block is cached and handed to the next request of its size class.
  const int64_t hits = alloc.stats().cache_hits;
  const Tensor again = Tensor::empty({1 << 20}, DType::f32, gpu);
  EXPECT_EQ(again.data_ptr(), first);
  EXPECT_EQ(alloc.stats().cache_hits, hits + 1);
  alloc.empty_cache();
  EXPECT_EQ(alloc.stats().cached_bytes, 0);
}

// Work queued on the compute stream, then read without an explicit synchronize: a host copy waits
// for everything queued before it, and a copy within the device is ordered between the kernels
// around it. 64 MiB operands and 20 in-place adds keep the GPU busy long after the host has queued
// them, so a copy that did not wait would see a partial sum.
TEST_F(Cuda, CopiesSeeEverythingQueuedBeforeThem) {
  constexpr int64_t n = int64_t(1) << 24;
  constexpr int adds = 20;
  const Tensor x = Tensor::zeros({n}, DType::f32, gpu), one = Tensor::ones({n}, DType::f32, gpu);
  for (int i = 0; i < adds; ++i) kernels::add_(x, one, 1.0);
  const Tensor y = Tensor::empty({n}, DType::f32, gpu);
  copy_bytes(y.data_ptr(), gpu, x.data_ptr(), gpu, x.nbytes());  // device to device: queued only
  kernels::add_(y, one, 1.0);
  // Integers below 2^24 are exact in fp32: every element holds exactly its count of adds.
  EXPECT_TRUE(all_close(x.to(Device::cpu()), Tensor::full({n}, adds, DType::f32), 0, 0));
  EXPECT_TRUE(all_close(y.to(Device::cpu()), Tensor::full({n}, adds + 1, DType::f32), 0, 0));
  // Host to device, then kernels that read it at once.
  const Tensor host = Tensor::full({n}, 5.0, DType::f32);
  const Tensor z = host.to(gpu);
  kernels::add_(z, one, 2.0);
  synchronize(gpu);
  EXPECT_TRUE(all_close(z.to(Device::cpu()), Tensor::full({n}, 7.0, DType::f32), 0, 0));
}

TEST_F(Cuda, DeviceTimerTimesQueuedWork) {
  constexpr int64_t n = int64_t(1) << 24;
  const Tensor x = Tensor::zeros({n}, DType::f32, gpu), one = Tensor::ones({n}, DType::f32, gpu);
  synchronize(gpu);
  const auto t0 = std::chrono::steady_clock::now();
  DeviceTimer timer(gpu);
  timer.start();
  for (int i = 0; i < 20; ++i) kernels::add_(x, one, 1.0);
  timer.stop();
  const double gpu_ms = timer.elapsed_ms();  // waits for the stop event
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(std::isfinite(gpu_ms));
  // 20 passes over 3 x 64 MiB take well over a microsecond on any GPU (a few ms at 3 TB/s).
  EXPECT_GT(gpu_ms, 1e-3);
  // The events lie inside the host's interval (0.5 ms of slack for the two clocks' resolution).
  EXPECT_LE(gpu_ms, wall_ms + 0.5);
  // Reusable: a second interval on the same events.
  timer.start();
  kernels::add_(x, one, 1.0);
  timer.stop();
  const double again = timer.elapsed_ms();
  EXPECT_TRUE(std::isfinite(again) && again > 0) << again;
  EXPECT_TRUE(all_close(x.to(Device::cpu()), Tensor::full({n}, 21.0, DType::f32), 0, 0));
}

// Runs everywhere: the timer times a CUDA device, and a CPU-only build says it has no CUDA.
TEST(CudaStream, DeviceTimerRefusesTheHost) { EXPECT_THROW(DeviceTimer timer(Device::cpu()), Error); }

}  // namespace
}  // namespace daedalus
