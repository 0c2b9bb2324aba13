// Seeded initialization is identical in every process: each rank draws the same tensors from the
// same seed, and rank-derived streams differ. This is what lets every rank initialize its own copy
// of the dense weights without a broadcast.
#include <gtest/gtest.h>
#include <mpi.h>

#include "autograd/check.h"
#include "autograd/generator.h"
#include "autograd/tensor.h"
#include "tests/mpi/mpi_testing.h"

namespace daedalus {
namespace {

TEST(MpiGenerator, SameSeedGivesBitIdenticalTensorsOnEveryRank) {
  Generator gen(1234);
  const Tensor w = Tensor::randn({129, 65}, gen, DType::f32);
  const std::vector<float> mine = w.to_vector<float>();
  std::vector<float> root = mine;
  DAEDALUS_MPI_CHECK(MPI_Bcast(root.data(), int(root.size()), MPI_FLOAT, 0, MPI_COMM_WORLD));
  ASSERT_EQ(mine.size(), root.size());
  for (size_t i = 0; i < mine.size(); ++i)
    ASSERT_EQ(mine[i], root[i]) << "rank " << testing::world_rank() << " element " << i;
}

TEST(MpiGenerator, RankOffsetStreamsDiffer) {
  // A per-rank stream (seed + rank) must differ from every other rank's: gather first values.
  Generator gen(99 + uint64_t(testing::world_rank()));
  float first = 0;
  gen.fill_normal(&first, 1, 0.0, 1.0);
  std::vector<float> all(static_cast<size_t>(testing::world_size()));
  DAEDALUS_MPI_CHECK(MPI_Allgather(&first, 1, MPI_FLOAT, all.data(), 1, MPI_FLOAT, MPI_COMM_WORLD));
  for (int i = 0; i < testing::world_size(); ++i)
    for (int j = i + 1; j < testing::world_size(); ++j)
      EXPECT_NE(all[size_t(i)], all[size_t(j)]) << "ranks " << i << ", " << j;
}

TEST(MpiGenerator, CheckMacroReportsMpiErrors) {
  // An invalid root is an MPI error; with MPI_ERRORS_RETURN the macro turns it into an exception
  // naming the statement instead of aborting the job.
  DAEDALUS_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  int value = 0;
  try {
    DAEDALUS_MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, testing::world_size() + 5, MPI_COMM_WORLD));
    FAIL() << "MPI_Bcast with an invalid root did not fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MPI error"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("MPI_Bcast"), std::string::npos) << e.what();
  }
  DAEDALUS_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL));
}

}  // namespace
}  // namespace daedalus
