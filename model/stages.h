// Pipeline stages: which contiguous run of decoder layers each of P stages holds.
//
// Stage 0 also holds the embedding; the last stage the final norm, lm_head and the MTP modules.
// A split is a list of layer counts, one per stage, summing to num_hidden_layers (each >= 1).
// The default split balances an estimate of each stage's training FLOPs per token: a decoder
// layer costs 6·(activated weights) + its causal attention (model/param_count.h's terms), the last
// stage adds the head (6·V·D) and every MTP module (its layer, eh_proj and another head); the
// embedding lookup costs nothing. Among the splits whose most expensive stage is cheapest, the one
// that is lexicographically largest (earlier stages take more layers) is chosen, so the last stage,
// which also runs the head, gets fewer when costs tie.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"

namespace daedalus::model {

// The part of the model one rank builds (LmOptions::stage). The default is the whole model.
struct StageSpan {
  int64_t begin = 0;  // first decoder layer
  int64_t end = -1;   // one past the last; -1: num_hidden_layers
  bool first = true;  // holds model.embed_tokens and takes token ids
  bool last = true;   // holds model.norm, lm_head and the MTP modules, and computes the losses
  bool whole() const { return begin == 0 && end < 0 && first && last; }
};

// InputError naming `key` unless `layers` is empty (a balanced split) or has `stages` positive
// entries summing to num_layers; and unless every stage can get a layer (stages <= num_layers).
void check_stage_layers(const std::vector<int64_t>& layers, int64_t stages, int64_t num_layers, std::string_view key);

// Estimated training FLOPs per token of each decoder layer 0..L-1, and of the last stage's extras
// (head and MTP modules), at sequence length seq_len.
std::vector<double> layer_costs(const ModelConfig& config, int64_t seq_len);
double head_cost(const ModelConfig& config, int64_t seq_len);

// The balanced split described above (stages <= num_hidden_layers).
std::vector<int64_t> balanced_stage_layers(const ModelConfig& config, int64_t stages, int64_t seq_len);

// Stage `stage` of the split `layers` (layer counts, checked).
StageSpan stage_span(const std::vector<int64_t>& layers, int64_t stage);

// Whether checkpoint tensor `name` belongs to another stage of the whole model than `span` (a
// stage holding model.embed_tokens iff `holds_embedding`): a decoder or MTP layer outside the span,
// the embedding, or the final norm and lm_head off the last stage. Loading a stage reads its own
// names and treats these as neither missing nor unexpected.
bool other_stage_holds(const std::string& name, const StageSpan& span, const ModelConfig& config, bool holds_embedding);

}  // namespace daedalus::model
