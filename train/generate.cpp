// Sampling and generation: the sampler, the naive no-cache sampler, and prefill + cached decode.
#include "train/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

namespace daedalus::train {

namespace {

// Token ids by descending logit, ties to the lower id.
std::vector<int64_t> ranked(const std::vector<double>& logits) {
  std::vector<int64_t> order(logits.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  return order;
}

// The kept ids in descending order and their renormalized probabilities.
void nucleus(const std::vector<double>& logits, const SamplingOptions& o, std::vector<int64_t>* ids,
             std::vector<double>* probs) {
  DAEDALUS_CHECK(!logits.empty(), "generate: no logits to sample from");
  std::vector<int64_t> order = ranked(logits);
  if (o.temperature <= 0) {
    *ids = {order[0]};
    *probs = {1.0};
    return;
  }
  if (o.top_k > 0 && size_t(o.top_k) < order.size()) order.resize(size_t(o.top_k));
  std::vector<double> p(order.size());
  const double top = logits[size_t(order[0])];
  double z = 0;
  for (size_t i = 0; i < order.size(); ++i) z += p[i] = std::exp((logits[size_t(order[i])] - top) / o.temperature);
  size_t keep = order.size();
  if (o.top_p < 1.0) {
    double mass = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      mass += p[i] / z;
      if (mass >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  order.resize(keep);
  p.resize(keep);
  const double kept = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& x : p) x /= kept;
  *ids = std::move(order);
  *probs = std::move(p);
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void check_prompt(const std::vector<int64_t>& prompt, const model::ModelConfig& c) {
  if (prompt.empty()) throw InputError("generate: the prompt is empty");
  for (int64_t id : prompt)
    if (id < 0 || id >= c.vocab_size)
      throw InputError(
          fmt::format("generate: prompt token {} is outside the vocabulary [0, {}) of the model "
                      "(model.vocab_size = {}; prompts are byte-level)",
                      id, c.vocab_size, c.vocab_size));
}

}  // namespace

std::vector<double> sampling_distribution(const std::vector<double>& logits, const SamplingOptions& o) {
  std::vector<int64_t> ids;
  std::vector<double> probs;
  nucleus(logits, o, &ids, &probs);
  std::vector<double> out(logits.size(), 0.0);
  for (size_t i = 0; i < ids.size(); ++i) out[size_t(ids[i])] = probs[i];
  return out;
}

int64_t pick_token(const std::vector<double>& logits, const SamplingOptions& o, Generator& gen) {
  std::vector<int64_t> ids;
  std::vector<double> probs;
  nucleus(logits, o, &ids, &probs);
  if (o.temperature <= 0) return ids[0];
  float u = 0;
  gen.fill_uniform(&u, 1, 0.0, 1.0);
  double acc = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    acc += probs[i];
    if (double(u) < acc) return ids[i];
  }
  return ids.back();  // u within rounding of 1
}

std::vector<int64_t> sample(model::CausalLM& lm, const std::vector<int64_t>& prompt, const SampleOptions& o) {
  const int64_t vocab = lm.options().config.vocab_size;
  DAEDALUS_CHECK(!prompt.empty(), "generate: empty prompt");
  for (int64_t id : prompt)
    DAEDALUS_CHECK(id >= 0 && id < vocab, "generate: prompt token {} outside the vocabulary [0, {})", id, vocab);
  const int64_t context = o.context > 0 ? o.context : lm.options().config.max_position_embeddings;
  const SamplingOptions sampling{o.temperature, o.top_k, 1.0};
  NoGradGuard no_grad;
  Generator gen(o.seed);
  std::vector<int64_t> tokens = prompt, out;
  for (int64_t n = 0; n < o.max_new_tokens; ++n) {
    const int64_t start = std::max<int64_t>(0, int64_t(tokens.size()) - context);
    const std::vector<int64_t> window(tokens.begin() + start, tokens.end());
    const Tensor logits =
        lm.logits(Tensor::from_vector(window, {1, int64_t(window.size())}).to(lm.options().device)).value();
    const int64_t next = pick_token(logits.select(1, logits.size(1) - 1).to_doubles(), sampling, gen);
    tokens.push_back(next);
    out.push_back(next);
  }
  return out;
}

void check_generate_inputs(const model::ModelConfig& c, const std::vector<int64_t>& prompt, const GenerateOptions& o) {
  check_prompt(prompt, c);
  const int64_t p = int64_t(prompt.size());
  if (p > c.max_position_embeddings)
    throw InputError(
        fmt::format("generate: the prompt has {} tokens, more than the model's context of {} "
                    "(model.max_position_embeddings)",
                    p, c.max_position_embeddings));
  if (o.max_new_tokens < 0)
    throw InputError(fmt::format("generate: --max-new-tokens {}: expected >= 0", o.max_new_tokens));
  if (!(o.sampling.temperature >= 0) || !std::isfinite(o.sampling.temperature))
    throw InputError(fmt::format("generate: --temperature {}: expected a finite value >= 0", o.sampling.temperature));
  if (o.sampling.top_k < 0) throw InputError(fmt::format("generate: --top-k {}: expected >= 0", o.sampling.top_k));
  if (!(o.sampling.top_p > 0 && o.sampling.top_p <= 1))
    throw InputError(fmt::format("generate: --top-p {}: expected a value in (0, 1]", o.sampling.top_p));
}

std::vector<int64_t> generate(model::CausalLM& lm, const std::vector<int64_t>& prompt, const GenerateOptions& o,
                              const std::function<void(int64_t)>& on_token, GenerateStats* stats) {
  const model::ModelConfig& c = lm.options().config;
  check_generate_inputs(c, prompt, o);
  const int64_t p = int64_t(prompt.size());
  NoGradGuard no_grad;
  Generator gen(o.seed);
  GenerateStats s;
  s.prompt_tokens = p;
  model::DecodeCache cache = lm.new_cache(o.cache);
  std::vector<int64_t> out;
  const Device device = lm.options().device;

  auto clock = std::chrono::steady_clock::now();
  Tensor logits = lm.decode(Tensor::from_vector(prompt, {1, p}).to(device), cache);  // [1, P, V]
  s.prefill_s = seconds_since(clock);
  while (int64_t(out.size()) < o.max_new_tokens) {
    if (cache.length() >= c.max_position_embeddings) {  // a prompt of max_position_embeddings tokens
      s.context_full = true;
      break;
    }
    const int64_t next = pick_token(logits.select(1, logits.size(1) - 1).to_doubles(), o.sampling, gen);
    out.push_back(next);
    if (on_token) on_token(next);
    if (int64_t(out.size()) == o.max_new_tokens || next == o.stop_token) break;
    if (cache.length() + 1 >= c.max_position_embeddings) {  // feeding `next` would leave no position
      s.context_full = true;
      break;
    }
    clock = std::chrono::steady_clock::now();
    logits = lm.decode(Tensor::from_vector(std::vector<int64_t>{next}, {1, 1}).to(device), cache);
    s.decode_s += seconds_since(clock);
    ++s.decode_steps;
  }
  s.new_tokens = int64_t(out.size());
  s.cache_bytes = cache.bytes();
  if (stats != nullptr) *stats = s;
  return out;
}

std::string bytes_to_text(const std::vector<int64_t>& tokens) {
  std::string s;
  for (int64_t t : tokens) s += (t == '\n' || t == '\t' || (t >= 32 && t < 127)) ? char(t) : '?';
  return s;
}

}  // namespace daedalus::train
