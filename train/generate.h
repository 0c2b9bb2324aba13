// Text generation from a trained model: the sampler (temperature, top-k, top-p), the naive sampler
// the trainer prints at the end of a run (whole context recomputed per token, any world size), and
// generate(): prompt prefill, then token-by-token decode with MLA's KV cache (model/kv_cache.h),
// streaming each token to a callback. docs/generation.md is the user's guide.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "autograd/generator.h"
#include "model/causal_lm.h"

namespace daedalus::train {

struct SamplingOptions {
  double temperature = 0.8;  // 0: greedy (argmax, ties to the lower id)
  int64_t top_k = 0;         // keep the k most likely tokens; 0: the whole vocabulary
  double top_p = 1.0;        // then the smallest most-likely set whose mass reaches p (nucleus); 1: off
};

// The distribution a token is drawn from, over the vocabulary (0 outside the support): softmax of
// logits / temperature over the top_k highest logits (ties: lower id first), cut to the nucleus of
// mass top_p (at least one token), renormalized. Greedy (temperature 0): one-hot on the argmax.
std::vector<double> sampling_distribution(const std::vector<double>& logits, const SamplingOptions& options);

// One token from sampling_distribution: one uniform draw u from `gen`, the first token (in
// descending probability, ties to the lower id) whose cumulative mass exceeds u. Greedy draws nothing.
int64_t pick_token(const std::vector<double>& logits, const SamplingOptions& options, Generator& gen);

struct SampleOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 0;         // 0: the whole vocabulary
  uint64_t seed = 0;
  int64_t context = 0;  // tokens of context the model sees (0: max_position_embeddings)
};

// Naive sampling, no cache: prompt ids (non-empty, each in [0, vocab)) -> the new tokens.
// Deterministic for a seed; every rank of an expert-parallel group must call it with the same
// arguments (the MoE layers exchange tokens). Runs the model under its training recipe.
std::vector<int64_t> sample(model::CausalLM& lm, const std::vector<int64_t>& prompt, const SampleOptions& options);

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  uint64_t seed = 0;
  model::CacheKind cache = model::CacheKind::latent;
  int64_t stop_token = -1;  // generation ends after this token (a chat turn's EOS); -1: never
};

struct GenerateStats {
  int64_t prompt_tokens = 0, new_tokens = 0, decode_steps = 0;
  double prefill_s = 0, decode_s = 0;  // wall time of the prefill and of the decode steps
  int64_t cache_bytes = 0;             // fp32 bytes the cache held at the end
  bool context_full = false;           // stopped at max_position_embeddings before max_new_tokens
};

// The InputErrors generate() raises, without a model: an empty prompt, a prompt token outside
// [0, vocab_size), a prompt longer than max_position_embeddings, bad sampling options.
void check_generate_inputs(const model::ModelConfig& config, const std::vector<int64_t>& prompt,
                           const GenerateOptions& options);

// Prefill the prompt in one decode call, then one decode call per new token; `on_token` (may be
// empty) sees each new token as it is chosen. The sequence (prompt + new tokens) never exceeds
// model.max_position_embeddings: generation stops there (stats->context_full). InputError as
// check_generate_inputs says. One process holding every expert (or all
// ranks calling alike). The model's recipe applies to its Linears: build it with fp32 for generation.
std::vector<int64_t> generate(model::CausalLM& lm, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                              const std::function<void(int64_t)>& on_token = {}, GenerateStats* stats = nullptr);

// Byte-level tokens (vocab 256) as printable text: bytes outside printable ASCII, tab and newline
// become '?'.
std::string bytes_to_text(const std::vector<int64_t>& tokens);

}  // namespace daedalus::train
