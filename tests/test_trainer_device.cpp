// train.device: which device a run gets (run_device) and the process groups it communicates over
// (make_run_groups). Runs everywhere: without a GPU, cuda is refused naming the key.
#include <gtest/gtest.h>

#include <string>

#include "autograd/check.h"
#include "parallel/communicator.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

TEST(TrainerDevice, CpuAndAutoStayOnTheHost) {
  EXPECT_EQ(run_device(DeviceChoice::cpu, 3), Device::cpu());
  // auto: the CPU until the GPU path is verified on a GPU (docs/gpu.md).
  EXPECT_EQ(run_device(DeviceChoice::automatic, 0), Device::cpu());
}

TEST(TrainerDevice, CudaPicksLocalRankModuloDevicesOrSaysWhyNot) {
  const int count = cuda_built() ? cuda_device_count() : 0;
  if (count > 0) {
    EXPECT_EQ(run_device(DeviceChoice::cuda, 0), Device::cuda(0));
    EXPECT_EQ(run_device(DeviceChoice::cuda, count + 1), Device::cuda(1 % count));
    return;
  }
  try {
    run_device(DeviceChoice::cuda, 0);
    FAIL() << "train.device: cuda accepted without a device";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("train.device: cuda"), std::string::npos) << e.what();
  }
}

TEST(TrainerDevice, CpuRunsCommunicateOverMpi) {
  RunConfig config;
  config.train.device = DeviceChoice::cpu;
  const parallel::ProcessGroups groups = make_run_groups(config, parallel::mpi_world());
  EXPECT_EQ(groups.world->backend(), "mpi");
  EXPECT_EQ(groups.device, Device::cpu());
}

TEST(TrainerDevice, CudaRunsCommunicateOverStagedNccl) {
  if (!cuda_built() || cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible on this machine";
  RunConfig config;
  config.train.device = DeviceChoice::cuda;
  const parallel::ProcessGroups groups = make_run_groups(config, parallel::mpi_world());
  EXPECT_EQ(groups.world->backend(), "nccl");
  EXPECT_EQ(groups.device, Device::cuda(0));
  Tensor flag = Tensor::from_vector<int32_t>({7}, {1});  // a host control value, as the trainer sends
  groups.world->all_reduce(flag, parallel::ReduceOp::max);
  EXPECT_EQ(flag.to_vector<int32_t>()[0], 7);
}

}  // namespace
}  // namespace daedalus::train
