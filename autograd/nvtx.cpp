// NVTX ranges (see nvtx.h); no-ops in a build without CUDA.
#include "autograd/nvtx.h"

#include <cstdint>

#include "autograd/host_sync.h"

#if DAEDALUS_WITH_CUDA
#include <nvtx3/nvToolsExt.h>
#endif

namespace daedalus::nvtx {

struct LayerRange::Backward {
  std::string name;
  uint64_t id = 0;  // nvtxRangeId_t of the open backward range; 0 = none open
  bool open = false;
};

namespace {

// Whether to put marker nodes on the tape for `v`: CUDA builds, CUDA tensors, gradients recorded.
bool marks(const Var& v) {
#if DAEDALUS_WITH_CUDA
  return v.defined() && v.requires_grad() && grad_enabled() && v.value().device().is_cuda();
#else
  (void)v;
  return false;
#endif
}

void start(LayerRange::Backward& b) {
#if DAEDALUS_WITH_CUDA
  if (b.open) nvtxRangeEnd(b.id);  // a second pass through the same layer: close the first
  b.id = nvtxRangeStartA(b.name.c_str());
  b.open = true;
#else
  (void)b;
#endif
}

void end(LayerRange::Backward& b) {
#if DAEDALUS_WITH_CUDA
  if (b.open) nvtxRangeEnd(b.id);
  b.open = false;
#else
  (void)b;
#endif
}

// y's value through an identity node whose backward first runs `action`.
template <typename Action>
Var identity_marker(const Var& y, Action action) {
  return record1("nvtx", {y}, y.value(), [action](const BackwardContext& ctx) {
    action();
    return std::vector<Tensor>{ctx.grad()};
  });
}

}  // namespace

Range::Range(const char* name) : labels_syncs_(host_sync_log_enabled()) {
  if (labels_syncs_) push_host_sync_context(name);
#if DAEDALUS_WITH_CUDA
  nvtxRangePushA(name);
#endif
}

Range::~Range() {
  if (labels_syncs_) pop_host_sync_context();
#if DAEDALUS_WITH_CUDA
  nvtxRangePop();
#endif
}

LayerRange::LayerRange(const std::string& name) : forward_(name) {
  backward_ = std::make_shared<Backward>();
  backward_->name = name + " backward";
}

LayerRange::~LayerRange() = default;

Var LayerRange::input(const Var& x) {
  if (!marks(x)) return x;
  const std::shared_ptr<Backward> b = backward_;
  return identity_marker(x, [b] { end(*b); });
}

Var LayerRange::output(const Var& y) {
  if (!marks(y)) return y;
  const std::shared_ptr<Backward> b = backward_;
  return identity_marker(y, [b] { start(*b); });
}

}  // namespace daedalus::nvtx
