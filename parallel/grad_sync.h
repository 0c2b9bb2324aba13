// Data-parallel gradient averaging: fp32 gradients packed into flat buckets, one all-reduce per
// bucket, divided by the number of ranks and unpacked in place.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/tensor.h"
#include "parallel/communicator.h"

namespace daedalus::parallel {

struct GradSyncStats {
  int64_t calls = 0;  // all_reduce calls made (== buckets)
  int64_t bytes = 0;  // gradient bytes reduced (sum over buckets)
};

// grads: defined, contiguous fp32 tensors, all on one device, in the same order and shapes on
// every rank of `comm`. Their elements are concatenated in list order and cut into buckets of
// bucket_bytes (a tensor may straddle two buckets), so calls == ceil(total bytes / bucket_bytes).
// Every rank runs the same sequence of calls: the result is deterministic for a given backend.
// Each gradient becomes sum over ranks / comm.size().
GradSyncStats all_reduce_gradients(Communicator& comm, const std::vector<Tensor>& grads,
                                   int64_t bucket_bytes = int64_t{32} << 20);

}  // namespace daedalus::parallel
