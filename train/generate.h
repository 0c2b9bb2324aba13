// Sampling from a trained model. This first version recomputes the whole context for every new
// token (no KV cache): fine for the short samples a training run prints at its end.
#pragma once

#include <cstdint>
#include <vector>

#include "model/causal_lm.h"

namespace daedalus::train {

struct SampleOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 0;         // 0: the whole vocabulary
  uint64_t seed = 0;
  int64_t context = 0;  // tokens of context the model sees (0: max_position_embeddings)
};

// prompt ids (non-empty, each in [0, vocab)) -> the new tokens. Deterministic for a seed; every
// rank of an expert-parallel group must call it with the same arguments (the MoE layers exchange
// tokens).
std::vector<int64_t> sample(model::CausalLM& lm, const std::vector<int64_t>& prompt, const SampleOptions& options);

// Byte-level tokens (vocab 256) as printable text: bytes outside printable ASCII, tab and newline
// become '?'.
std::string bytes_to_text(const std::vector<int64_t>& tokens);

}  // namespace daedalus::train
