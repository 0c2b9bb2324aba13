// The MoE router: group-limited selection, bias for selection only, gate normalization and
// scaling, capacity, the sequence-wise aux loss and the bias update, against hand computations.
#include <gtest/gtest.h>

#include <cmath>

#include "model/router.h"
#include "tests/model_testing.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using model::ModelConfig;
using model::MoeConfig;
using model::Router;
using model::Routing;

ModelConfig router_config() {
  ModelConfig c = testing::small_model_config();  // 8 experts, 4 groups, top-2 groups, top-3
  c.hidden_size = 8;
  return c;
}

// `experts` experts in one group, top-k.
ModelConfig flat_config(int64_t experts, int64_t k) {
  ModelConfig c = router_config();
  c.n_routed_experts = experts;
  c.num_experts_per_tok = k;
  c.n_group = 1;
  c.topk_group = 1;
  return c;
}

// A router whose logits for the one-hot input e_0 are `logits` [E] (weight column 0).
struct RouterFixture {
  model::ParameterStore store{1, 0.02};
  fp8::RecipeTable recipes = testing::recipes_of("fp32");
  Router router;
  RouterFixture(const ModelConfig& c, const MoeConfig& moe, const std::vector<std::vector<double>>& token_scores) {
    router = Router({&store, &recipes}, c, moe, "model.layers.1.mlp.gate");
    // Token t's input is e_t; weight[i, t] = logit(score_t[i]), so sigmoid(logits) = scores.
    Tensor w = router.weight().value();
    w.zero_();
    for (size_t t = 0; t < token_scores.size(); ++t)
      for (size_t i = 0; i < token_scores[t].size(); ++i) {
        const double s = token_scores[t][i];
        w.data<float>()[i * size_t(c.hidden_size) + t] = float(std::log(s / (1 - s)));
      }
  }
  Var inputs(int64_t n, int64_t d) const {
    Tensor x = Tensor::zeros({n, d});
    for (int64_t t = 0; t < n; ++t) x.data<float>()[t * d + t] = 1.0f;
    return Var(x);
  }
};

std::vector<int64_t> ids_of(const Routing& r) { return r.expert_ids.to_vector<int64_t>(); }

TEST(ModelRouter, GroupLimitedSelectionUsesTheSumOfTheTopTwoPerGroup) {
  const ModelConfig c = router_config();
  // Groups of 2: g0 {0.9, 0.01} sums 0.91, g1 {0.5, 0.5} 1.0, g2 {0.45, 0.44} 0.89, g3 {0.1, 0.1}.
  // Top-2 groups: g1, g0. Expert 4 (0.45) beats expert 1 (0.01) but its group is masked.
  RouterFixture f(c, {}, {{0.9, 0.01, 0.5, 0.5, 0.45, 0.44, 0.1, 0.1}});
  const Routing r = f.router.forward(f.inputs(1, c.hidden_size));
  EXPECT_EQ(ids_of(r), (std::vector<int64_t>{0, 2, 3}));
  // The same scores with one group: the plain top-3.
  ModelConfig flat = c;
  flat.n_group = 1;
  flat.topk_group = 1;
  RouterFixture g(flat, {}, {{0.9, 0.01, 0.5, 0.5, 0.45, 0.44, 0.1, 0.1}});
  EXPECT_EQ(ids_of(g.router.forward(g.inputs(1, c.hidden_size))), (std::vector<int64_t>{0, 2, 3}));
  // Where a max-based group score would differ: g0 {0.9, 0.001} has the best expert but sums
  // 0.901 < g2 {0.6, 0.6} 1.2 < g1 {0.7, 0.7} 1.4, so g1 and g2 stay and expert 0 is masked.
  RouterFixture h(c, {}, {{0.9, 0.001, 0.7, 0.7, 0.6, 0.6, 0.1, 0.1}});
  EXPECT_EQ(ids_of(h.router.forward(h.inputs(1, c.hidden_size))), (std::vector<int64_t>{2, 3, 4}));
}

TEST(ModelRouter, BiasSteersSelectionButGatesUseTheUnbiasedScores) {
  ModelConfig c = flat_config(8, 3);
  c.routed_scaling_factor = 2.5;
  const std::vector<double> s{0.9, 0.2, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1};
  RouterFixture f(c, {}, {s});
  Tensor bias = f.router.bias().value();
  bias.data<float>()[1] = 1.0f;  // 0.2 + 1 = 1.2: expert 1 now wins the selection
  const Routing r = f.router.forward(f.inputs(1, c.hidden_size));
  EXPECT_EQ(ids_of(r), (std::vector<int64_t>{1, 0, 2}));
  // Gates: unbiased scores of the chosen experts, normalized, times 2.5 (fp32 chain: 1e-6).
  const std::vector<double> g = r.gates.value().to_doubles();
  const double sum = 0.2 + 0.9 + 0.8;
  EXPECT_NEAR(g[0], 2.5 * 0.2 / sum, 1e-6);
  EXPECT_NEAR(g[1], 2.5 * 0.9 / sum, 1e-6);
  EXPECT_NEAR(g[2], 2.5 * 0.8 / sum, 1e-6);
  // Without normalization: score × 2.5.
  c.norm_topk_prob = false;
  RouterFixture u(c, {}, {s});
  const std::vector<double> gu = u.router.forward(u.inputs(1, c.hidden_size)).gates.value().to_doubles();
  EXPECT_NEAR(gu[0], 2.5 * 0.9, 1e-6);
  EXPECT_NEAR(gu[1], 2.5 * 0.8, 1e-6);
  EXPECT_NEAR(gu[2], 2.5 * 0.7, 1e-6);
}

TEST(ModelRouter, SequenceAuxLossMatchesAHandComputation) {
  ModelConfig c = flat_config(4, 2);
  MoeConfig moe;
  moe.seq_aux_loss_alpha = 0.01;
  // Two sequences of two tokens.
  const std::vector<std::vector<double>> s{
      {0.9, 0.8, 0.1, 0.2}, {0.3, 0.7, 0.6, 0.1}, {0.2, 0.1, 0.9, 0.6}, {0.5, 0.4, 0.3, 0.2}};
  RouterFixture f(c, moe, s);
  const Routing r = f.router.forward(f.inputs(4, c.hidden_size));
  EXPECT_EQ(ids_of(r), (std::vector<int64_t>{0, 1, 1, 2, 2, 3, 0, 1}));
  const int64_t e = 4, k = 2, t = 2;
  double expected = 0;
  const std::vector<std::vector<int64_t>> chosen{{0, 1}, {1, 2}, {2, 3}, {0, 1}};
  for (int b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < e; ++i) {
      double count = 0, p = 0;
      for (int tok = 0; tok < t; ++tok) {
        const auto& row = s[size_t(b * t + tok)];
        for (int64_t id : chosen[size_t(b * t + tok)]) count += id == i;
        p += row[size_t(i)] / (row[0] + row[1] + row[2] + row[3]);
      }
      expected += double(e) / double(k * t) * count * (p / double(t));
    }
  }
  expected *= 0.01 / 2;  // α, mean over the two sequences
  EXPECT_NEAR(f.router.seq_aux_loss(r, 2, 2).value().item(), expected, 1e-7);
}

TEST(ModelRouter, BiasUpdateMovesTowardTheMeanLoad) {
  ModelConfig c = flat_config(4, 2);
  MoeConfig moe;
  moe.bias_update_rate = 0.25;
  RouterFixture f(c, moe, {{0.5, 0.5, 0.5, 0.5}});
  f.router.update_bias({5, 1, 3, 3});  // mean 3: overloaded down, underloaded up, balanced still
  EXPECT_EQ(f.router.bias().value().to_doubles(), (std::vector<double>{-0.25, 0.25, 0.0, 0.0}));
  f.router.update_bias({5, 1, 3, 3});
  EXPECT_EQ(f.router.bias().value().to_doubles(), (std::vector<double>{-0.5, 0.5, 0.0, 0.0}));
  moe.bias_update_rate = 0;
  RouterFixture off(c, moe, {{0.5, 0.5, 0.5, 0.5}});
  off.router.update_bias({5, 1, 3, 3});
  EXPECT_EQ(off.router.bias().value().to_doubles(), (std::vector<double>{0, 0, 0, 0}));
}

TEST(ModelRouter, CapacityDropsTheLowestGatedPairsOfAnOverloadedExpert) {
  ModelConfig c = flat_config(4, 1);
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1;
  MoeConfig moe;
  moe.capacity_factor = 1.0;  // capacity = ceil(1 · 4 tokens · 1 / 4 experts) = 1
  // Every token prefers expert 0, with scores 0.6, 0.9, 0.7, 0.8: only token 1 keeps it.
  RouterFixture f(c, moe, {{0.6, 0.1, 0.1, 0.1}, {0.9, 0.1, 0.1, 0.1}, {0.7, 0.1, 0.1, 0.1}, {0.8, 0.1, 0.1, 0.1}});
  const Routing r = f.router.forward(f.inputs(4, c.hidden_size));
  EXPECT_EQ(r.order.kept.to_doubles(), (std::vector<double>{0, 1, 0, 0}));
  EXPECT_EQ(r.order.dropped(), 3);
  EXPECT_EQ(r.order.load, (std::vector<int64_t>{4, 0, 0, 0}));
  EXPECT_EQ(r.order.offsets, (std::vector<int64_t>{0, 1, 1, 1, 1}));
  EXPECT_EQ(r.order.pair.to_vector<int64_t>(), (std::vector<int64_t>{1}));
  const std::vector<double> g = r.gates.value().to_doubles();
  EXPECT_EQ(g[0], 0.0);
  EXPECT_NEAR(g[1], 0.9, 1e-6);
}

TEST(ModelRouter, BadDimensionsAreRejectedNamingTheKey) {
  const auto rejects = [](auto edit, std::vector<std::string> needles) {
    ModelConfig c = testing::small_model_config();
    edit(c);
    testing::expect_error([&] { c.validate(); }, needles);
  };
  rejects([](ModelConfig& c) { c.n_group = 3; }, {"model.n_group", "8"});
  rejects([](ModelConfig& c) { c.topk_group = 5; }, {"model.topk_group", "5"});
  rejects([](ModelConfig& c) { c.num_experts_per_tok = 9; }, {"model.num_experts_per_tok", "9"});
  rejects([](ModelConfig& c) { c.topk_group = 1; }, {"model.num_experts_per_tok", "topk_group"});
  rejects([](ModelConfig& c) { c.qk_rope_head_dim = 5; }, {"model.qk_rope_head_dim", "even"});
  rejects([](ModelConfig& c) { c.num_attention_heads = 0; }, {"model.num_attention_heads"});
  rejects([](ModelConfig& c) { c.scoring_func = "relu"; }, {"model.scoring_func", "relu"});
  rejects(
      [](ModelConfig& c) {
        c.n_group = 8;
        c.topk_group = 4;
      },
      {"model.n_group", "top-2"});
  rejects(  // the routing kernels keep one bit per group
      [](ModelConfig& c) {
        c.n_routed_experts = 256;
        c.n_group = 128;
      },
      {"model.n_group", "128", "64"});
}

}  // namespace
}  // namespace daedalus
