// NVTX ranges, for profilers (Nsight Systems: `nsys profile daedalus train ...`): a scoped range on
// the host timeline, and a layer's range that also brackets its backward on the tape.
//
// Without CUDA at build time every call is a no-op. NVTX3 is header-only; with no profiler attached a
// range costs a function call. LayerRange marks the backward only for CUDA tensors that record a
// gradient, so CPU tapes are unchanged (not one node more).
#pragma once

#include <memory>
#include <string>

#include "autograd/tape.h"

namespace daedalus::nvtx {

// Pushes `name` on this thread's range stack for the scope's lifetime (and, while
// DAEDALUS_HOST_SYNC_LOG is on, on the stack that labels host syncs: autograd/host_sync.h).
class Range {
 public:
  explicit Range(const char* name);
  explicit Range(const std::string& name) : Range(name.c_str()) {}
  ~Range();
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;

 private:
  bool labels_syncs_ = false;  // pushed on the host-sync context: pop it at the end
};

// A layer's forward range ("<name>", this scope) and its backward range ("<name> backward"): the
// backward range opens when the gradient reaches the layer's output and closes when it has flowed
// back to the layer's input (a start/end pair, so it need not nest with other ranges):
//
//   Var Layer::forward(const Var& x_in) {
//     nvtx::LayerRange range(name_);
//     const Var x = range.input(x_in);      // backward: closes "<name> backward"
//     ...
//     return range.output(y);               // backward: opens "<name> backward"
//   }
class LayerRange {
 public:
  explicit LayerRange(const std::string& name);
  ~LayerRange();
  LayerRange(const LayerRange&) = delete;
  LayerRange& operator=(const LayerRange&) = delete;

  Var input(const Var& x);   // x itself, or x through an identity node (see above)
  Var output(const Var& y);  // y itself, or y through an identity node

  struct Backward;  // the backward range's name and id, shared by the two nodes

 private:
  Range forward_;
  std::shared_ptr<Backward> backward_;
};

}  // namespace daedalus::nvtx
