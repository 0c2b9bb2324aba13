// ZeRO-1's shard ownership and its collectives around the AdamW step (see zero.h).
#include "train/zero.h"

#include "autograd/check.h"
#include "autograd/kernels/elementwise.h"

namespace daedalus::train {

ZeroShards::ZeroShards(std::vector<Param>& params, const std::vector<bool>& expert,
                       const parallel::ProcessGroups& groups, int64_t bucket_bytes)
    : groups_(groups) {
  DAEDALUS_CHECK(expert.size() == params.size(), "ZeroShards: {} expert flags for {} parameters", expert.size(),
                 params.size());
  dense_.comm = groups.stage.get();  // the world without pipeline stages
  experts_.comm = groups.replicas.get();
  for (size_t i = 0; i < params.size(); ++i) (expert[i] ? experts_ : dense_).members.push_back(i);
  for (Group* g : {&dense_, &experts_}) {
    std::vector<int64_t> numels;
    for (size_t i : g->members) numels.push_back(params[i].var.value().numel());
    g->layout = std::make_unique<parallel::ShardLayout>(numels, g->comm->size(), bucket_bytes);
    for (size_t k = 0; k < g->members.size(); ++k) {
      Param& p = params[g->members[k]];
      p.owned = g->layout->owned(k, g->comm->rank());
      p.sharded = true;  // every element is owned by exactly one rank of its stage (experts: per EP slice)
    }
  }
}

std::vector<Tensor> ZeroShards::grads_of(const Group& g, const std::vector<Param>& params) const {
  std::vector<Tensor> grads;
  for (size_t i : g.members) grads.push_back(params[i].var.grad());
  return grads;
}

std::vector<parallel::OverlapGroup> ZeroShards::overlap_groups(const std::vector<Param>& params,
                                                               const std::vector<bool>& held) const {
  std::vector<parallel::OverlapGroup> out;
  for (const Group* g : {&dense_, &experts_}) {
    if (g == &experts_ && g->members.empty()) continue;  // as reduce_scatter_gradients
    parallel::OverlapGroup o;
    o.comm = g->comm;
    o.layout = g->layout.get();
    for (size_t i : g->members) {
      o.params.push_back(params[i].var);
      o.held.push_back(held[i]);
    }
    out.push_back(std::move(o));
  }
  return out;
}

void ZeroShards::reduce_scatter_gradients(const std::vector<Param>& params, Device device,
                                          parallel::OverlappedGradSync* started) {
  for (const Param& p : params)
    if (!p.var.grad().defined())
      p.var.slot()->accumulate("grad sync", Tensor::zeros(p.var.shape(), DType::f32, device));
  stats_ = ZeroStats{};
  if (started != nullptr) {
    for (const parallel::GradSyncStats& s : started->finish()) stats_.reduce_scatter_bytes += s.bytes;
  } else {
    stats_.reduce_scatter_bytes +=
        parallel::reduce_scatter_gradients(*dense_.comm, grads_of(dense_, params), *dense_.layout).bytes;
    if (!experts_.members.empty())
      stats_.reduce_scatter_bytes +=
          parallel::reduce_scatter_gradients(*experts_.comm, grads_of(experts_, params), *experts_.layout).bytes;
  }
  if (experts_.members.empty()) return;
  // An expert's gradient already sums its whole EP group's tokens; the mean over replicas leaves a
  // factor ep_size against the world mean the dense weights get (as stage 0's sync_gradients).
  if (groups_.ep_size == 1) return;
  for (size_t i : experts_.members) {
    const Tensor flat = params[i].var.grad().view({-1});
    for (const auto& [b, e] : *params[i].owned) {
      Tensor piece = flat.slice(0, b, e);
      piece.copy_(kernels::affine(piece, 1.0 / double(groups_.ep_size)));
    }
  }
}

void ZeroShards::all_gather_weights(const std::vector<Param>& params) {
  for (Group* g : {&dense_, &experts_}) {
    if (g->members.empty()) continue;
    std::vector<Tensor> weights;
    for (size_t i : g->members) weights.push_back(params[i].var.value());
    stats_.all_gather_bytes += parallel::all_gather_shards(*g->comm, weights, *g->layout).bytes;
  }
}

double ZeroShards::sum_over_world(double owned_sq) const {
  return parallel::sum_in_rank_order(*groups_.world, owned_sq);
}

}  // namespace daedalus::train
