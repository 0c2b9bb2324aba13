// ZeRO-1 (parallel.zero_stage: 1): which rank owns which shard of which parameter, and the
// collectives around the sharded AdamW step.
//
// Each parameter's data-parallel group: the pipeline stage's ranks (the world without stages) for
// the dense weights (every rank of the stage holds them),
// the replica group for the routed experts (the ranks holding the same expert slice). Within a
// group, the parameters' elements are concatenated in the optimizer's order and cut into buckets,
// each bucket into one equal shard per rank (parallel::ShardLayout): rank r updates shard r of
// every bucket, and keeps AdamW's moments only for those elements (1/DP of stage 0's).
//
// One step: the accumulated full gradients are reduce-scattered per bucket (the mean over the
// group lands on the owned elements), the global gradient norm is the square root of the
// world-sum of every rank's owned squares (each element counted once), AdamW updates the owned
// elements of the weights, and the updated weights are all-gathered so that every rank again holds
// every weight it computes with. Daedalus's modules read the FP32 master weights directly (each
// GEMM quantizes from them), so the compute copy every rank holds IS the FP32 master: the
// all-gather moves FP32, and a rank's "master shard" is its shard of that one copy.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/grad_overlap.h"
#include "parallel/grad_sync.h"
#include "train/optimizer.h"

namespace daedalus::train {

struct ZeroStats {
  int64_t reduce_scatter_bytes = 0;  // this step, this rank's input to the reduce-scatters
  int64_t all_gather_bytes = 0;      // this step, this rank's input to the all-gathers
};

class ZeroShards {
 public:
  // Sets `owned` and `sharded` on every param (`expert[i]`: params[i] is a routed-expert stack,
  // sharded over groups.replicas; the others over groups.stage). Every rank of a stage passes the
  // same list.
  ZeroShards(std::vector<Param>& params, const std::vector<bool>& expert, const parallel::ProcessGroups& groups,
             int64_t bucket_bytes = int64_t{32} << 20);

  // After backward: each param's owned gradient elements become the group mean (experts also
  // divided by ep_size, as stage 0's sync does). Undefined gradients are zeros first.
  // `started` (parallel.overlap_grad_reduce): the reduce-scatters begun during backward over
  // overlap_groups(); they are finished instead of run here, with the same result.
  void reduce_scatter_gradients(const std::vector<Param>& params, Device device,
                                parallel::OverlappedGradSync* started = nullptr);
  // The two groups (dense, then experts when there are any) with this object's layouts, for
  // parallel::OverlappedGradSync; `held` per param as OverlapGroup::held.
  std::vector<parallel::OverlapGroup> overlap_groups(const std::vector<Param>& params,
                                                     const std::vector<bool>& held) const;
  // After the step: every weight element takes its owner's value.
  void all_gather_weights(const std::vector<Param>& params);
  // The squared-norm reduction for AdamW::grad_norm: a sum over the world (every stage's owned
  // elements, each once).
  double sum_over_world(double owned_sq) const;  // parallel::sum_in_rank_order

  const ZeroStats& stats() const { return stats_; }

 private:
  struct Group {
    parallel::Communicator* comm = nullptr;
    std::vector<size_t> members;  // indices into params
    std::unique_ptr<parallel::ShardLayout> layout;
  };
  std::vector<Tensor> grads_of(const Group& g, const std::vector<Param>& params) const;

  parallel::ProcessGroups groups_;
  Group dense_, experts_;
  ZeroStats stats_;
};

}  // namespace daedalus::train
