// The NCCL backend in one process: backend resolution and the no-device message run everywhere;
// a world of one on one GPU, several ranks over several GPUs (one thread each), and the timeout
// that aborts a communicator whose peer never joins run where devices exist (scripts/gpu-check).
// NCCL refuses two ranks of one communicator on the same GPU ("Duplicate GPU detected"), so a
// single-GPU machine can only run the world of one.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include "autograd/check.h"
#include "autograd/kernels/elementwise.h"
#include "parallel/communicator.h"
#include "tests/collective_checks.h"

namespace daedalus::parallel {
namespace {

TEST(Nccl, BackendFollowsWhereTensorsLive) {
  EXPECT_EQ(resolve_backend("auto", Device::cpu()), "mpi");
  EXPECT_EQ(resolve_backend("auto", Device::cuda(0)), "nccl");
  EXPECT_EQ(resolve_backend("mpi", Device::cpu()), "mpi");
  EXPECT_EQ(resolve_backend("nccl", Device::cuda(1)), "nccl");
  for (auto [configured, device, expect] :
       {std::tuple{"nccl", Device::cpu(), "nccl moves CUDA tensors"},
        std::tuple{"mpi", Device::cuda(0), "mpi moves host buffers"}, std::tuple{"gloo", Device::cpu(), "'gloo'"}}) {
    try {
      resolve_backend(configured, device);
      ADD_FAILURE() << configured << " accepted for " << device.str();
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("parallel.backend"), std::string::npos) << msg;
      EXPECT_NE(msg.find(expect), std::string::npos) << msg;
    }
  }
}

TEST(Nccl, WorldWithoutADeviceSaysWhy) {
  if (cuda_built() && cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible";
  try {
    nccl_world(nullptr, 10);
    FAIL() << "an NCCL world without a device";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("built without CUDA") != std::string::npos || msg.find("0 visible") != std::string::npos)
        << msg;
  }
}

// Why a test needing `devices` GPUs cannot run here; empty when it can.
std::string missing(int devices) {
  if (!cuda_built()) return "built without CUDA";
  const int visible = cuda_device_count();
  if (visible < devices)
    return "needs " + std::to_string(devices) + " CUDA device(s), " + std::to_string(visible) + " visible";
  return "";
}
#define NEED_GPUS(n) \
  if (const std::string why = missing(n); !why.empty()) GTEST_SKIP() << why

TEST(NcclDevice, WorldOfOnePassesEveryCollective) {
  NEED_GPUS(1);
  auto world = nccl_world(nullptr, 60);
  EXPECT_EQ(world->backend(), "nccl");
  EXPECT_EQ(world->size(), 1);
  testing::check_collectives(*world, Device::cuda(0));
  try {
    world->all_reduce(Tensor::zeros({4}));
    FAIL() << "a host tensor accepted by NCCL";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("MPI backend for host tensors"), std::string::npos) << e.what();
  }
}

// A GPU run's world: host tensors (losses, loads, flags, dispatch counts) staged through the GPU,
// device tensors passed straight through; its splits stage too. The collectives of a world of one
// leave values as they are (sum over one rank), and all_to_all_v copies rows in order.
TEST(NcclDevice, HostStagingMovesHostAndDeviceTensors) {
  NEED_GPUS(1);
  auto world = with_host_staging(nccl_world(nullptr, 60), Device::cuda(0));
  EXPECT_EQ(world->backend(), "nccl");
  testing::check_collectives(*world, Device::cuda(0));
  testing::check_collectives(*world, Device::cpu());
  const Tensor host = Tensor::from_vector<int64_t>({3, -4, 5}, {3});
  world->all_reduce(host, ReduceOp::max);
  EXPECT_EQ(host.to_vector<int64_t>(), (std::vector<int64_t>{3, -4, 5}));
  const Tensor in = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2}), out = Tensor::empty({2, 2});
  world->split(0, 0)->all_to_all_v(in, {2}, out, {2});
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{1, 2, 3, 4}));
}

// Collectives go on the device's compute stream: an all_gather queued right after kernels that
// write its input gathers their result, with no synchronize in between (a world of one: out = in).
TEST(NcclDevice, CollectivesRunAfterTheKernelsBeforeThem) {
  NEED_GPUS(1);
  auto world = nccl_world(nullptr, 60);
  const Device gpu = Device::cuda(0);
  constexpr int64_t n = int64_t(1) << 24;
  const Tensor in = Tensor::zeros({n}, DType::f32, gpu), one = Tensor::ones({n}, DType::f32, gpu);
  const Tensor out = Tensor::zeros({n}, DType::f32, gpu);
  synchronize(gpu);
  for (int i = 0; i < 20; ++i) kernels::add_(in, one, 1.0);  // 64 MiB each: still running when queued
  world->all_gather(in, out);
  kernels::add_(out, one, 1.0);
  const std::vector<float> got = out.to(Device::cpu()).to_vector<float>();
  EXPECT_EQ(std::count(got.begin(), got.end(), 21.0f), n);
}

TEST(NcclDevice, RanksOnSeveralGpusPassEveryCollective) {
  NEED_GPUS(2);
  const int n = std::min(cuda_device_count(), 4);
  auto comms = nccl_local_group(n, 60);
  std::vector<std::thread> ranks;
  for (int i = 0; i < n; ++i)
    ranks.emplace_back([&, i] { testing::check_collectives(*comms[size_t(i)], Device::cuda(i)); });
  for (auto& t : ranks) t.join();
}

TEST(NcclDevice, APeerThatNeverJoinsTimesOutAndAborts) {
  NEED_GPUS(2);
  auto short_fuse = nccl_local_group(2, /*timeout_s=*/2);
  Tensor t = Tensor::ones({8}, DType::f32, Device::cuda(0));
  const auto start = std::chrono::steady_clock::now();
  try {
    short_fuse[0]->all_reduce(t);  // rank 1 never calls it
    FAIL() << "an all_reduce without its peer completed";
  } catch (const Error& e) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_NE(std::string(e.what()).find("not complete after 2 s"), std::string::npos) << e.what();
    EXPECT_GE(waited, 2.0);
    EXPECT_LT(waited, 10.0);
  }
  try {
    short_fuse[0]->barrier();
    FAIL() << "an aborted communicator accepted more work";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("aborted"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace daedalus::parallel
