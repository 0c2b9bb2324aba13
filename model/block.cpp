// Pre-norm decoder layer.
#include "model/block.h"

#include "autograd/ops/arithmetic.h"
#include "autograd/ops/norm.h"

namespace daedalus::model {

DecoderLayer::DecoderLayer(const BuildContext& ctx, const ModelConfig& config, const MoeConfig& moe_config,
                           const std::string& module, bool moe, const BlockOptions& options)
    : eps_(config.rms_norm_eps),
      input_layernorm_(ctx.store->add(module + ".input_layernorm.weight", {config.hidden_size}, Init::ones,
                                      /*weight_decay=*/false)),
      post_attention_layernorm_(ctx.store->add(module + ".post_attention_layernorm.weight", {config.hidden_size},
                                               Init::ones, /*weight_decay=*/false)),
      attn_(ctx, config, module + ".self_attn", options.rope_layout) {
  if (moe) {
    moe_ = std::make_unique<Moe>(ctx, config, moe_config, module + ".mlp", options.ep);
  } else {
    mlp_ = std::make_unique<Mlp>(ctx, module + ".mlp", config.hidden_size, config.intermediate_size);
  }
}

Var DecoderLayer::forward(const Var& x, const Tensor& positions, std::vector<Var>* aux_losses) {
  const Var h = ops::add(x, attn_.forward(ops::rms_norm(x, input_layernorm_, eps_), positions));
  const Var normed = ops::rms_norm(h, post_attention_layernorm_, eps_);
  return ops::add(h, moe_ ? moe_->forward(normed, aux_losses) : mlp_->forward(normed));
}

Var DecoderLayer::decode(const Var& x, MlaCache& cache, CacheKind kind) {
  const Var h = ops::add(x, attn_.decode(ops::rms_norm(x, input_layernorm_, eps_), cache, kind));
  const Var normed = ops::rms_norm(h, post_attention_layernorm_, eps_);
  return ops::add(h, moe_ ? moe_->forward(normed, nullptr) : mlp_->forward(normed));
}

}  // namespace daedalus::model
