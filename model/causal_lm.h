// The DeepSeek-V3 causal language model with multi-token prediction.
//
//   inputs [B, T] int64 -> embed_tokens -> DecoderLayer × L -> norm -> lm_head -> logits [B, T, V]
//   loss = CE(logits, targets) + λ · mean_k CE_k(MTP) + Σ_layers seq aux loss
//
// MTP of depth K (num_nextn_predict_layers; DeepSeek-V3 §2.2): module k (HF/checkpoint names
// model.layers.{L + k - 1}.*) takes the previous depth's hidden states h (the main model's final
// hidden states, before the norm, for k = 1) and the embeddings of the tokens k positions ahead,
//   h' = eh_proj([enorm(embed(t_{i+k})) ; hnorm(h_i)])      (embedding first, as released
//   h_k = DecoderLayer(h')                                   checkpoints and Megatron do)
//   CE_k = CE(lm_head(shared_head.norm(h_k)), t_{i+k+1})
// sharing embed_tokens and lm_head with the main model. The last k positions of a window have no
// target at depth k and are ignored. Names follow DeepSeek-V3's released checkpoint; HF
// transformers ignores these layers (it has no MTP).
//
// Pipeline stages (LmOptions::stage, model/stages.h): a rank builds only its part — decoder
// layers [begin, end), the embedding on the first stage, the final norm, lm_head and the MTP
// modules on the last. The last stage also holds model.embed_tokens when the head is tied to it or
// MTP is on (MTP embeds the tokens ahead): one copy on each end, the trainer sums their gradients.
// Parameters keep their global names and initial values, so the stages together hold exactly the
// whole model's weights. The trainer's schedule calls embed / run_layers / finish per micro-batch;
// forward() is the three in a row.
#pragma once

#include <memory>
#include <vector>

#include "model/block.h"
#include "model/stages.h"

namespace daedalus::model {

struct LmOptions {
  ModelConfig config;
  MoeConfig moe;
  MtpConfig mtp;
  fp8::RecipeTable recipes{fp8::Recipe{}};
  uint64_t seed = 0;  // initialization (parameters.h)
  BlockOptions block;
  Device device = Device::cpu();
  Recompute recompute = Recompute::none;  // train.recompute (linear.h)
  StageSpan stage;  // the whole model unless pipelined
};

struct LmOutput {
  Var loss;      // what backward runs on: lm_loss + λ · mtp_loss + aux_loss, fp32 []
  Var lm_loss;   // next-token cross-entropy, mean over the B·T positions
  Var mtp_loss;  // mean of the depths' cross-entropies (undefined without MTP)
  Var aux_loss;  // Σ of the MoE layers' sequence aux losses (undefined when none)
  std::vector<Var> mtp_depth_losses;
};

class CausalLM {
 public:
  explicit CausalLM(const LmOptions& options);

  // inputs, targets [B, T] int64 (targets = inputs shifted by one; -100 is ignored). positions:
  // undefined (0..T-1 in every row), or [B, T] int64 on the host for packed documents: each
  // restarting at 0, attention block-diagonal (Mla::forward). The MTP depths shift across document
  // boundaries like the main stream; their targets there are whatever the loader masked.
  LmOutput forward(const Tensor& inputs, const Tensor& targets, const Tensor& positions = Tensor());

  // ---- one pipeline stage's part of forward() ----
  // inputs [B, T] int64 -> embeddings [B, T, D] fp32 (first stage).
  Var embed(const Tensor& inputs);
  // This stage's decoder layers: h [B, T, D] -> [B, T, D]; MoE aux losses appended to `aux`.
  // `positions` [T], or [B, T] for packed documents, int64 on the host.
  Var run_layers(const Var& h, const Tensor& positions, std::vector<Var>* aux);
  // The last stage: losses from the final hidden states h [B, T, D] (inputs feed the MTP
  // embeddings), with `aux` (this stage's and any earlier aux losses) added to loss.
  LmOutput finish(const Var& h, const Tensor& inputs, const Tensor& targets, const Tensor& positions,
                  std::vector<Var> aux);
  const StageSpan& stage() const { return stage_; }  // end resolved (never -1)
  bool holds_embedding() const { return embed_tokens_.defined(); }
  // The main head's logits [B, T, V] fp32 (and the final hidden states before the norm).
  Var logits(const Tensor& inputs, Var* hidden = nullptr);

  // Generation with a KV cache (model/kv_cache.h), whole model only: an empty cache for the main layers, then
  // decode(tokens [1, T] int64) -> the logits [1, T, V] fp32 of the T tokens at positions
  // cache.length() .. + T - 1, appending them to the cache. A prefill is one decode of the prompt;
  // the logits equal logits() over the whole sequence. Runs under its own NoGradGuard: nothing on
  // the tape, no router load counted.
  DecodeCache new_cache(CacheKind kind) const;
  Tensor decode(const Tensor& tokens, DecodeCache& cache);

  ParameterStore& parameters() { return store_; }
  const ParameterStore& parameters() const { return store_; }
  const LmOptions& options() const { return options_; }
  // Every MoE layer this rank holds, main model first, then the MTP modules'.
  std::vector<Moe*> moe_layers();
  // Every Linear and GroupedLinear module (for FP8 statistics and state), in registration order.
  std::vector<Linear*> linears();
  std::vector<GroupedLinear*> grouped_linears();
  // Bias update of every router with its accumulated load (sum it over ranks first).
  void update_router_biases();

 private:
  struct MtpModule {
    Var enorm, hnorm, final_norm;
    Linear eh_proj;
    std::unique_ptr<DecoderLayer> block;
  };

  Var hidden_states(const Tensor& inputs, const Tensor& positions, std::vector<Var>* aux_losses);
  Var head(const Var& hidden, const Var& norm_weight);

  void check_whole(const char* what) const;

  LmOptions options_;
  StageSpan stage_;
  ParameterStore store_;
  Var embed_tokens_, norm_;
  Linear lm_head_;
  std::vector<std::unique_ptr<DecoderLayer>> layers_;
  std::vector<MtpModule> mtp_;
};

}  // namespace daedalus::model
