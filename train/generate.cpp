// Naive sampling: full forward per token, softmax with temperature, optional top-k.
#include "train/generate.h"

#include <algorithm>
#include <cmath>

#include "autograd/generator.h"

namespace daedalus::train {

std::vector<int64_t> sample(model::CausalLM& lm, const std::vector<int64_t>& prompt, const SampleOptions& o) {
  const int64_t vocab = lm.options().config.vocab_size;
  DAEDALUS_CHECK(!prompt.empty(), "generate: empty prompt");
  for (int64_t id : prompt)
    DAEDALUS_CHECK(id >= 0 && id < vocab, "generate: prompt token {} outside the vocabulary [0, {})", id, vocab);
  const int64_t context = o.context > 0 ? o.context : lm.options().config.max_position_embeddings;
  NoGradGuard no_grad;
  Generator gen(o.seed);
  std::vector<int64_t> tokens = prompt, out;
  for (int64_t n = 0; n < o.max_new_tokens; ++n) {
    const int64_t start = std::max<int64_t>(0, int64_t(tokens.size()) - context);
    const std::vector<int64_t> window(tokens.begin() + start, tokens.end());
    const Tensor logits = lm.logits(Tensor::from_vector(window, {1, int64_t(window.size())})).value();
    const std::vector<double> last = logits.select(1, logits.size(1) - 1).to_doubles();
    int64_t next = 0;
    if (o.temperature <= 0) {
      next = int64_t(std::max_element(last.begin(), last.end()) - last.begin());
    } else {
      std::vector<int64_t> order(last.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
      const size_t keep = o.top_k > 0 ? size_t(std::min<int64_t>(o.top_k, vocab)) : order.size();
      std::partial_sort(order.begin(), order.begin() + long(keep), order.end(),
                        [&](int64_t a, int64_t b) { return last[size_t(a)] > last[size_t(b)]; });
      order.resize(keep);
      std::vector<double> p(keep);
      const double top = last[size_t(order[0])];
      double z = 0;
      for (size_t i = 0; i < keep; ++i) z += p[i] = std::exp((last[size_t(order[i])] - top) / o.temperature);
      float u = 0;
      gen.fill_uniform(&u, 1, 0.0, 1.0);
      double acc = 0;
      next = order.back();
      for (size_t i = 0; i < keep; ++i) {
        acc += p[i] / z;
        if (double(u) < acc) {
          next = order[i];
          break;
        }
      }
    }
    tokens.push_back(next);
    out.push_back(next);
  }
  return out;
}

std::string bytes_to_text(const std::vector<int64_t>& tokens) {
  std::string s;
  for (int64_t t : tokens) s += (t == '\n' || t == '\t' || (t >= 32 && t < 127)) ? char(t) : '?';
  return s;
}

}  // namespace daedalus::train
