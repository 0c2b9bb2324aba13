// DeepSeekMoE: a router, routed SwiGLU experts run as one grouped computation over the tokens
// sorted by expert, and always-on shared experts.
//
//   x [B, T, D] -> rows [N, D] -> routing (router.h)
//   one rank:  rows gathered in expert order (expert, token, slot)       [R, D]
//   EP ranks:  parallel::dispatch sends each row to the rank owning its expert, in the same order
//   h = down_proj(silu(gate_proj(h)) * up_proj(h))  per expert           grouped_linear × 3
//   y = Σ_slots gate · h  (scatter-add, or parallel::combine back to the source ranks)
//       + shared_experts(x)                                               [B, T, D] fp32
//
// Parameters (HF names, module = model.layers.L.mlp): gate.weight [E, D],
// gate.e_score_correction_bias [E], experts.{gate_proj,up_proj}.weight [E_local, F, D],
// experts.down_proj.weight [E_local, D, F] (stacked; this rank's slice of the E experts), and
// shared_experts.{gate,up,down}_proj.weight with F·n_shared_experts. The HF export unstacks
// experts into model.layers.L.mlp.experts.E.gate_proj.weight.
#pragma once

#include <memory>
#include <vector>

#include "model/mlp.h"
#include "model/router.h"
#include "parallel/dispatch.h"

namespace daedalus::model {

// Where the routed experts live: the EP group (nullptr or size 1: all experts on this rank) and
// the wire formats of dispatch and combine.
struct ExpertParallel {
  parallel::Communicator* group = nullptr;
  parallel::DispatchDtype dispatch_dtype = parallel::DispatchDtype::bf16;
  parallel::DispatchDtype combine_dtype = parallel::DispatchDtype::bf16;
  int size() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }
};

// Per-layer routing statistics accumulated since the last bias update.
struct ExpertLoad {
  std::vector<int64_t> tokens;   // [E] (token, slot) pairs routed to each expert
  int64_t dropped = 0;           // pairs dropped by the capacity limit
  double max_over_mean() const;  // load imbalance: max_i load_i / mean load (1 = perfect)
  // Expert-parallel traffic of the training forwards since then (shared with the backward
  // closures, which add their bytes and time when backward runs).
  std::vector<std::shared_ptr<parallel::DispatchStats>> traffic;
};

class Moe {
 public:
  Moe() = default;
  Moe(const BuildContext& ctx, const ModelConfig& config, const MoeConfig& moe, const std::string& module,
      const ExpertParallel& ep);

  // x [B, T, D] fp32 -> [B, T, D] fp32. Appends the sequence-wise aux loss (when α > 0) to
  // `aux_losses` and, when grad mode is on (training), counts the routing into load().
  Var forward(const Var& x, std::vector<Var>* aux_losses);

  Router& router() { return router_; }
  ExpertLoad& load() { return load_; }
  // Applies the bias update with load() (already summed over ranks by the caller) and resets it.
  void update_bias();
  std::vector<GroupedLinear*> experts() { return {&gate_proj_, &up_proj_, &down_proj_}; }
  Mlp* shared_experts() { return shared_ ? shared_.get() : nullptr; }

 private:
  Var routed_local(const Var& rows, const Routing& routing);
  Var routed_parallel(const Var& rows, const Routing& routing);
  Var run_experts(const Var& grouped_rows, const std::vector<int64_t>& offsets);

  ModelConfig config_;
  std::string module_;
  ExpertParallel ep_;
  Router router_;
  GroupedLinear gate_proj_, up_proj_, down_proj_;
  std::unique_ptr<Mlp> shared_;
  ExpertLoad load_;
  Recompute recompute_ = Recompute::none;  // selective: the experts' SwiGLU + down projection rerun
};

}  // namespace daedalus::model
