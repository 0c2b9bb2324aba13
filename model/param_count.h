// Parameter counts from the config alone (no allocation), so the 671B reference shape can be
// reported on a laptop: total, activated per token, and the MTP modules.
//
// Activated per token counts what one token's forward multiplies by: every attention and norm
// weight, the dense MLPs, the router, the shared experts and num_experts_per_tok routed experts
// of each MoE layer, and lm_head — but not the embedding table (a lookup, one row per token).
// The MTP figure counts each module as DeepSeek-V3's released checkpoint stores it: its own
// layer plus a copy of the embedding and of the output head (model.layers.61.embed_tokens,
// shared_head.head), which training shares with the main model.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace daedalus::model {

struct ParameterCounts {
  int64_t total = 0;          // the main model: embedding, layers, final norm, lm_head (once when tied)
  int64_t activated = 0;      // per token, main model
  int64_t embedding = 0;      // vocab_size × hidden_size
  int64_t mtp = 0;            // all MTP modules, as stored (with their embedding and head copies)
  int64_t mtp_trained = 0;    // the same without the shared embedding and head copies
  int64_t mtp_activated = 0;  // per token, the MTP modules' own weights (their layer and eh_proj)
  int64_t total_with_mtp() const { return total + mtp; }
};

ParameterCounts count_parameters(const ModelConfig& config);

// One decoder layer's parameters (index < num_hidden_layers: the main stack; index >= it: MTP
// module index - num_hidden_layers, counting its enorm, hnorm, eh_proj and shared_head.norm too),
// split the way ranks hold them: `dense` every rank holds (attention, norms, dense MLP, router,
// shared experts); `routed` the stacked routed experts, sharded over the EP group; `buffers` held
// but not trained (the router's e_score_correction_bias). dense + routed + buffers is the layer's
// total in count_parameters.
struct LayerParameters {
  int64_t dense = 0;
  int64_t routed = 0;
  int64_t buffers = 0;
};
LayerParameters layer_parameters(const ModelConfig& config, int64_t index);

// Model FLOPs of one training token (forward + backward) at sequence length seq_len: 6 · N over
// the activated non-embedding weights (main model and MTP modules), plus causal attention — per
// layer and token, QKᵀ and PV over T/2 keys on average, 2 · H · T/2 · (dqk + dv) forward, three
// times that for training. The numerator of MFU.
double training_flops_per_token(const ModelConfig& config, int64_t seq_len);

}  // namespace daedalus::model
