// Multi-head Latent Attention, forward on the tape (backward comes from the ops).
#include "model/mla.h"

#include <cmath>

#include "autograd/ops/arithmetic.h"
#include "autograd/ops/attention.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/rope.h"
#include "autograd/ops/shape.h"

namespace daedalus::model {

namespace {
// The latent norms (q_a_layernorm, kv_a_layernorm) use a fixed epsilon whatever rms_norm_eps says,
// as DeepSeek-V3's reference code (RMSNorm's default) and HF transformers do.
constexpr double kLatentNormEps = 1e-6;
}  // namespace

Mla::Mla(const BuildContext& ctx, const ModelConfig& config, const std::string& module, kernels::RopeLayout rope_layout)
    : config_(config),
      module_(module),
      rope_layout_(rope_layout),
      rope_(rope_frequencies(config)),
      softmax_scale_(attention_softmax_scale(config)) {
  const int64_t d = config.hidden_size, h = config.num_attention_heads;
  if (config.q_lora_rank) {
    q_a_proj_ = Linear(ctx, module + ".q_a_proj", d, *config.q_lora_rank);
    q_a_layernorm_ = ctx.store->add(module + ".q_a_layernorm.weight", {*config.q_lora_rank}, Init::ones,
                                    /*weight_decay=*/false);
    q_b_proj_ = Linear(ctx, module + ".q_b_proj", *config.q_lora_rank, h * config.qk_head_dim());
  } else {
    q_proj_ = Linear(ctx, module + ".q_proj", d, h * config.qk_head_dim());
  }
  kv_a_proj_with_mqa_ = Linear(ctx, module + ".kv_a_proj_with_mqa", d, config.kv_lora_rank + config.qk_rope_head_dim);
  kv_a_layernorm_ =
      ctx.store->add(module + ".kv_a_layernorm.weight", {config.kv_lora_rank}, Init::ones, /*weight_decay=*/false);
  kv_b_proj_ =
      Linear(ctx, module + ".kv_b_proj", config.kv_lora_rank, h * (config.qk_nope_head_dim + config.v_head_dim));
  o_proj_ = Linear(ctx, module + ".o_proj", h * config.v_head_dim, d);
  core_dtype_ = ctx.recipes->for_module(module).high_precision_dtype();
}

std::vector<Linear*> Mla::linears() {
  std::vector<Linear*> out;
  if (config_.q_lora_rank) {
    out = {&q_a_proj_, &q_b_proj_};
  } else {
    out = {&q_proj_};
  }
  for (Linear* l : {&kv_a_proj_with_mqa_, &kv_b_proj_, &o_proj_}) out.push_back(l);
  return out;
}

Var Mla::forward(const Var& x, const Tensor& positions) {
  const ModelConfig& c = config_;
  DAEDALUS_CHECK(x.value().dim() == 3 && x.value().size(2) == c.hidden_size, "{}: input {}: expected [batch, seq, {}]",
                 module_, shape_str(x.shape()), c.hidden_size);
  const int64_t b = x.value().size(0), t = x.value().size(1), h = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim;

  Var q = c.q_lora_rank ? q_b_proj_.forward(ops::rms_norm(q_a_proj_.forward(x), q_a_layernorm_, kLatentNormEps))
                        : q_proj_.forward(x);
  std::vector<Var> q_parts = ops::split(ops::reshape(q, {b, t, h, nope + rope}), {nope, rope}, 3);
  const Var q_pe = ops::rope(q_parts[1], positions, rope_, rope_layout_);

  std::vector<Var> kv_a = ops::split(kv_a_proj_with_mqa_.forward(x), {c.kv_lora_rank, rope}, 2);
  const Var kv = kv_b_proj_.forward(ops::rms_norm(kv_a[0], kv_a_layernorm_, kLatentNormEps));
  std::vector<Var> kv_parts = ops::split(ops::reshape(kv, {b, t, h, nope + vd}), {nope, vd}, 3);
  const Var k_pe = ops::rope(ops::reshape(kv_a[1], {b, t, 1, rope}), positions, rope_, rope_layout_);

  // [B, T, H, Dqk] -> [B, H, T, Dqk] views for the attention core, in its dtype.
  const auto heads_first = [&](const Var& v) { return ops::cast(ops::transpose(v, 1, 2), core_dtype_); };
  const Var qh = heads_first(ops::concat({q_parts[0], q_pe}, 3));
  const Var kh = heads_first(ops::concat({kv_parts[0], ops::expand(k_pe, {b, t, h, rope})}, 3));
  const Var vh = heads_first(kv_parts[1]);
  const Var attn = ops::attention(qh, kh, vh, softmax_scale_, /*causal=*/true);  // [B, H, T, v] fp32
  return o_proj_.forward(ops::reshape(ops::transpose(attn, 1, 2), {b, t, h * vd}));
}

}  // namespace daedalus::model
