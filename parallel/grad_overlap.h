// Gradient reduction overlapped with backward (Megatron's overlap_grad_reduce, PyTorch DDP's
// bucket hooks): each bucket's reduce-scatter starts as soon as every gradient in it is final,
// while backward goes on through earlier layers.
//
// When a gradient is final: the tape knows, for every parameter, the first node that may add to
// its gradient (Tape::first_use: the first node taking it as an input, or the recompute() node
// whose function reads it); backward runs the nodes in reverse, so once that node has run nothing
// adds to the gradient any more. A bucket is final when all its parameters are. Only the backward
// that completes the step's accumulation is watched (the last micro-batch's; with 1F1B pipeline
// stages the last backward of the stage, which is the last micro-batch's too).
//
// Bit-identical to the blocking reduction (reduce_scatter_gradients): the buckets are the same
// ShardLayout's, each bucket holds the same final gradients and is reduced by the same collective
// (MPI's blocking reduce-scatter is the nonblocking one waited for), and each is averaged and
// written back alike. Only the order in which buckets START differs: last bucket first (the
// gradients of the last layers are final first); a bucket starts only after every later bucket of
// its group has, so every rank starts the collectives of one communicator in the same order, as MPI
// and NCCL require, whatever each rank's timing.
//
// Parameters marked `held` (the pipeline's shared embedding, which the first and last stage sum
// between them before the data-parallel mean) are never final during backward: their bucket, and
// every bucket before it, start in finish(), after the caller has done what they wait for.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/tape.h"
#include "parallel/grad_sync.h"

namespace daedalus::parallel {

// One data-parallel group's parameters, as reduce_scatter_gradients would reduce their gradients.
struct OverlapGroup {
  Communicator* comm = nullptr;
  std::vector<Var> params;              // the layout's tensors, in its order: their gradients are reduced
  const ShardLayout* layout = nullptr;  // layout->numels are the params' numels (kept alive by the caller)
  std::vector<bool> held;               // empty, or per param: not final before finish()
};

class OverlappedGradSync final : public BackwardObserver {
 public:
  explicit OverlappedGradSync(std::vector<OverlapGroup> groups);
  ~OverlappedGradSync() override;
  OverlappedGradSync(const OverlappedGradSync&) = delete;
  OverlappedGradSync& operator=(const OverlappedGradSync&) = delete;

  // BackwardObserver: begin() reads each parameter's first use from the tape; node_done() starts
  // the buckets that became final, lets started ones progress (Work::test) and finishes those
  // that are complete (mean written back, buffers released).
  void begin(const Tape& tape) override;
  void node_done(size_t index) override;
  void end() override;

  // After backward: starts every bucket not started yet (in the same order), then waits for each
  // not finished yet and writes the mean into the owned elements (what reduce_scatter_gradients
  // leaves). Stats per group, in the order given. Undefined gradients become zeros first, as in
  // the blocking path.
  std::vector<GradSyncStats> finish();

  int64_t started_in_backward() const { return started_in_backward_; }  // buckets started before finish()
  int64_t buckets() const;

 private:
  struct State;
  void start_ready(size_t group, size_t position);  // start buckets of `group` final at node `position`
  void start_bucket(size_t group);                  // the group's next bucket in start order
  void finish_bucket(size_t group, size_t bucket);  // wait, average, write back, release the buffers

  std::vector<OverlapGroup> groups_;
  std::vector<std::unique_ptr<State>> states_;
  int64_t started_in_backward_ = 0;
  bool observing_ = false;
};

}  // namespace daedalus::parallel
