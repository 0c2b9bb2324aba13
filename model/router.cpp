// The MoE router: selection, gates, capacity, balancing.
#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "autograd/ops/activation.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/index.h"
#include "autograd/ops/linear.h"
#include "autograd/ops/shape.h"
#include "autograd/ops/softmax.h"

namespace daedalus::model {

namespace {

// Indices of the k largest values of v (ties: lower index first), in descending order.
std::vector<int64_t> top_indices(const std::vector<double>& v, int64_t k) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
    return v[size_t(a)] > v[size_t(b)] || (v[size_t(a)] == v[size_t(b)] && a < b);
  });
  idx.resize(size_t(k));
  return idx;
}

}  // namespace

Tensor select_experts(const Tensor& scores, const Tensor& bias, const ModelConfig& c) {
  const int64_t n = scores.size(0), e = c.n_routed_experts, k = c.num_experts_per_tok;
  DAEDALUS_CHECK(scores.dim() == 2 && scores.size(1) == e && bias.numel() == e,
                 "router: scores {} and bias {} for {} experts", shape_str(scores.shape()), shape_str(bias.shape()), e);
  const std::vector<double> s = scores.to_doubles(), b = bias.to_doubles();
  const int64_t groups = c.n_group, per_group = e / groups;
  std::vector<int64_t> ids(size_t(n * k));
  std::vector<double> choice(static_cast<size_t>(e)), group_score(static_cast<size_t>(groups));
  constexpr double kMasked = -std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < e; ++i) choice[size_t(i)] = double(float(s[size_t(t * e + i)] + b[size_t(i)]));
    if (groups > 1) {
      for (int64_t g = 0; g < groups; ++g) {
        std::vector<double> members(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
        const std::vector<int64_t> best = top_indices(members, std::min<int64_t>(2, per_group));
        double sum = 0;
        for (int64_t j : best) sum += members[size_t(j)];
        group_score[size_t(g)] = sum;
      }
      const std::vector<int64_t> keep = top_indices(group_score, c.topk_group);
      std::vector<bool> kept(size_t(groups), false);
      for (int64_t g : keep) kept[size_t(g)] = true;
      for (int64_t i = 0; i < e; ++i)
        if (!kept[size_t(i / per_group)]) choice[size_t(i)] = kMasked;
    }
    const std::vector<int64_t> top = top_indices(choice, k);
    std::copy(top.begin(), top.end(), ids.begin() + t * k);
  }
  return Tensor::from_vector(ids, {n, k});
}

Router::Router(const BuildContext& ctx, const ModelConfig& config, const MoeConfig& moe, const std::string& module)
    : config_(config),
      moe_(moe),
      weight_(ctx.store->add(module + ".weight", {config.n_routed_experts, config.hidden_size}, Init::normal)),
      bias_(ctx.store->add_buffer(module + ".e_score_correction_bias", {config.n_routed_experts}, Init::zeros)) {}

Routing Router::forward(const Var& x) const {
  const ModelConfig& c = config_;
  const int64_t n = x.value().size(0), e = c.n_routed_experts, k = c.num_experts_per_tok;
  Routing r;
  const Var logits = ops::linear(ops::cast(x, DType::f32), weight_);  // [N, E] fp32
  r.scores = c.scoring_func == "softmax" ? ops::softmax(logits) : ops::sigmoid(logits);
  const Device device = r.scores.value().device();
  const routing::GroupLimit limit{.experts = e, .groups = c.n_group, .topk_group = c.topk_group, .k = k};
  r.expert_ids = fixed_ids_ ? fixed_ids_->to(device) : kernels::group_limited_topk(r.scores.value(), bias_.value(), limit);
  last_ids_ = r.expert_ids;

  Var gates = ops::take_along_last(r.scores, r.expert_ids);  // [N, k]
  if (c.norm_topk_prob) gates = ops::div(gates, ops::affine(ops::sum(gates, 1, /*keepdim=*/true), 1.0, 1e-20));
  gates = ops::affine(gates, c.routed_scaling_factor);

  // Each expert keeps its `capacity` highest-gated pairs (ties: lower pair index).
  const int64_t capacity =
      moe_.capacity_factor ? int64_t(std::ceil(*moe_.capacity_factor * double(n * k) / double(e))) : int64_t(-1);
  r.order = kernels::order_by_expert(r.expert_ids, e, gates.value(), capacity);
  if (r.order.dropped() > 0) gates = ops::mul(gates, Var(r.order.kept));
  r.gates = gates;
  return r;
}

Var Router::seq_aux_loss(const Routing& r, int64_t batch, int64_t seq) const {
  const int64_t e = config_.n_routed_experts, k = config_.num_experts_per_tok;
  DAEDALUS_CHECK(batch * seq == r.scores.value().size(0), "router: aux loss over {} x {} tokens of a {} routing", batch,
                 seq, shape_str(r.scores.shape()));
  // f [B, E]: E / (k T) times the number of the sequence's tokens that selected each expert.
  const Tensor f = kernels::expert_counts_per_sequence(r.expert_ids, seq, e, float(double(e) / double(k * seq)));
  // P [B, E]: the sequence's mean of the normalized affinities.
  const Var s_norm = ops::div(r.scores, ops::sum(r.scores, 1, /*keepdim=*/true));
  const Var p = ops::mean(ops::reshape(s_norm, {batch, seq, e}), 1);
  const Var fp = ops::mul(p, Var(f));
  return ops::affine(ops::sum_all(fp), moe_.seq_aux_loss_alpha / double(batch));
}

void Router::update_bias(const std::vector<int64_t>& load) {
  const int64_t e = config_.n_routed_experts;
  DAEDALUS_CHECK(int64_t(load.size()) == e, "router: bias update with {} loads for {} experts", load.size(), e);
  if (moe_.bias_update_rate == 0) return;
  const double mean = double(std::accumulate(load.begin(), load.end(), int64_t(0))) / double(e);
  Tensor b = bias_.value().to(Device::cpu()).contiguous();
  float* bp = b.data<float>();
  for (int64_t i = 0; i < e; ++i) {
    const double diff = mean - double(load[size_t(i)]);
    const double sign = diff > 0 ? 1.0 : (diff < 0 ? -1.0 : 0.0);
    bp[i] = float(double(bp[i]) + moe_.bias_update_rate * sign);
  }
  Tensor target = bias_.value();
  target.copy_(b);
}

}  // namespace daedalus::model
