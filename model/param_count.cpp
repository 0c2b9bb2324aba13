// Parameter arithmetic for a ModelConfig (mirrors what CausalLM registers; a test checks both).
#include "model/param_count.h"

namespace daedalus::model {

namespace {

struct Layer {
  int64_t total = 0, activated = 0;
};

Layer attention(const ModelConfig& c) {
  const int64_t d = c.hidden_size, h = c.num_attention_heads;
  int64_t n = 0;
  if (c.q_lora_rank) {
    n += d * *c.q_lora_rank + *c.q_lora_rank + *c.q_lora_rank * h * c.qk_head_dim();
  } else {
    n += d * h * c.qk_head_dim();
  }
  n += d * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank;
  n += c.kv_lora_rank * h * (c.qk_nope_head_dim + c.v_head_dim);
  n += h * c.v_head_dim * d;
  return {n, n};
}

Layer decoder_layer(const ModelConfig& c, int64_t index) {
  const int64_t d = c.hidden_size;
  Layer l = attention(c);
  l.total += 2 * d;  // input_layernorm, post_attention_layernorm
  l.activated += 2 * d;
  if (!c.is_moe_layer(index)) {
    const int64_t mlp = 3 * d * c.intermediate_size;
    l.total += mlp;
    l.activated += mlp;
    return l;
  }
  const int64_t expert = 3 * d * c.moe_intermediate_size;
  const int64_t router = c.n_routed_experts * d + c.n_routed_experts;  // weight + e_score_correction_bias
  l.total += router + (c.n_routed_experts + c.n_shared_experts) * expert;
  l.activated += router + (c.num_experts_per_tok + c.n_shared_experts) * expert;
  return l;
}

}  // namespace

LayerParameters layer_parameters(const ModelConfig& c, int64_t index) {
  const int64_t d = c.hidden_size;
  LayerParameters p;
  p.dense = attention(c).total + 2 * d;
  if (index >= c.num_hidden_layers) p.dense += 3 * d + 2 * d * d;  // MTP: enorm, hnorm, shared_head.norm, eh_proj
  if (!c.is_moe_layer(index)) {
    p.dense += 3 * d * c.intermediate_size;
    return p;
  }
  const int64_t expert = 3 * d * c.moe_intermediate_size;
  p.dense += c.n_routed_experts * d + c.n_shared_experts * expert;  // router weight, shared experts
  p.buffers = c.n_routed_experts;                                   // e_score_correction_bias
  p.routed = c.n_routed_experts * expert;
  return p;
}

ParameterCounts count_parameters(const ModelConfig& c) {
  ParameterCounts p;
  const int64_t d = c.hidden_size;
  p.embedding = c.vocab_size * d;
  const int64_t head = c.tie_word_embeddings ? 0 : c.vocab_size * d;
  p.total = p.embedding + d + head;  // embedding, model.norm, lm_head
  p.activated = d + c.vocab_size * d;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const Layer layer = decoder_layer(c, l);
    p.total += layer.total;
    p.activated += layer.activated;
  }
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const Layer layer = decoder_layer(c, c.num_hidden_layers + k);
    const int64_t module = 3 * d + 2 * d * d + layer.total;  // enorm, hnorm, shared_head.norm, eh_proj
    p.mtp_trained += module;
    p.mtp_activated += 3 * d + 2 * d * d + layer.activated;
    p.mtp += module + 2 * c.vocab_size * d;
  }
  return p;
}

double training_flops_per_token(const ModelConfig& c, int64_t seq_len) {
  const ParameterCounts p = count_parameters(c);
  const double weights = double(p.activated + p.mtp_activated);
  const double layers = double(c.num_hidden_layers + c.num_nextn_predict_layers);
  const double attention =
      3.0 * layers * double(c.num_attention_heads) * double(seq_len) * double(c.qk_head_dim() + c.v_head_dim);
  return 6.0 * weights + attention;
}

}  // namespace daedalus::model
