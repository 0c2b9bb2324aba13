// Multi-head Latent Attention (DeepSeek-V2/V3): queries through a low-rank bottleneck, keys and
// values compressed into one latent vector c_kv per token, and a decoupled rotary key head
// shared by all heads.
//
//   x [B, T, D]
//   q      = q_b_proj(q_a_layernorm(q_a_proj(x)))           [B, T, H·(nope + rope)]
//            (or q_proj(x) when q_lora_rank is null)
//   kv_a   = kv_a_proj_with_mqa(x)                          [B, T, kv_lora + rope]
//   c_kv, k_pe = split(kv_a)                                [B, T, kv_lora], [B, T, rope]
//   kv     = kv_b_proj(kv_a_layernorm(c_kv))                [B, T, H·(nope + v)]
//   k_nope, v = split per head                              [B, T, H, nope], [B, T, H, v]
//   q = [q_nope | rope(q_pe)],  k = [k_nope | rope(k_pe) for every head]   [B, T, H, nope + rope]
//   out = o_proj(causal softmax(q·kᵀ · scale) · v)                         [B, T, D]
//   scale = 1 / sqrt(nope + rope), times YaRN's mscale² when model.rope_scaling sets mscale_all_dim
//   (rope and scale: model/rope_scaling.h)
//
// The latent norms always use eps 1e-6 (DeepSeek's reference code and HF do; rms_norm_eps is for the
// layer norms).
// RoPE: DeepSeek-V3's interleaved pairs by default (its checkpoints store rope dims in that order).
// HF transformers (rope_interleave=True) rotates the same pairs and only emits them in a different
// element order, identically in q and k, so the scores agree. The Linears run under the module's
// recipe; RMSNorms, RoPE and the attention core stay in high precision (the core in the recipe's
// high-precision dtype: fp32 for fp32, bf16 otherwise, with fp32 softmax and output).
#pragma once

#include "autograd/kernels/rope.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/linear.h"

namespace daedalus::model {

class Mla {
 public:
  Mla() = default;
  // Registers model.layers.<layer>.self_attn.* (module = that prefix).
  Mla(const BuildContext& ctx, const ModelConfig& config, const std::string& module,
      kernels::RopeLayout rope_layout = kernels::RopeLayout::interleaved);

  // x [B, T, D] fp32, positions [T] int64 (on the host or x's device) -> [B, T, D] fp32.
  Var forward(const Var& x, const Tensor& positions);

  // Generation, no tape (call under NoGradGuard): x [1, T, D] fp32 holds the tokens at positions
  // cache.length .. cache.length + T - 1 (T > 1: a prefill) -> [1, T, D] fp32; appends the T tokens
  // to `cache`. Each token attends to the cached tokens and to itself and those before it in x:
  // the same outputs as forward() over the whole sequence. The Linears run under the module's
  // recipe (generation builds the model with fp32); the attention core and the absorbed kv_b_proj
  // use the fp32 master weight in fp32 arithmetic. See mla_decode.cpp.
  Var decode(const Var& x, MlaCache& cache, CacheKind kind);

  std::vector<Linear*> linears();

 private:
  ModelConfig config_;
  std::string module_;
  kernels::RopeLayout rope_layout_ = kernels::RopeLayout::interleaved;
  kernels::RopeFrequencies rope_;  // plain or YaRN, for qk_rope_head_dim
  double softmax_scale_ = 0;
  DType core_dtype_ = DType::f32;
  Linear q_a_proj_, q_b_proj_, q_proj_;  // q_proj_ only when q_lora_rank is null
  Var q_a_layernorm_, kv_a_layernorm_;
  Linear kv_a_proj_with_mqa_, kv_b_proj_, o_proj_;
};

}  // namespace daedalus::model
