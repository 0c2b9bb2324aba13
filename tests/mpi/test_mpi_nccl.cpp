// The collective checks under mpirun: over MPI (runs everywhere, and proves the checks themselves)
// and over NCCL bootstrapped from MPI (ncclUniqueId broadcast by rank 0, GPU = node-local rank),
// which runs only where every rank on a node has its own GPU (NCCL refuses two ranks on one).
#include <gtest/gtest.h>

#include <vector>

#include "autograd/tensor.h"
#include "parallel/communicator.h"
#include "tests/collective_checks.h"

namespace daedalus::parallel {
namespace {

TEST(MpiCollectives, MpiBackendPassesEveryCollective) { testing::check_collectives(*mpi_world(), Device::cpu()); }

TEST(MpiCollectives, NodeLocalRanksAreDistinctPerNode) {
  auto world = mpi_world();
  const int local = node_local_rank(*world);
  Tensor all = Tensor::empty({world->size()}, DType::i64);
  world->all_gather(Tensor::full({1}, double(local), DType::i64), all);
  // Ranks of one node get 0..k-1 in world order. Under ctest every rank shares this machine.
  std::vector<double> seen = all.to_doubles(), expect(seen.size());
  for (size_t i = 0; i < expect.size(); ++i) expect[i] = double(i);
  EXPECT_EQ(seen, expect);
}

TEST(MpiCollectives, NcclBootstrappedFromMpiPassesEveryCollective) {
  auto world = mpi_world();
  const int local = node_local_rank(*world);
  // Skip on every rank alike: the largest node-local rank must have a GPU of its own.
  Tensor need = Tensor::full({1}, double(local + 1), DType::i64);
  world->all_reduce(need, ReduceOp::max);
  const int devices = cuda_built() ? cuda_device_count() : 0;
  Tensor have = Tensor::full({1}, double(devices), DType::i64);
  world->all_reduce(have, ReduceOp::sum);  // any rank without enough devices makes everyone skip
  if (devices < int(need.to_doubles()[0]) || have.to_doubles()[0] < double(devices) * world->size())
    GTEST_SKIP() << "needs " << need.to_doubles()[0] << " GPUs per node, " << devices << " visible";
  auto nccl = nccl_world(world, 60);
  EXPECT_EQ(nccl->backend(), "nccl");
  EXPECT_EQ(nccl->size(), world->size());
  EXPECT_EQ(nccl->rank(), world->rank());
  testing::check_collectives(*nccl, Device::cuda(local % devices));
}

}  // namespace
}  // namespace daedalus::parallel
