// Build-time checks of the model hyperparameters; every message names the config key.
#include "model/config.h"

#include <tuple>

#include "autograd/check.h"

namespace daedalus::model {

namespace {

void positive(const char* key, int64_t v) { DAEDALUS_CHECK(v > 0, "model.{}: must be positive, got {}", key, v); }
void non_negative(const char* key, int64_t v) { DAEDALUS_CHECK(v >= 0, "model.{}: must be >= 0, got {}", key, v); }

// Sizes far past any real model (DeepSeek-V3: hidden 7168, vocab 129280, 256 experts, 61 layers)
// are typos (hidden_size: 1e9): named here, before anything is allocated.
void at_most(const char* key, int64_t v, int64_t limit) {
  DAEDALUS_CHECK(v <= limit, "model.{}: {} is beyond any model this trainer can build (at most {})", key, v, limit);
}

}  // namespace

void ModelConfig::validate() const {
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  non_negative("first_k_dense_replace", first_k_dense_replace);
  positive("num_attention_heads", num_attention_heads);
  if (q_lora_rank) positive("q_lora_rank", *q_lora_rank);
  positive("kv_lora_rank", kv_lora_rank);
  positive("qk_nope_head_dim", qk_nope_head_dim);
  positive("qk_rope_head_dim", qk_rope_head_dim);
  DAEDALUS_CHECK(qk_rope_head_dim % 2 == 0, "model.qk_rope_head_dim: RoPE rotates pairs, needs an even size, got {}",
                 qk_rope_head_dim);
  positive("v_head_dim", v_head_dim);
  non_negative("n_routed_experts", n_routed_experts);
  non_negative("n_shared_experts", n_shared_experts);
  positive("max_position_embeddings", max_position_embeddings);
  non_negative("num_nextn_predict_layers", num_nextn_predict_layers);
  DAEDALUS_CHECK(rms_norm_eps >= 0, "model.rms_norm_eps: must be >= 0, got {}", rms_norm_eps);
  DAEDALUS_CHECK(rope_theta > 0, "model.rope_theta: must be positive, got {}", rope_theta);
  DAEDALUS_CHECK(initializer_range > 0, "model.initializer_range: must be positive, got {}", initializer_range);
  DAEDALUS_CHECK(scoring_func == "sigmoid" || scoring_func == "softmax",
                 "model.scoring_func: expected sigmoid or softmax, got \"{}\"", scoring_func);
  if (rope_scaling) rope_scaling->validate();
  for (auto [key, value, limit] : {std::tuple<const char*, int64_t, int64_t>{"vocab_size", vocab_size, 1 << 24},
                                   {"hidden_size", hidden_size, 1 << 17},
                                   {"intermediate_size", intermediate_size, 1 << 20},
                                   {"moe_intermediate_size", moe_intermediate_size, 1 << 20},
                                   {"num_hidden_layers", num_hidden_layers, 1 << 12},
                                   {"num_attention_heads", num_attention_heads, 1 << 12},
                                   {"q_lora_rank", q_lora_rank.value_or(0), 1 << 17},
                                   {"kv_lora_rank", kv_lora_rank, 1 << 17},
                                   {"qk_nope_head_dim", qk_nope_head_dim, 1 << 14},
                                   {"qk_rope_head_dim", qk_rope_head_dim, 1 << 14},
                                   {"v_head_dim", v_head_dim, 1 << 14},
                                   {"n_routed_experts", n_routed_experts, 1 << 16},
                                   {"n_shared_experts", n_shared_experts, 1 << 10},
                                   {"n_group", n_group, 64},  // routing::kMaxGroups (one bit per group)
                                   {"max_position_embeddings", max_position_embeddings, int64_t(1) << 24},
                                   {"num_nextn_predict_layers", num_nextn_predict_layers, 1 << 6}})
    at_most(key, value, limit);
  if (n_routed_experts == 0) return;  // dense model: the MoE keys are unused
  positive("moe_intermediate_size", moe_intermediate_size);
  positive("num_experts_per_tok", num_experts_per_tok);
  positive("n_group", n_group);
  positive("topk_group", topk_group);
  DAEDALUS_CHECK(num_experts_per_tok <= n_routed_experts,
                 "model.num_experts_per_tok: {} experts per token but model.n_routed_experts is {}",
                 num_experts_per_tok, n_routed_experts);
  DAEDALUS_CHECK(n_routed_experts % n_group == 0, "model.n_group: {} groups do not divide model.n_routed_experts = {}",
                 n_group, n_routed_experts);
  DAEDALUS_CHECK(topk_group <= n_group, "model.topk_group: {} groups selected but model.n_group is {}", topk_group,
                 n_group);
  const int64_t per_group = n_routed_experts / n_group;
  DAEDALUS_CHECK(per_group >= 2 || n_group == 1,
                 "model.n_group: a group's score is the sum of its top-2 experts, but {} experts / {} groups leaves "
                 "{} per group",
                 n_routed_experts, n_group, per_group);
  DAEDALUS_CHECK(topk_group * per_group >= num_experts_per_tok,
                 "model.num_experts_per_tok: {} experts per token, but model.topk_group = {} groups of {} experts "
                 "offer only {}",
                 num_experts_per_tok, topk_group, per_group, topk_group * per_group);
  DAEDALUS_CHECK(routed_scaling_factor > 0, "model.routed_scaling_factor: must be positive, got {}",
                 routed_scaling_factor);
}

void MoeConfig::validate() const {
  DAEDALUS_CHECK(bias_update_rate >= 0, "moe.bias_update_rate: must be >= 0, got {}", bias_update_rate);
  DAEDALUS_CHECK(seq_aux_loss_alpha >= 0, "moe.seq_aux_loss_alpha: must be >= 0, got {}", seq_aux_loss_alpha);
  DAEDALUS_CHECK(!capacity_factor || *capacity_factor > 0, "moe.capacity_factor: must be positive or null, got {}",
                 capacity_factor.value_or(0));
}

void MtpConfig::validate() const {
  DAEDALUS_CHECK(loss_weight >= 0, "mtp.loss_weight: must be >= 0, got {}", loss_weight);
}

}  // namespace daedalus::model
