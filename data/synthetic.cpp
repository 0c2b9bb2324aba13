// The synthetic source: a seeded sparse Markov chain of order k over `vocab` tokens, with its exact
// entropy rate (the loss floor of any model that sees at least k tokens of context).
//
// Contexts are the last k tokens read as a base-vocab number c in [0, vocab^k). Context c allows
// `branching` distinct next tokens, drawn uniformly from the vocab, with probabilities
// Dirichlet(1, ..., 1) (normalized exponential draws). Every random number comes from Philox4x32-10
// keyed by the seed: the table of context c from counter (j, c + 1), token i of the sample from
// counter (i / 4, 0) lane i % 4 — the same on every machine.
#include <algorithm>
#include <array>
#include <cmath>

#include "autograd/check.h"
#include "autograd/generator.h"
#include "data/mapped_file.h"
#include "data/source.h"

namespace daedalus::data {

namespace {

constexpr int64_t kMaxStates = int64_t(1) << 22;
constexpr int64_t kBurnIn = 4096;  // steps run before the first emitted token (leaves transient contexts)
constexpr uint64_t kStartCounterHi = uint64_t(1) << 40;  // the stream that picks the first context

// Sequential 32-bit words of the Philox stream with counters (0, hi), (1, hi), ...
class PhiloxWords {
 public:
  PhiloxWords(uint64_t seed, uint64_t counter_hi) : seed_(seed), hi_(counter_hi) {}
  uint32_t next() {
    if (lane_ == 4) {
      block_ = philox4x32(lo_++, hi_, seed_);
      lane_ = 0;
    }
    return block_[size_t(lane_++)];
  }

 private:
  uint64_t seed_, hi_, lo_ = 0;
  std::array<uint32_t, 4> block_{};
  int lane_ = 4;
};

// (0, 1), never an endpoint: -log() is finite and positive.
double open_unit(uint32_t w) { return (double(w) + 0.5) * (1.0 / 4294967296.0); }

class MarkovSource final : public SyntheticSource {
 public:
  explicit MarkovSource(const SyntheticSpec& spec) : spec_(spec) {
    DAEDALUS_CHECK(spec.vocab >= 2 && spec.vocab <= (int64_t(1) << 31) - 1,
                   "data.synthetic.vocab: {} is outside [2, 2^31)", spec.vocab);
    DAEDALUS_CHECK(spec.order >= 1 && spec.order <= 3, "data.synthetic.order: {} is outside [1, 3]", spec.order);
    DAEDALUS_CHECK(spec.branching >= 1 && spec.branching <= spec.vocab,
                   "data.synthetic.branching: {} is outside [1, vocab = {}]", spec.branching, spec.vocab);
    DAEDALUS_CHECK(spec.tokens >= 1, "data.synthetic.tokens: {} must be positive", spec.tokens);
    const double states = std::pow(double(spec.vocab), spec.order);
    DAEDALUS_CHECK(states <= double(kMaxStates),
                   "data.synthetic: vocab^order = {}^{} = {:.0f} contexts exceeds the limit 2^22 = {} (lower the "
                   "vocab or the order)",
                   spec.vocab, spec.order, states, kMaxStates);
    states_ = int64_t(states);
    build_table();
    sample();
    entropy_ = stationary_entropy();
  }

  int64_t size() const override { return int64_t(tokens_.size()); }
  void read(int64_t start, int64_t count, int32_t* out) const override {
    detail::check_read_range(*this, start, count);
    std::copy_n(tokens_.begin() + start, count, out);
  }
  std::string describe() const override {
    return fmt::format(
        "synthetic Markov chain (vocab {}, order {}, branching {}, seed {}, {} tokens, entropy rate "
        "{:.4f} nats/token)",
        spec_.vocab, spec_.order, spec_.branching, spec_.seed, tokens_.size(), entropy_);
  }
  double entropy_rate_nats() const override { return entropy_; }

 private:
  // succ_[c * b + j], prob_[c * b + j]: the j-th allowed next token of context c and its probability.
  void build_table() {
    const size_t b = size_t(spec_.branching);
    succ_.resize(static_cast<size_t>(states_) * b);
    prob_.resize(static_cast<size_t>(states_) * b);
    std::vector<double> weights(b);
    for (int64_t c = 0; c < states_; ++c) {
      PhiloxWords words(spec_.seed, uint64_t(c) + 1);
      int32_t* succ = succ_.data() + size_t(c) * b;
      for (size_t j = 0; j < b;) {
        const uint64_t r = uint64_t(words.next()) | (uint64_t(words.next()) << 32);
        const auto t = int32_t(r % uint64_t(spec_.vocab));  // modulo bias < vocab / 2^64
        if (std::find(succ, succ + j, t) == succ + j) succ[j++] = t;
      }
      double sum = 0;
      for (size_t j = 0; j < b; ++j) sum += weights[j] = -std::log(open_unit(words.next()));
      for (size_t j = 0; j < b; ++j) prob_[size_t(c) * b + j] = weights[j] / sum;
    }
  }

  int64_t next_context(int64_t c, int32_t t) const { return (c % (states_ / spec_.vocab)) * spec_.vocab + t; }

  int32_t draw(int64_t c, uint32_t word) const {
    const size_t b = size_t(spec_.branching);
    const double u = double(word) * (1.0 / 4294967296.0);
    double cum = 0;
    for (size_t j = 0; j + 1 < b; ++j) {
      cum += prob_[size_t(c) * b + j];
      if (u < cum) return succ_[size_t(c) * b + j];
    }
    return succ_[size_t(c) * b + b - 1];
  }

  void sample() {
    PhiloxWords start(spec_.seed, kStartCounterHi);
    const uint64_t r = uint64_t(start.next()) | (uint64_t(start.next()) << 32);
    int64_t c = int64_t(r % uint64_t(states_));
    PhiloxWords words(spec_.seed, 0);
    for (int64_t i = 0; i < kBurnIn; ++i) c = next_context(c, draw(c, words.next()));
    start_context_ = c;
    tokens_.resize(static_cast<size_t>(spec_.tokens));
    for (int32_t& t : tokens_) {
      t = draw(c, words.next());
      c = next_context(c, t);
    }
  }

  // H = sum_c pi(c) H(P(. | c)), pi the stationary distribution of the contexts. The chain may
  // have transient contexts (or, rarely, several closed classes): pi is computed from the context
  // the sample starts in (iteration starts from the sample's context frequencies), so it is the
  // distribution the sample actually follows. Lazy power iteration pi <- (pi + pi P) / 2 has the same fixed point and
  // converges on periodic chains too.
  double stationary_entropy() const {
    const size_t b = size_t(spec_.branching), n = size_t(states_);
    std::vector<double> h(n, 0.0);
    for (size_t c = 0; c < n; ++c)
      for (size_t j = 0; j < b; ++j) {
        const double p = prob_[c * b + j];
        if (p > 0) h[c] -= p * std::log(p);
      }
    // Start from the sample's own context frequencies: inside the right class and already close.
    std::vector<double> pi(n, 0.0), next(n);
    int64_t context = start_context_;
    pi[size_t(context)] = 1.0;
    for (int32_t t : tokens_) pi[size_t(context = next_context(context, t))] += 1.0;
    for (double& p : pi) p /= double(tokens_.size() + 1);
    for (int iter = 0; iter < 20000; ++iter) {
      for (size_t c = 0; c < n; ++c) next[c] = 0.5 * pi[c];
      for (size_t c = 0; c < n; ++c) {
        if (pi[c] == 0) continue;
        const double mass = 0.5 * pi[c];
        for (size_t j = 0; j < b; ++j)
          next[size_t(next_context(int64_t(c), succ_[c * b + j]))] += mass * prob_[c * b + j];
      }
      double change = 0;
      for (size_t c = 0; c < n; ++c) change += std::abs(next[c] - pi[c]);
      pi.swap(next);
      if (change < 1e-12) break;  // |H error| <= change * max_c h(c) / (1 - contraction)
    }
    double entropy = 0;
    for (size_t c = 0; c < n; ++c) entropy += pi[c] * h[c];
    return entropy;
  }

  SyntheticSpec spec_;
  int64_t states_ = 0;
  std::vector<int32_t> succ_;
  std::vector<double> prob_;
  std::vector<int32_t> tokens_;
  int64_t start_context_ = 0;
  double entropy_ = 0;
};

}  // namespace

std::unique_ptr<SyntheticSource> open_synthetic(const SyntheticSpec& spec) {
  return std::make_unique<MarkovSource>(spec);
}

}  // namespace daedalus::data
