// DeepSeekMoE layer: routing, grouped experts on one rank or across the EP group, shared experts.
#include "model/moe.h"

#include <algorithm>
#include <numeric>

#include "autograd/ops/activation.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/index.h"
#include "autograd/ops/shape.h"

namespace daedalus::model {

double ExpertLoad::max_over_mean() const {
  if (tokens.empty()) return 1.0;
  const double total = double(std::accumulate(tokens.begin(), tokens.end(), int64_t(0)));
  if (total == 0) return 1.0;
  return double(*std::max_element(tokens.begin(), tokens.end())) / (total / double(tokens.size()));
}

Moe::Moe(const BuildContext& ctx, const ModelConfig& config, const MoeConfig& moe, const std::string& module,
         const ExpertParallel& ep)
    : config_(config),
      module_(module),
      ep_(ep),
      router_(ctx, config, moe, module + ".gate"),
      recompute_(ctx.recompute) {
  const int64_t e = config.n_routed_experts, p = ep.size();
  DAEDALUS_CHECK(e % p == 0, "model.n_routed_experts: {} experts do not split over parallel.expert_parallel = {}", e,
                 p);
  const int64_t local = e / p, offset = ep.rank() * local;
  const int64_t d = config.hidden_size, f = config.moe_intermediate_size;
  gate_proj_ = GroupedLinear(ctx, module + ".experts.gate_proj", local, offset, e, d, f);
  up_proj_ = GroupedLinear(ctx, module + ".experts.up_proj", local, offset, e, d, f);
  down_proj_ = GroupedLinear(ctx, module + ".experts.down_proj", local, offset, e, f, d);
  if (config.n_shared_experts > 0)
    shared_ = std::make_unique<Mlp>(ctx, module + ".shared_experts", d, f * config.n_shared_experts);
  load_.tokens.assign(size_t(e), 0);
}

Var Moe::run_experts(const Var& grouped_rows, const std::vector<int64_t>& offsets) {
  const Var gate = gate_proj_.forward(grouped_rows, offsets), up = up_proj_.forward(grouped_rows, offsets);
  if (recompute_ != Recompute::selective || !grad_enabled()) return down_proj_.forward_swiglu(gate, up, offsets);
  return recompute(down_proj_.name() + ".recompute",
                   [this, offsets](const std::vector<Var>& in) {
                     return std::vector<Var>{down_proj_.forward_swiglu(in[0], in[1], offsets)};
                   },
                   {gate, up})[0];
}

// All experts here: the kept (token, slot) pairs in the router's expert order (by expert, then
// token, slot), gathered, run, and scatter-added back with their gates.
Var Moe::routed_local(const Var& rows, const Routing& routing) {
  const int64_t n = rows.value().size(0), k = config_.num_experts_per_tok;
  const kernels::ExpertOrder& order = routing.order;
  const Var out = run_experts(ops::gather_rows(rows, order.token), order.offsets);  // [R, D]
  const Var weight = ops::reshape(ops::gather_rows(ops::reshape(routing.gates, {n * k, 1}), order.pair), {-1});
  const Var zeros(Tensor::zeros({n, rows.value().size(1)}, DType::f32, rows.value().device()));
  return ops::scatter_add_rows(zeros, order.token, out, weight);
}

// Experts sharded over the EP group: dispatch, grouped experts on this rank's slice, combine.
// Capacity-dropped pairs still travel (their gate is 0).
Var Moe::routed_parallel(const Var& rows, const Routing& routing) {
  parallel::Communicator& group = *ep_.group;
  const parallel::DispatchPlan plan = parallel::plan_dispatch(group, routing.expert_ids, config_.n_routed_experts);
  if (grad_enabled()) load_.traffic.push_back(plan.stats);
  const Var grouped = parallel::dispatch(group, plan, rows, ep_.dispatch_dtype);
  const Var out = run_experts(grouped, plan.expert_offsets);
  return parallel::combine(group, plan, out, routing.gates, ep_.combine_dtype);
}

Var Moe::forward(const Var& x, std::vector<Var>* aux_losses) {
  const int64_t b = x.value().size(0), t = x.value().size(1), d = config_.hidden_size;
  const Var rows = ops::reshape(x, {b * t, d});
  const Routing routing = router_.forward(rows);
  if (grad_enabled()) {  // training forwards only: evaluation must not steer the bias update
    for (size_t i = 0; i < routing.order.load.size(); ++i) load_.tokens[i] += routing.order.load[i];
    load_.dropped += routing.order.dropped();
  }
  if (aux_losses != nullptr && router_.aux_loss_alpha() > 0) aux_losses->push_back(router_.seq_aux_loss(routing, b, t));

  Var y = ep_.size() > 1 ? routed_parallel(rows, routing) : routed_local(rows, routing);
  if (shared_) y = ops::add(y, shared_->forward(rows));
  return ops::reshape(y, {b, t, d});
}

void Moe::update_bias() {
  router_.update_bias(load_.tokens);
  std::fill(load_.tokens.begin(), load_.tokens.end(), 0);
  load_.dropped = 0;
  load_.traffic.clear();
}

}  // namespace daedalus::model
