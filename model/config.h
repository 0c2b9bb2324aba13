// The model's hyperparameters: HuggingFace DeepseekV3Config's fields (CONTRACT.md `model:`), the
// MoE balancing settings (`moe:`) and the multi-token-prediction weight (`mtp:`).
//
// Defaults are DeepSeek-V3's released configuration (HF DeepseekV3Config defaults), so a key a
// config leaves out means what it means in HF. validate() runs the checks a model build needs and
// throws InputError naming the key (`model.num_attention_heads`, ...) and the conflicting values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "model/rope_scaling.h"

namespace daedalus::model {

struct ModelConfig {
  int64_t vocab_size = 129280;
  int64_t hidden_size = 7168;
  int64_t intermediate_size = 18432;     // dense MLP (the first first_k_dense_replace layers)
  int64_t moe_intermediate_size = 2048;  // each routed and shared expert
  int64_t num_hidden_layers = 61;
  int64_t first_k_dense_replace = 3;
  int64_t num_attention_heads = 128;
  std::optional<int64_t> q_lora_rank = 1536;  // nullopt (YAML null): a single q_proj
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;
  int64_t n_routed_experts = 256;  // 0: every layer is dense
  int64_t n_shared_experts = 1;
  int64_t num_experts_per_tok = 8;
  int64_t n_group = 8;
  int64_t topk_group = 4;
  double routed_scaling_factor = 2.5;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";  // sigmoid (V3) | softmax (V2)
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  double initializer_range = 0.02;
  int64_t num_nextn_predict_layers = 1;  // MTP depth; 0 = off
  std::optional<RopeScaling> rope_scaling;  // null: plain RoPE; YaRN otherwise (model/rope_scaling.h)

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const { return n_routed_experts > 0 && layer >= first_k_dense_replace; }
  // InputError naming `model.<key>` when a dimension does not fit.
  void validate() const;
};

struct MoeConfig {
  double bias_update_rate = 1e-3;         // aux-loss-free balancing step γ; 0 = off
  double seq_aux_loss_alpha = 1e-4;       // α of the sequence-wise auxiliary loss; 0 = off
  std::optional<double> capacity_factor;  // nullopt: dropless
  void validate() const;
};

struct MtpConfig {
  double loss_weight = 0.3;  // λ
  void validate() const;
};

}  // namespace daedalus::model
