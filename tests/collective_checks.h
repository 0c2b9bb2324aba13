// Collective checks any Communicator must pass, for the backends' multi-rank tests (NCCL in one
// process over several GPUs, NCCL and MPI under mpirun). Every rank calls the same function; each
// computes the expected values for itself. Values are small integers and halves, exact in fp32 and
// bf16, so the order a backend adds in cannot matter.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "autograd/tensor.h"
#include "parallel/communicator.h"

namespace daedalus::testing {

// Runs all_reduce (sum, max; fp32, bf16, int64), broadcast, all_gather, reduce_scatter (sum, max;
// fp32, bf16), start_reduce_scatter and start_all_gather in flight together, a ragged all_to_all_v
// (rank r sends (r + s) % 3 rows to rank s, zero included, each row naming source, destination and
// index), a ring of point-to-point exchanges, barrier and split on `comm`, with tensors on `device`. Reports through
// EXPECT_*.
void check_collectives(parallel::Communicator& comm, Device device);

}  // namespace daedalus::testing
