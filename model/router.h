// DeepSeek-V3's MoE router (`mlp.gate`): sigmoid affinities, group-limited top-k selection on
// the bias-corrected scores, gate weights from the unbiased scores; and the two balancing
// mechanisms — the auxiliary-loss-free bias update and the sequence-wise auxiliary loss.
//
//   logits = x · gate.weightᵀ                      [N, E] fp32 (the router stays in FP32)
//   s      = sigmoid(logits)   (softmax for scoring_func: softmax)
//   choice = s + e_score_correction_bias           selection only; never in a gradient
//   groups : E experts in n_group groups; group score = sum of its two best `choice` values;
//            the topk_group best groups stay, the others are masked to -inf
//   ids    = top-k of the masked choice            [N, k] (ties: lower expert id)
//   gates  = s[ids] / (Σ_k s[ids] + 1e-20) if norm_topk_prob, then × routed_scaling_factor
//
// Balancing (DeepSeek-V3 §2.1.2):
//   bias update, once per optimizer step:  b_i += γ · sign(mean_j load_j − load_i), load counted
//     over every micro-batch of the step (and every rank);
//   sequence-wise auxiliary loss, per sequence of T tokens, averaged over sequences:
//     L = α Σ_i f_i P_i,  f_i = E / (k T) · #{t : i ∈ ids_t},  P_i = 1/T Σ_t s_{i,t} / Σ_j s_{j,t}.
// Capacity (moe.capacity_factor = c): each expert keeps its ceil(c · N · k / E) highest-gated
// (token, slot) pairs of the micro-batch and the others are dropped (gate 0, not computed).
//
// Where it runs: on x's device. Selection, gates, the expert order and capacity drops are device
// kernels (autograd/kernels/moe_routing.h); the host waits once per forward, for the 2·E expert
// counts that the grouped expert GEMMs and the load statistics need.
#pragma once

#include <optional>
#include <vector>

#include "autograd/kernels/moe_routing.h"
#include "model/config.h"
#include "model/linear.h"

namespace daedalus::model {

struct Routing {
  Tensor expert_ids;         // [N, k] int64 on x's device, global expert ids, per token in descending choice order
  Var gates;                 // [N, k] fp32 combine weights (0 for dropped pairs); differentiable
  Var scores;                // [N, E] fp32 unbiased affinities s; differentiable
  kernels::ExpertOrder order;  // the kept pairs grouped by expert, kept mask [N, k], load [E] (host), offsets
};

// The router's reference selection, on the host: scores [N, E] fp32, bias [E] fp32 -> ids [N, k]
// int64 by partial sorts in double. Training routes with kernels::group_limited_topk (the same rule,
// on the scores' device); tests hold the two equal bit for bit.
Tensor select_experts(const Tensor& scores, const Tensor& bias, const ModelConfig& config);

class Router {
 public:
  Router() = default;
  // Registers <module>.weight [E, D] and the buffer <module>.e_score_correction_bias [E].
  Router(const BuildContext& ctx, const ModelConfig& config, const MoeConfig& moe, const std::string& module);

  // x [N, D] fp32 -> the routing of its N tokens.
  Routing forward(const Var& x) const;
  // The sequence-wise auxiliary loss of a routing over `batch` sequences of `seq` tokens each
  // (N = batch · seq), fp32 scalar; 0 when α = 0.
  Var seq_aux_loss(const Routing& routing, int64_t batch, int64_t seq) const;
  // b_i += γ · sign(mean − load_i) with `load` [E] counted over the whole step.
  void update_bias(const std::vector<int64_t>& load);

  const Var& weight() const { return weight_; }
  const Var& bias() const { return bias_; }
  double aux_loss_alpha() const { return moe_.seq_aux_loss_alpha; }
  // Finite-difference tests: route by these ids [N, k] instead of selecting (the gates still
  // follow the scores), so a perturbation cannot flip the selection. nullopt restores routing.
  void fix_selection(std::optional<Tensor> ids) { fixed_ids_ = std::move(ids); }
  // The ids of the last forward (what fix_selection takes to freeze it).
  const Tensor& last_selection() const { return last_ids_; }

 private:
  ModelConfig config_;
  MoeConfig moe_;
  Var weight_, bias_;
  std::optional<Tensor> fixed_ids_;
  mutable Tensor last_ids_;
};

}  // namespace daedalus::model
