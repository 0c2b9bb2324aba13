// Data-parallel gradient averaging and ZeRO-1's two collectives.
//
// Stage 0: every rank ends with every averaged gradient. The all-reduce runs as its two halves, a
// reduce-scatter and an all-gather per bucket (as ring all-reduces do), over the same buckets as
// ZeRO-1, so both stages add every gradient in the same order: a ZeRO-1 run is bit-identical to
// its stage-0 twin.
//
// ZeRO-1 (stage 1): the same concatenation of tensors is cut into buckets whose sizes are multiples
// of the number of ranks (the last one padded with zeros), and every bucket into one shard per
// rank: rank r owns shard r of each bucket (ShardLayout). reduce_scatter_gradients leaves the
// averaged gradient on the elements a rank owns (one reduce-scatter per bucket); the rank updates
// those elements; all_gather_shards then sends every rank's owned elements to every rank (one
// all-gather per bucket), so each rank again holds the whole updated tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "autograd/tensor.h"
#include "parallel/communicator.h"

namespace daedalus::parallel {

struct GradSyncStats {
  int64_t calls = 0;  // collective calls made (== buckets)
  int64_t bytes = 0;  // bytes each rank hands to the collectives (sum over buckets, padding included)
};

// grads: defined, contiguous fp32 tensors, all on one device, in the same order and shapes on
// every rank of `comm`. Their elements are concatenated in list order and cut into the buckets of
// ShardLayout(numels, comm.size(), bucket_bytes) (a tensor may straddle two buckets); each bucket is
// reduce-scattered and all-gathered, so calls == 2 x buckets. Every rank runs the same sequence of
// calls: the result is deterministic for a given backend. Each gradient becomes sum over ranks /
// comm.size().
GradSyncStats all_reduce_gradients(Communicator& comm, const std::vector<Tensor>& grads,
                                   int64_t bucket_bytes = int64_t{32} << 20);

// An element range [begin, end) of one tensor (its row-major flattening).
using ElementRange = std::pair<int64_t, int64_t>;

// ZeRO-1's partition of tensors of `numels` elements (in list order) over `ranks` ranks.
struct ShardLayout {
  struct Bucket {
    int64_t begin = 0;  // first element of the concatenation in this bucket
    int64_t size = 0;   // elements in it (the last bucket may be short)
    int64_t shard = 0;  // elements per rank: ceil(size / ranks); the bucket is padded to shard * ranks
  };
  int ranks = 1;
  std::vector<int64_t> numels;
  std::vector<Bucket> buckets;

  // Buckets of bucket_bytes / 4 elements rounded down to a multiple of `ranks` (at least `ranks`).
  ShardLayout(std::vector<int64_t> numels, int ranks, int64_t bucket_bytes = int64_t{32} << 20);
  // The element ranges of tensor `index` that `rank` owns, in order (empty when it owns none of it;
  // a tensor straddling buckets may give one range per bucket).
  std::vector<ElementRange> owned(size_t index, int rank) const;
  int64_t owned_elements(int rank) const;  // over all tensors
};

// The numels of `tensors`, in order (the argument ShardLayout takes).
std::vector<int64_t> numels_of(const std::vector<Tensor>& tensors);

// grads as for all_reduce_gradients, laid out by `layout` (layout.numels their numels, layout.ranks
// comm.size()). After the call every element `comm.rank()` owns holds sum over ranks / comm.size();
// the other elements are left as they were (this rank's own partial sums).
GradSyncStats reduce_scatter_gradients(Communicator& comm, const std::vector<Tensor>& grads, const ShardLayout& layout);

// One bucket of reduce_scatter_gradients on its own: the constructor copies the bucket's elements
// of `grads` into a buffer of its own (zero-padded to shard x ranks) and starts its reduce-scatter
// (Communicator::start_reduce_scatter); finish() waits for it and writes the mean into the
// elements this rank owns. Only the gradients the bucket touches are read or written, so the
// others may still be undefined (or still accumulating) when a bucket starts: what the overlapped
// reduction (parallel/grad_overlap.h) relies on. Each bucket adds in the order the blocking
// reduce_scatter_gradients does (it is made of these), whatever order buckets start in.
class BucketReduceScatter {
 public:
  BucketReduceScatter(Communicator& comm, const std::vector<Tensor>& grads, const ShardLayout& layout, size_t bucket);
  ~BucketReduceScatter();
  BucketReduceScatter(const BucketReduceScatter&) = delete;
  BucketReduceScatter& operator=(const BucketReduceScatter&) = delete;

  bool test();  // Work::test: lets the collective progress; true once complete
  void finish(const std::vector<Tensor>& grads);
  int64_t bytes() const { return bytes_; }  // this rank's input to the collective (padding included)

 private:
  Communicator& comm_;
  const ShardLayout& layout_;
  size_t bucket_;
  Tensor in_, out_;
  int64_t bytes_ = 0;
  std::unique_ptr<Work> work_;
};

// tensors: contiguous, of one dtype, on one device, laid out by `layout`. Every element takes the
// value it has on the rank that owns it.
GradSyncStats all_gather_shards(Communicator& comm, const std::vector<Tensor>& tensors, const ShardLayout& layout);

}  // namespace daedalus::parallel
