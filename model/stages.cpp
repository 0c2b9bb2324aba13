// The pipeline stage split (see stages.h).
#include "model/stages.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string_view>

#include "autograd/check.h"
#include "model/param_count.h"

namespace daedalus::model {

namespace {

// Training FLOPs per token of decoder layer `index` alone: param_count's 6·N + attention terms,
// taken from a one-layer config (the counts of a config differ by exactly that layer).
double decoder_layer_cost(const ModelConfig& c, int64_t index, int64_t seq_len) {
  ModelConfig one = c;
  one.num_hidden_layers = index + 1;
  one.num_nextn_predict_layers = 0;
  ModelConfig before = one;
  before.num_hidden_layers = index;
  return training_flops_per_token(one, seq_len) - training_flops_per_token(before, seq_len);
}

}  // namespace

void check_stage_layers(const std::vector<int64_t>& layers, int64_t stages, int64_t num_layers, std::string_view key) {
  DAEDALUS_CHECK(stages <= num_layers,
                 "parallel.pipeline_parallel: {} stages for model.num_hidden_layers = {}: every stage needs a decoder "
                 "layer",
                 stages, num_layers);
  if (layers.empty()) return;
  DAEDALUS_CHECK(int64_t(layers.size()) == stages, "{}: {} entries for {} pipeline stages", key, layers.size(), stages);
  int64_t sum = 0;
  for (size_t s = 0; s < layers.size(); ++s) {
    DAEDALUS_CHECK(layers[s] >= 1, "{}[{}]: every stage needs at least one decoder layer, got {}", key, s, layers[s]);
    sum += layers[s];
  }
  DAEDALUS_CHECK(sum == num_layers, "{}: the stages hold {} decoder layers, but model.num_hidden_layers is {}", key,
                 sum, num_layers);
}

std::vector<double> layer_costs(const ModelConfig& c, int64_t seq_len) {
  std::vector<double> out;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) out.push_back(decoder_layer_cost(c, l, seq_len));
  return out;
}

double head_cost(const ModelConfig& c, int64_t seq_len) {
  // The whole model's estimate less its decoder layers: lm_head and the MTP modules (each with
  // its own head GEMM, which param_count leaves out of mtp_activated: added here).
  double cost = training_flops_per_token(c, seq_len);
  for (double l : layer_costs(c, seq_len)) cost -= l;
  return cost + 6.0 * double(c.num_nextn_predict_layers) * double(c.vocab_size) * double(c.hidden_size);
}

std::vector<int64_t> balanced_stage_layers(const ModelConfig& c, int64_t stages, int64_t seq_len) {
  const int64_t n = c.num_hidden_layers;
  check_stage_layers({}, stages, n, "parallel.pipeline_layers");
  const std::vector<double> cost = layer_costs(c, seq_len);
  const double head = head_cost(c, seq_len);
  std::vector<double> prefix(size_t(n) + 1, 0.0);
  for (int64_t l = 0; l < n; ++l) prefix[size_t(l) + 1] = prefix[size_t(l)] + cost[size_t(l)];
  const auto span_cost = [&](int64_t begin, int64_t end, bool last) {
    return prefix[size_t(end)] - prefix[size_t(begin)] + (last ? head : 0.0);
  };
  // best[s][i]: the least possible maximum stage cost when stages s.. hold layers i..n-1.
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(size_t(stages) + 1, std::vector<double>(size_t(n) + 1, kInf));
  best[size_t(stages)][size_t(n)] = 0.0;
  for (int64_t s = stages - 1; s >= 0; --s)
    for (int64_t i = s; i <= n - (stages - s); ++i)
      for (int64_t j = i + 1; j <= n - (stages - s - 1); ++j)
        best[size_t(s)][size_t(i)] = std::min(
            best[size_t(s)][size_t(i)], std::max(span_cost(i, j, s == stages - 1), best[size_t(s) + 1][size_t(j)]));
  // Walk forward, each stage taking as many layers as keeps the optimum (ties: earlier stages more).
  std::vector<int64_t> layers;
  const double target = best[0][0];
  int64_t i = 0;
  for (int64_t s = 0; s < stages; ++s) {
    int64_t take = 1;
    for (int64_t j = n - (stages - s - 1); j > i; --j) {
      if (std::max(span_cost(i, j, s == stages - 1), best[size_t(s) + 1][size_t(j)]) <= target * (1 + 1e-12)) {
        take = j - i;
        break;
      }
    }
    layers.push_back(take);
    i += take;
  }
  return layers;
}

StageSpan stage_span(const std::vector<int64_t>& layers, int64_t stage) {
  DAEDALUS_CHECK(stage >= 0 && stage < int64_t(layers.size()), "stage_span: stage {} of {}", stage, layers.size());
  StageSpan span;
  for (int64_t s = 0; s < stage; ++s) span.begin += layers[size_t(s)];
  span.end = span.begin + layers[size_t(stage)];
  span.first = stage == 0;
  span.last = stage == int64_t(layers.size()) - 1;
  return span;
}

bool other_stage_holds(const std::string& name, const StageSpan& span, const ModelConfig& c, bool holds_embedding) {
  if (name == "model.embed_tokens.weight") return !holds_embedding;
  if (name == "model.norm.weight" || name.rfind("lm_head.", 0) == 0) return !span.last;
  constexpr std::string_view prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return false;
  const size_t dot = name.find('.', prefix.size());
  int64_t layer = -1;
  try {
    layer = std::stoll(name.substr(prefix.size(), dot - prefix.size()));
  } catch (const std::exception&) {
    return false;
  }
  const int64_t end = span.end < 0 ? c.num_hidden_layers : span.end;
  if (layer >= c.num_hidden_layers) return !span.last && layer < c.num_hidden_layers + c.num_nextn_predict_layers;
  return layer >= 0 && (layer < span.begin || layer >= end);
}

}  // namespace daedalus::model
