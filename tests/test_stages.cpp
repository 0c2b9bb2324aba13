// Pipeline stages in model/: the split checks, the cost-balanced default split against a brute-force
// search over every split, which stage a checkpoint name belongs to, and a model built as two
// stages against the whole model — the same weights, the same loss bit for bit, the same
// gradients when the second stage's input gradient is fed to the first stage's backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>

#include "autograd/generator.h"
#include "autograd/tape.h"
#include "model/causal_lm.h"
#include "model/param_count.h"
#include "model/stages.h"
#include "tests/model_testing.h"
#include "tests/testing.h"

namespace daedalus::model {
namespace {

using testing::expect_error;

// Token ids [b, t] int64, uniform over the vocabulary.
Tensor random_tokens(const Shape& shape, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  std::vector<int64_t> ids(static_cast<size_t>(shape[0] * shape[1]));
  for (int64_t& v : ids) v = int64_t(gen.next_u64() % uint64_t(vocab));
  return Tensor::from_vector(ids, shape);
}

TEST(Stages, CheckNamesTheKeyAndTheNumbers) {
  const auto check = [](std::vector<int64_t> layers, int64_t stages, int64_t n) {
    return [=] { check_stage_layers(layers, stages, n, "parallel.pipeline_layers"); };
  };
  EXPECT_NO_THROW(check({}, 4, 4)());
  EXPECT_NO_THROW(check({2, 1, 1}, 3, 4)());
  expect_error(check({}, 5, 4), {"parallel.pipeline_parallel: 5 stages", "model.num_hidden_layers = 4"});
  expect_error(check({2, 2}, 3, 4), {"parallel.pipeline_layers: 2 entries for 3 pipeline stages"});
  expect_error(check({4, 0}, 2, 4), {"parallel.pipeline_layers[1]", "at least one decoder layer, got 0"});
  expect_error(check({2, 3}, 2, 4), {"parallel.pipeline_layers: the stages hold 5 decoder layers",
                                     "model.num_hidden_layers is 4"});
}

TEST(Stages, CostsAddUpToTheModelEstimate) {
  for (const ModelConfig& c : {testing::small_model_config(), ModelConfig{}}) {  // small and DeepSeek-V3
    double sum = head_cost(c, 4096) - 6.0 * double(c.num_nextn_predict_layers * c.vocab_size * c.hidden_size);
    for (double l : layer_costs(c, 4096)) sum += l;
    EXPECT_NEAR(sum, training_flops_per_token(c, 4096), 1e-9 * sum);
  }
  // DeepSeek-V3: a MoE layer (8 + 1 of 257 experts active) costs more than a dense one.
  const std::vector<double> v3 = layer_costs(ModelConfig{}, 4096);
  EXPECT_GT(v3[3], v3[0]);
  EXPECT_DOUBLE_EQ(v3[3], v3[60]);
}

// Every split of n layers into `stages` positive parts, by recursion.
void each_split(int64_t n, int64_t stages, std::vector<int64_t>& prefix,
                const std::function<void(const std::vector<int64_t>&)>& f) {
  if (stages == 1) {
    prefix.push_back(n);
    f(prefix);
    prefix.pop_back();
    return;
  }
  for (int64_t k = 1; k <= n - (stages - 1); ++k) {
    prefix.push_back(k);
    each_split(n - k, stages - 1, prefix, f);
    prefix.pop_back();
  }
}

TEST(Stages, BalancedSplitIsTheBestByBruteForce) {
  ModelConfig c = testing::small_model_config();
  for (int64_t layers : {4, 7, 9}) {
    for (int64_t stages = 1; stages <= std::min<int64_t>(layers, 4); ++stages) {
      c.num_hidden_layers = layers;
      c.first_k_dense_replace = 2;
      const std::vector<double> cost = layer_costs(c, 32);
      const double head = head_cost(c, 32);
      const auto worst = [&](const std::vector<int64_t>& split) {
        double w = 0;
        int64_t at = 0;
        for (size_t s = 0; s < split.size(); ++s) {
          double x = s + 1 == split.size() ? head : 0.0;
          for (int64_t l = 0; l < split[s]; ++l) x += cost[size_t(at++)];
          w = std::max(w, x);
        }
        return w;
      };
      double best = 1e300;
      std::vector<int64_t> best_split, prefix;
      each_split(layers, stages, prefix, [&](const std::vector<int64_t>& split) {
        const double w = worst(split);
        if (w < best * (1 - 1e-12)) {
          best = w;
          best_split = split;
        } else if (w <= best * (1 + 1e-12) && split > best_split) {
          best_split = split;  // ties: earlier stages take more layers
        }
      });
      SCOPED_TRACE(fmt::format("{} layers, {} stages", layers, stages));
      const std::vector<int64_t> got = balanced_stage_layers(c, stages, 32);
      EXPECT_EQ(got, best_split);
      EXPECT_NEAR(worst(got), best, 1e-9 * best);
    }
  }
  // DeepSeek-V3's 61 layers on 16 stages: all layers placed, none empty, the head stage lighter.
  const std::vector<int64_t> v3 = balanced_stage_layers(ModelConfig{}, 16, 4096);
  ASSERT_EQ(v3.size(), 16u);
  int64_t sum = 0;
  for (int64_t n : v3) {
    sum += n;
    EXPECT_GE(n, 1);
  }
  EXPECT_EQ(sum, 61);
  EXPECT_LT(v3.back(), v3.front());
  std::string split;
  for (int64_t n : v3) split += fmt::format("{} ", n);
  std::printf("[ split    ] DeepSeek-V3 on 16 stages: %s\n", split.c_str());
}

TEST(Stages, SpanOfEachStage) {
  const std::vector<int64_t> layers{2, 1, 3};
  const StageSpan a = stage_span(layers, 0), b = stage_span(layers, 1), c = stage_span(layers, 2);
  EXPECT_EQ(std::make_tuple(a.begin, a.end, a.first, a.last), std::make_tuple(0, 2, true, false));
  EXPECT_EQ(std::make_tuple(b.begin, b.end, b.first, b.last), std::make_tuple(2, 3, false, false));
  EXPECT_EQ(std::make_tuple(c.begin, c.end, c.first, c.last), std::make_tuple(3, 6, false, true));
}

TEST(Stages, WhichStageHoldsACheckpointName) {
  ModelConfig c = testing::small_model_config();
  c.num_hidden_layers = 4;  // MTP module: model.layers.4
  const StageSpan mid = stage_span({1, 2, 1}, 1), last = stage_span({1, 2, 1}, 2);
  EXPECT_TRUE(other_stage_holds("model.layers.0.self_attn.o_proj.weight", mid, c, false));
  EXPECT_FALSE(other_stage_holds("model.layers.2.mlp.gate.weight", mid, c, false));
  EXPECT_TRUE(other_stage_holds("model.layers.3.mlp.gate.weight", mid, c, false));
  EXPECT_TRUE(other_stage_holds("model.layers.4.eh_proj.weight", mid, c, false));   // MTP: last stage
  EXPECT_FALSE(other_stage_holds("model.layers.4.eh_proj.weight", last, c, true));
  EXPECT_TRUE(other_stage_holds("model.embed_tokens.weight", mid, c, false));
  EXPECT_FALSE(other_stage_holds("model.embed_tokens.weight", last, c, true));
  EXPECT_TRUE(other_stage_holds("lm_head.weight", mid, c, false));
  EXPECT_FALSE(other_stage_holds("model.norm.weight", last, c, true));
  EXPECT_FALSE(other_stage_holds("model.layers.9.x.weight", mid, c, false));  // no such layer: unexpected
  EXPECT_FALSE(other_stage_holds("something.else", mid, c, false));
}

TEST(Stages, TwoStagesComputeTheWholeModel) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied embeddings" : "separate lm_head");
    LmOptions o;
    o.config = testing::small_model_config();
    o.config.num_hidden_layers = 3;  // layer 0 dense, 1 and 2 MoE, MTP module model.layers.3
    o.config.tie_word_embeddings = tied;
    o.moe.seq_aux_loss_alpha = 0.01;
    o.seed = 17;
    CausalLM whole(o);
    o.stage = stage_span({1, 2}, 0);
    CausalLM first(o);
    o.stage = stage_span({1, 2}, 1);
    CausalLM last(o);

    // The stages hold the whole model's tensors, the embedding on both ends (MTP embeds tokens), equal.
    std::set<std::string> names;
    for (const CausalLM* m : {&first, &last})
      for (const Parameter& p : m->parameters().all()) {
        names.insert(p.name);
        EXPECT_EQ(p.var.value().to_vector<float>(), whole.parameters().get(p.name).var.value().to_vector<float>())
            << p.name;
      }
    EXPECT_EQ(names.size(), whole.parameters().all().size());
    EXPECT_TRUE(first.holds_embedding() && last.holds_embedding());
    EXPECT_EQ(first.parameters().numel() + last.parameters().numel(),
              whole.parameters().numel() + o.config.vocab_size * o.config.hidden_size);

    const Tensor inputs = random_tokens({2, 9}, o.config.vocab_size, 3);
    const Tensor targets = random_tokens({2, 9}, o.config.vocab_size, 4);
    const LmOutput want = whole.forward(inputs, targets);
    backward(want.loss);

    // Stage 1, then stage 2 from the hidden states as a leaf; backward in reverse, through the seam.
    const Tensor positions = Tensor::arange(9, DType::i64);
    std::vector<Var> aux_first, aux_last;
    Tape tape_first, tape_last;
    Var h;
    {
      const TapeScope scope(tape_first);
      h = first.run_layers(first.embed(inputs), positions, &aux_first);
    }
    EXPECT_TRUE(aux_first.empty());  // layer 0 is dense
    const Var seam(h.value(), /*requires_grad=*/true);
    LmOutput got;
    {
      const TapeScope scope(tape_last);
      const Var h_last = last.run_layers(seam, positions, &aux_last);
      got = last.finish(h_last, inputs, targets, positions, aux_last);
    }
    EXPECT_EQ(got.loss.value().item(), want.loss.value().item());  // the same ops in the same order
    EXPECT_EQ(got.mtp_loss.value().item(), want.mtp_loss.value().item());
    tape_last.backward(got.loss);
    tape_first.backward(h, seam.grad());

    for (const CausalLM* m : {&first, &last})
      for (const Parameter& p : m->parameters().all()) {
        if (!p.trainable) continue;
        const Tensor& g = p.var.grad();
        const Tensor& w = whole.parameters().get(p.name).var.grad();
        ASSERT_TRUE(g.defined() && w.defined()) << p.name;
        if (p.name == "model.embed_tokens.weight") continue;  // split between the stages: below
        EXPECT_EQ(g.to_vector<float>(), w.to_vector<float>()) << p.name;
      }
    // The embedding's gradient: lookups on stage 1, the (tied) head and MTP lookups on stage 2.
    // Their sum reorders fp32 additions: within a few u of the largest entry.
    const std::vector<float> a = first.parameters().get("model.embed_tokens.weight").var.grad().to_vector<float>();
    const std::vector<float> b = last.parameters().get("model.embed_tokens.weight").var.grad().to_vector<float>();
    const std::vector<float> w = whole.parameters().get("model.embed_tokens.weight").var.grad().to_vector<float>();
    float scale = 0;
    for (float x : w) scale = std::max(scale, std::fabs(x));
    for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(a[i] + b[i], w[i], 4 * 0x1p-24 * scale) << i;
  }
}

TEST(Stages, WholeModelOnlyOperationsRefuseAStage) {
  LmOptions o;
  o.config = testing::small_model_config();
  o.stage = stage_span({1, 1}, 1);
  CausalLM last(o);
  EXPECT_FALSE(last.stage().first);
  expect_error([&] { last.forward(random_tokens({1, 4}, 8, 1), random_tokens({1, 4}, 8, 2)); },
               {"forward needs the whole model", "layers [1, 2)"});
  expect_error([&] { last.new_cache(CacheKind::latent); }, {"generation needs the whole model"});
  expect_error([&] { last.embed(random_tokens({1, 4}, 8, 1)); }, {"without the embedding"});
}

}  // namespace
}  // namespace daedalus::model
