// The step's gradient synchronization across data-parallel ranks: the shared embedding's sum over
// the first and last pipeline stage, then the bucketed reduce-scatter / all-gather of the dense
// gradients over the stage and of the routed experts' over their replicas (parallel/grad_sync.h),
// or ZeRO-1's reduce-scatter (train/zero.h); with parallel.overlap_grad_reduce the reduce-scatters
// start during the step's last backward (parallel/grad_overlap.h) and are finished here.
#include "autograd/kernels/elementwise.h"
#include "autograd/nvtx.h"
#include "parallel/grad_overlap.h"
#include "parallel/grad_sync.h"
#include "train/trainer.h"
#include "train/zero.h"

namespace daedalus::train {

std::vector<bool> Trainer::held_gradients() const {
  // The pipeline's shared embedding is summed over the first and last stage (sync_gradients) before
  // its data-parallel mean: never final during backward.
  std::vector<bool> held(optimizer_->params().size(), false);
  if (shares_embedding())
    for (size_t i = 0; i < held.size(); ++i) held[i] = optimizer_->params()[i].name == "model.embed_tokens.weight";
  return held;
}

std::unique_ptr<parallel::OverlappedGradSync> Trainer::start_grad_sync() {
  if (!config_.parallel.overlap_grad_reduce || groups_.world->size() == 1) return nullptr;
  const std::vector<Param>& params = optimizer_->params();
  const std::vector<bool> held = held_gradients();
  if (zero_) return std::make_unique<parallel::OverlappedGradSync>(zero_->overlap_groups(params, held));
  // Stage 0: the groups and buckets of sync_gradients' blocking path (parallel::all_reduce_gradients
  // lays out each group's gradients with ShardLayout(numels, ranks, bucket bytes) as here).
  std::vector<parallel::OverlapGroup> groups;
  for (const bool expert : {false, true}) {
    parallel::Communicator* comm = expert ? groups_.replicas.get() : groups_.stage.get();
    if (!expert && comm->size() == 1) continue;  // as sync_gradients: no dense reduction
    parallel::OverlapGroup g;
    g.comm = comm;
    for (size_t i = 0; i < params.size(); ++i)
      if (expert_[i] == expert) {
        g.params.push_back(params[i].var);
        g.held.push_back(held[i]);
      }
    if (g.params.empty()) continue;
    auto& layout = expert ? expert_layout_ : dense_layout_;
    std::vector<int64_t> numels;
    for (const Var& v : g.params) numels.push_back(v.value().numel());
    if (!layout)
      layout = std::make_unique<parallel::ShardLayout>(numels, comm->size(), config_.parallel.grad_bucket_bytes());
    g.layout = layout.get();
    groups.push_back(std::move(g));
  }
  return std::make_unique<parallel::OverlappedGradSync>(std::move(groups));
}

void Trainer::sync_gradients(parallel::OverlappedGradSync* started) {
  if (shares_embedding()) {
    // Each rank's embedding gradient from its own samples: the first stage's lookups plus the last
    // stage's head and MTP lookups of the same samples, summed before the stage's mean below, so
    // both copies end with the whole gradient (and, updated alike, stay equal).
    const model::Parameter& e = model_->parameters().get("model.embed_tokens.weight");
    if (!e.var.grad().defined())
      e.var.slot()->accumulate("grad sync", Tensor::zeros(e.var.shape(), DType::f32, device_));
    groups_.embedding->all_reduce(e.var.grad());
  }
  if (zero_) return zero_->reduce_scatter_gradients(optimizer_->params(), device_, started);
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
  if (started != nullptr) {
    // The reduce-scatters started during backward (and the rest now); then each group's all-gather.
    started->finish();
    if (groups_.stage->size() > 1) parallel::all_gather_shards(*groups_.stage, dense, *dense_layout_);
    if (!experts.empty()) parallel::all_gather_shards(*groups_.replicas, experts, *expert_layout_);
  } else {
    const int64_t bucket = config_.parallel.grad_bucket_bytes();
    if (groups_.stage->size() > 1) parallel::all_reduce_gradients(*groups_.stage, dense, bucket);
    if (!experts.empty()) parallel::all_reduce_gradients(*groups_.replicas, experts, bucket);
  }
  if (experts.empty()) return;
  // An expert's gradient already sums its whole EP group's tokens; averaging over replicas leaves
  // a factor ep_size against the world mean the dense weights get.
  if (groups_.ep_size > 1)
    for (Tensor g : experts) g.copy_(kernels::affine(g, 1.0 / double(groups_.ep_size)));
}

}  // namespace daedalus::train
