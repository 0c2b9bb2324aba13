// A single process without mpirun is a world of size 1: its collectives are identities and
// process groups need ep_size 1.
#include <gtest/gtest.h>

#include <string>

#include "autograd/check.h"
#include "autograd/tensor.h"
#include "parallel/communicator.h"
#include "parallel/config_check.h"
#include "parallel/grad_sync.h"

namespace daedalus::parallel {
namespace {

#if DAEDALUS_MINIMAL
#define SKIP_WITHOUT_MPI() GTEST_SKIP() << "built with DAEDALUS_MINIMAL (no MPI)"
#else
#define SKIP_WITHOUT_MPI() (void)0
#endif

TEST(ParallelSingle, WorldOfOneHasIdentityCollectives) {
  SKIP_WITHOUT_MPI();
  auto world = mpi_world();
  EXPECT_EQ(world->size(), 1);
  EXPECT_EQ(world->rank(), 0);
  Tensor f = Tensor::from_vector<float>({1.5f, -2.0f}, {2});
  world->all_reduce(f);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{1.5f, -2.0f}));
  world->all_reduce(f, ReduceOp::max);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{1.5f, -2.0f}));
  Tensor b = Tensor::from_values({0.1}, {1}, DType::bf16);
  const double before = b.item();
  world->all_reduce(b);
  EXPECT_EQ(b.item(), before);
  world->broadcast(f, 0);
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{1.5f, -2.0f}));
  Tensor out = Tensor::empty({2});
  world->all_gather(f, out);
  EXPECT_EQ(out.to_vector<float>(), f.to_vector<float>());
  Tensor rows = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor back = Tensor::zeros({3, 2});
  world->all_to_all_v(rows, {3}, back, {3});
  EXPECT_EQ(back.to_vector<float>(), rows.to_vector<float>());
  world->barrier();
  std::vector<Tensor> grads = {Tensor::from_vector<float>({2.0f, 4.0f}, {2})};
  EXPECT_EQ(all_reduce_gradients(*world, grads).calls, 2);  // one reduce-scatter, one all-gather
  EXPECT_EQ(grads[0].to_vector<float>(), (std::vector<float>{2.0f, 4.0f}));
  EXPECT_NO_THROW(check_same_config(*world, "anything"));
}

TEST(ParallelSingle, ProcessGroupsNeedDivisibleWorld) {
  SKIP_WITHOUT_MPI();
  auto world = mpi_world();
  const ProcessGroups one = make_process_groups(world, 1);
  EXPECT_EQ(one.ep->size(), 1);
  EXPECT_EQ(one.replicas->size(), 1);
  try {
    make_process_groups(world, 2);
    FAIL() << "ep_size 2 accepted in a world of 1";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("world size 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expert-parallel size 2"), std::string::npos) << msg;
  }
}

TEST(ParallelSingle, CudaTensorsAreRefusedWithAHint) {
  SKIP_WITHOUT_MPI();
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  Tensor t = Tensor::zeros({4}, DType::f32, Device::cuda());
  try {
    mpi_world()->all_reduce(t);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("NCCL backend"), std::string::npos) << e.what();
  }
}

TEST(ParallelSingle, Fnv1aKnownValues) {
  // Published FNV-1a 64 test vectors.
  EXPECT_EQ(fnv1a_64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a_64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a_64("foobar"), 0x85944171f73967e8ull);
}

}  // namespace
}  // namespace daedalus::parallel
