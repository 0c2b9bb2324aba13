// Pre-norm decoder layer.
#include "model/block.h"

#include "autograd/nvtx.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/norm.h"
#include "autograd/tape.h"

namespace daedalus::model {

DecoderLayer::DecoderLayer(const BuildContext& ctx, const ModelConfig& config, const MoeConfig& moe_config,
                           const std::string& module, bool moe, const BlockOptions& options)
    : module_(module),
      eps_(config.rms_norm_eps),
      input_layernorm_(ctx.store->add(module + ".input_layernorm.weight", {config.hidden_size}, Init::ones,
                                      /*weight_decay=*/false)),
      post_attention_layernorm_(ctx.store->add(module + ".post_attention_layernorm.weight", {config.hidden_size},
                                               Init::ones, /*weight_decay=*/false)),
      attn_(ctx, config, module + ".self_attn", options.rope_layout) {
  recompute_ = ctx.recompute;
  if (moe) {
    moe_ = std::make_unique<Moe>(ctx, config, moe_config, module + ".mlp", options.ep);
  } else {
    mlp_ = std::make_unique<Mlp>(ctx, module + ".mlp", config.hidden_size, config.intermediate_size);
  }
}

// NVTX: "<module>" around the forward, "<module> backward" around its backward on the tape, and
// the attention and FFN halves apart.
Var DecoderLayer::forward(const Var& x, const Tensor& positions, std::vector<Var>* aux_losses) {
  if (recompute_ != Recompute::full || !grad_enabled()) return forward_layer(x, positions, aux_losses);
  // train.recompute: full. The layer runs without recording and keeps only x; backward runs it
  // again and differentiates through that. Its MoE aux loss is a second output (the loss of the
  // first run carries the gradient into the rerun). Router loads and dispatch traffic are counted
  // by the rerun (the first run is not a training forward to the MoE: grad is off there).
  const std::vector<Var> out = recompute(module_ + ".recompute",
                                         [this, positions](const std::vector<Var>& in) {
                                           std::vector<Var> aux;
                                           std::vector<Var> outs{forward_layer(in[0], positions, &aux)};
                                           outs.insert(outs.end(), aux.begin(), aux.end());
                                           return outs;
                                         },
                                         {x});
  if (aux_losses != nullptr) aux_losses->insert(aux_losses->end(), out.begin() + 1, out.end());
  return out[0];
}

Var DecoderLayer::forward_layer(const Var& x_in, const Tensor& positions, std::vector<Var>* aux_losses) {
  nvtx::LayerRange range(module_);
  const Var x = range.input(x_in);
  Var h;
  {
    nvtx::LayerRange attn(module_ + ".self_attn");
    h = ops::add(x, attn.output(attn_.forward(ops::rms_norm(attn.input(x), input_layernorm_, eps_), positions)));
  }
  nvtx::LayerRange ffn(module_ + ".mlp");
  const Var normed = ops::rms_norm(ffn.input(h), post_attention_layernorm_, eps_);
  return range.output(ops::add(h, ffn.output(moe_ ? moe_->forward(normed, aux_losses) : mlp_->forward(normed))));
}

Var DecoderLayer::decode(const Var& x, MlaCache& cache, CacheKind kind) {
  const Var h = ops::add(x, attn_.decode(ops::rms_norm(x, input_layernorm_, eps_), cache, kind));
  const Var normed = ops::rms_norm(h, post_attention_layernorm_, eps_);
  return ops::add(h, moe_ ? moe_->forward(normed, nullptr) : mlp_->forward(normed));
}

}  // namespace daedalus::model
