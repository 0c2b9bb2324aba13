// The loader under real ranks: every rank builds the same in-memory source and a Loader with its
// own rank and world; rank 0 gathers every rank's slice and checks that, in rank order, it is the
// batch a world-size-1 loader produces, before and after resuming at another consumed count.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "autograd/check.h"
#include "data/loader.h"
#include "tests/memory_source.h"
#include "tests/mpi/mpi_testing.h"

namespace daedalus::data {
namespace {

constexpr int64_t kSeqLen = 32, kGlobalBatch = 12;  // 12 is divisible by 2, 3 and 4 ranks

LoaderOptions options(int r, int w, bool shuffle) {
  LoaderOptions o;
  o.seq_len = kSeqLen;
  o.global_batch = kGlobalBatch;
  o.rank = r;
  o.world = w;
  o.shuffle = shuffle;
  return o;
}

// Gathers `steps` batches from every rank onto rank 0 and compares them (inputs and targets) with
// a world-size-1 loader started at the same consumed count. Every rank makes the same MPI calls;
// only rank 0 asserts, with EXPECT so that no rank leaves the collective sequence early.
void check_steps(const TokenSource& source, int64_t consumed, int steps, bool shuffle) {
  Loader mine(source, options(testing::world_rank(), testing::world_size(), shuffle));
  mine.set_consumed_samples(consumed);
  Loader single(source, options(0, 1, shuffle));
  single.set_consumed_samples(consumed);
  const size_t local = size_t(mine.local_batch() * kSeqLen), global = size_t(kGlobalBatch * kSeqLen);
  for (int s = 0; s < steps; ++s) {
    const Batch batch = mine.next();
    std::vector<int64_t> inputs(testing::world_rank() == 0 ? global : 0),
        targets(testing::world_rank() == 0 ? global : 0);
    DAEDALUS_MPI_CHECK(MPI_Gather(batch.inputs.data<int64_t>(), int(local), MPI_INT64_T, inputs.data(), int(local),
                                  MPI_INT64_T, 0, MPI_COMM_WORLD));
    DAEDALUS_MPI_CHECK(MPI_Gather(batch.targets.data<int64_t>(), int(local), MPI_INT64_T, targets.data(), int(local),
                                  MPI_INT64_T, 0, MPI_COMM_WORLD));
    if (testing::world_rank() != 0) continue;
    const Batch reference = single.next();
    EXPECT_EQ(inputs, reference.inputs.to_vector<int64_t>())
        << "world " << testing::world_size() << " consumed " << consumed << " step " << s;
    EXPECT_EQ(targets, reference.targets.to_vector<int64_t>()) << "world " << testing::world_size() << " step " << s;
  }
  EXPECT_EQ(mine.consumed_samples(), consumed + steps * kGlobalBatch);
}

TEST(MpiLoader, GatheredRankSlicesEqualTheWorldSizeOneBatch) {
  const testing::CyclicSource source(20000);  // 624 windows of 32 + 1 tokens
  check_steps(source, /*consumed=*/0, /*steps=*/4, /*shuffle=*/true);
}

TEST(MpiLoader, ResumedAtAnotherConsumedCountContinuesTheSameStream) {
  const testing::CyclicSource source(20000);
  check_steps(source, /*consumed=*/7 * kGlobalBatch, /*steps=*/3, /*shuffle=*/true);
  // Past the first epoch (624 samples), where the permutation changes.
  check_steps(source, /*consumed=*/52 * kGlobalBatch, /*steps=*/3, /*shuffle=*/true);
}

TEST(MpiLoader, ValidationOrderIsTheSameAtEveryWorldSize) {
  const testing::CyclicSource source(20000);
  check_steps(source, /*consumed=*/0, /*steps=*/2, /*shuffle=*/false);
}

}  // namespace
}  // namespace daedalus::data
