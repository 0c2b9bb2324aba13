// One decoder layer: x + MLA(RMSNorm(x)), then x + FFN(RMSNorm(x)), the FFN a dense SwiGLU MLP
// for the first first_k_dense_replace layers and DeepSeekMoE after. HF names under
// model.layers.L: input_layernorm, self_attn.*, post_attention_layernorm, mlp.*.
#pragma once

#include <memory>
#include <string>

#include "model/mla.h"
#include "model/moe.h"

namespace daedalus::model {

struct BlockOptions {
  kernels::RopeLayout rope_layout = kernels::RopeLayout::interleaved;
  ExpertParallel ep;
};

class DecoderLayer {
 public:
  // Registers model.layers.<index>.* (prefix `module`); `moe` selects the FFN kind.
  DecoderLayer(const BuildContext& ctx, const ModelConfig& config, const MoeConfig& moe_config,
               const std::string& module, bool moe, const BlockOptions& options);

  // x [B, T, D] fp32, positions [T] (or [B, T] for packed documents: Mla::forward) -> [B, T, D]
  // fp32; MoE aux losses appended to `aux_losses`.
  Var forward(const Var& x, const Tensor& positions, std::vector<Var>* aux_losses);

  // Generation (under NoGradGuard): x [1, T, D] at positions cache.length.. -> [1, T, D]; appends
  // to `cache` (Mla::decode). The FFN is the training one: MoE routing with the trained biases,
  // no load counted (grad off), no aux loss.
  Var decode(const Var& x, MlaCache& cache, CacheKind kind);

  Mla& attention() { return attn_; }
  Moe* moe() { return moe_.get(); }
  Mlp* mlp() { return mlp_.get(); }

 private:
  Var forward_layer(const Var& x, const Tensor& positions, std::vector<Var>* aux_losses);

  std::string module_;                     // model.layers.<index>: the NVTX range names
  Recompute recompute_ = Recompute::none;  // full: only x is kept, the layer reruns in backward
  double eps_;
  Var input_layernorm_, post_attention_layernorm_;
  Mla attn_;
  std::unique_ptr<Mlp> mlp_;
  std::unique_ptr<Moe> moe_;
};

}  // namespace daedalus::model
