// The step's gradient synchronization across data-parallel ranks: the shared embedding's sum over
// the first and last pipeline stage, then the bucketed reduce-scatter / all-gather of the dense
// gradients over the stage and of the routed experts' over their replicas (parallel/grad_sync.h),
// or ZeRO-1's reduce-scatter (train/zero.h).
#include "autograd/kernels/elementwise.h"
#include "autograd/nvtx.h"
#include "parallel/grad_sync.h"
#include "train/trainer.h"
#include "train/zero.h"

namespace daedalus::train {

void Trainer::sync_gradients() {
  if (shares_embedding()) {
    // Each rank's embedding gradient from its own samples: the first stage's lookups plus the last
    // stage's head and MTP lookups of the same samples, summed before the stage's mean below, so
    // both copies end with the whole gradient (and, updated alike, stay equal).
    const model::Parameter& e = model_->parameters().get("model.embed_tokens.weight");
    if (!e.var.grad().defined())
      e.var.slot()->accumulate("grad sync", Tensor::zeros(e.var.shape(), DType::f32, device_));
    groups_.embedding->all_reduce(e.var.grad());
  }
  if (zero_) return zero_->reduce_scatter_gradients(optimizer_->params(), device_);
  if (groups_.world->size() == 1) return;
  const nvtx::Range range("sync_gradients");
  // Dense weights over the stage (the world without pipeline stages), routed experts over their
  // replicas: the same two groups and buckets as ZeRO-1's, so both ZeRO stages add in the same order.
  std::vector<Tensor> dense, experts;
  for (size_t i = 0; i < optimizer_->params().size(); ++i) {
    const Param& p = optimizer_->params()[i];
    if (!p.var.grad().defined())
      p.var.slot()->accumulate("grad sync", Tensor::zeros(p.var.shape(), DType::f32, device_));
    (expert_[i] ? experts : dense).push_back(p.var.grad());
  }
  if (groups_.stage->size() > 1) parallel::all_reduce_gradients(*groups_.stage, dense);
  if (experts.empty()) return;
  parallel::all_reduce_gradients(*groups_.replicas, experts);
  // An expert's gradient already sums its whole EP group's tokens; averaging over replicas leaves
  // a factor ep_size against the world mean the dense weights get.
  if (groups_.ep_size > 1)
    for (Tensor g : experts) g.copy_(kernels::affine(g, 1.0 / double(groups_.ep_size)));
}

}  // namespace daedalus::train
