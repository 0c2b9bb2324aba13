// Generation: MLA's latent (absorbed) and expanded KV caches against the training model's
// full-sequence forward, the sampler on fixed distributions, seeded reproducibility, the cache
// accounting for DeepSeek-V3's shape, and generate()'s input checks.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "model/kv_cache.h"
#include "tests/model_testing.h"
#include "train/generate.h"
#if !DAEDALUS_MINIMAL
#include "train/config.h"
#endif

namespace daedalus::train {
namespace {

using model::CacheKind;

// The small two-layer shape (one dense layer, one MoE layer with 8 experts in 4 groups, a shared
// expert, q_lora, MTP) under the fp32 recipe, dropless.
model::LmOptions fp32_options(bool q_lora = true) {
  model::LmOptions o;
  o.config = testing::small_model_config();
  if (!q_lora) o.config.q_lora_rank.reset();
  o.recipes = testing::recipes_of("fp32");
  o.seed = 11;
  return o;
}

std::vector<int64_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(int64_t(gen.next_u64() % uint64_t(vocab)));
  return out;
}

// max |a - b| over rows [row0, row0 + rows) of two [1, T, V] logit tensors, and max |a| there.
struct Diff {
  double max_abs = 0, scale = 0;
};
void accumulate(Diff* d, const std::vector<double>& a, const std::vector<double>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    d->max_abs = std::max(d->max_abs, std::abs(a[i] - b[i]));
    d->scale = std::max(d->scale, std::abs(b[i]));
  }
}

// Decodes `tokens` with the cache in chunks: the first `prefill` tokens at once (0: none), then one
// token per call; returns the max difference to CausalLM::logits over the whole sequence.
Diff decode_vs_forward(model::CausalLM& lm, const std::vector<int64_t>& tokens, CacheKind kind, int64_t prefill) {
  NoGradGuard no_grad;
  const int64_t t = int64_t(tokens.size()), v = lm.options().config.vocab_size;
  const Tensor full = lm.logits(Tensor::from_vector(tokens, {1, t})).value();  // [1, T, V]
  model::DecodeCache cache = lm.new_cache(kind);
  Diff d;
  int64_t pos = 0;
  while (pos < t) {
    const int64_t n = (pos == 0 && prefill > 0) ? prefill : 1;
    const std::vector<int64_t> chunk(tokens.begin() + pos, tokens.begin() + pos + n);
    const Tensor got = lm.decode(Tensor::from_vector(chunk, {1, n}), cache);
    EXPECT_EQ(got.shape(), (Shape{1, n, v}));
    accumulate(&d, got.to_doubles(), full.slice(1, pos, pos + n).to_doubles());
    pos += n;
    EXPECT_EQ(cache.length(), pos);
  }
  return d;
}

// fp32 on both sides; the decode path reassociates the same sums (absorbed kv_b_proj, one-pass
// softmax instead of the flash blocks, other GEMM shapes), so each logit differs by rounding only
// (~6e-8 relative per operation, accumulated through 2 layers, the router's gates and the head):
// measured max |Δ| 1.9e-6 on logits of scale 2.9, i.e. 6.5e-7 of the scale. 1e-5 of the scale
// leaves 15x margin and is still far below what a wrong position, mask, norm or rope pairing
// does (errors of the logits' own order, ≥ 1e-2).
constexpr double kLogitTolerance = 1e-5;

TEST(GenerateDecode, LatentAndExpandedCachesEqualFullForwardTokenByToken) {
  for (bool q_lora : {true, false}) {
    model::CausalLM lm(fp32_options(q_lora));
    const std::vector<int64_t> tokens = random_tokens(48, lm.options().config.vocab_size, 3);  // 48 > 3 blocks of 16
    for (CacheKind kind : {CacheKind::latent, CacheKind::expanded}) {
      SCOPED_TRACE(fmt::format("q_lora {}, {} cache", q_lora, kind == CacheKind::latent ? "latent" : "expanded"));
      const Diff d = decode_vs_forward(lm, tokens, kind, /*prefill=*/0);
      EXPECT_GT(d.scale, 0.5);  // logits of order one: the comparison is not of near-zeros
      EXPECT_LE(d.max_abs, kLogitTolerance * d.scale) << "max |Δ| " << d.max_abs << " of scale " << d.scale;
      std::printf("[ decode ] q_lora %d %s: max |Δlogit| %.3g of scale %.3g\n", int(q_lora),
                  kind == CacheKind::latent ? "latent" : "expanded", d.max_abs, d.scale);
    }
  }
}

TEST(GenerateDecode, PrefillThenDecodeEqualsFullForward) {
  model::CausalLM lm(fp32_options());
  const std::vector<int64_t> tokens = random_tokens(45, lm.options().config.vocab_size, 4);
  for (CacheKind kind : {CacheKind::latent, CacheKind::expanded}) {
    const Diff d = decode_vs_forward(lm, tokens, kind, /*prefill=*/19);
    EXPECT_LE(d.max_abs, kLogitTolerance * d.scale) << "max |Δ| " << d.max_abs << " of scale " << d.scale;
  }
}

TEST(GenerateDecode, YarnDecodeEqualsFullForward) {
  // model.rope_scaling yarn (frequencies, cos/sin amplitude, softmax-scale correction) in the
  // latent and expanded caches, past the original context of 16 positions; tolerance as above.
  model::LmOptions o = fp32_options();
  o.config = testing::small_yarn_config();
  model::CausalLM lm(o);
  const std::vector<int64_t> tokens = random_tokens(40, o.config.vocab_size, 5);
  for (CacheKind kind : {CacheKind::latent, CacheKind::expanded}) {
    const Diff d = decode_vs_forward(lm, tokens, kind, /*prefill=*/7);
    EXPECT_GT(d.scale, 0.5);
    EXPECT_LE(d.max_abs, kLogitTolerance * d.scale) << "max |Δ| " << d.max_abs << " of scale " << d.scale;
  }
}

TEST(GenerateDecode, CacheHoldsWhatItsKindStores) {
  model::CausalLM lm(fp32_options());
  const model::ModelConfig& c = lm.options().config;
  NoGradGuard no_grad;
  for (CacheKind kind : {CacheKind::latent, CacheKind::expanded}) {
    model::DecodeCache cache = lm.new_cache(kind);
    lm.decode(Tensor::from_vector(random_tokens(10, c.vocab_size, 5), {1, 10}), cache);
    const model::CacheFootprint f = model::cache_footprint(c);
    const int64_t per_token = kind == CacheKind::latent ? f.latent : f.expanded;
    EXPECT_EQ(cache.bytes(), 10 * c.num_hidden_layers * per_token * 4);
  }
}

TEST(GenerateDecode, RoutingCountsNoLoadAtDecode) {
  model::CausalLM lm(fp32_options());
  GenerateOptions o;
  o.max_new_tokens = 5;
  generate(lm, {1, 2, 3}, o);
  model::DecodeCache cache = lm.new_cache(CacheKind::latent);
  lm.decode(Tensor::from_vector(std::vector<int64_t>{4, 5}, {1, 2}), cache);  // grad mode on here
  ASSERT_FALSE(lm.moe_layers().empty());
  for (model::Moe* moe : lm.moe_layers())
    for (int64_t n : moe->load().tokens) EXPECT_EQ(n, 0);  // the bias update never sees generation
}

TEST(Generate, GreedyIsDeterministicAndMatchesTheNaiveSampler) {
  model::CausalLM lm(fp32_options());
  GenerateOptions o;
  o.max_new_tokens = 30;
  o.sampling.temperature = 0;
  const std::vector<int64_t> prompt = {5, 9, 1, 30};
  const std::vector<int64_t> a = generate(lm, prompt, o);
  o.cache = CacheKind::expanded;
  const std::vector<int64_t> b = generate(lm, prompt, o);
  SampleOptions naive;
  naive.max_new_tokens = 30;
  naive.temperature = 0;
  EXPECT_EQ(a.size(), 30u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, sample(lm, prompt, naive));  // full forward per token, no cache
}

TEST(Generate, SeededSamplingIsReproducibleAndSeedDependent) {
  model::CausalLM lm(fp32_options());
  GenerateOptions o;
  o.max_new_tokens = 30;
  o.sampling.temperature = 1.0;
  o.seed = 7;
  std::vector<int64_t> streamed;
  GenerateStats stats;
  const std::vector<int64_t> a = generate(
      lm, {3, 4}, o, [&](int64_t t) { streamed.push_back(t); }, &stats);
  EXPECT_EQ(a, generate(lm, {3, 4}, o));
  EXPECT_EQ(a, streamed);
  EXPECT_EQ(stats.new_tokens, 30);
  EXPECT_EQ(stats.decode_steps, 29);  // the last token is not fed back
  EXPECT_FALSE(stats.context_full);
  o.seed = 8;
  // 30 draws over 37 tokens at temperature 1 from logits of order one: equal sequences for two
  // seeds would need every draw to coincide.
  EXPECT_NE(a, generate(lm, {3, 4}, o));
}

TEST(Sampler, TemperatureTopKTopPRestrictTheSupport) {
  const std::vector<double> p = {0.1, 0.4, 0.05, 0.3, 0.15};  // ranks: 1, 3, 4, 0, 2
  std::vector<double> logits;
  for (double x : p) logits.push_back(std::log(x) + 2.0);  // a shift changes nothing
  const auto dist = [&](double temperature, int64_t top_k, double top_p) {
    return sampling_distribution(logits, SamplingOptions{temperature, top_k, top_p});
  };
  const auto expect_dist = [](const std::vector<double>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << "token " << i;  // double math
  };
  expect_dist(dist(1.0, 0, 1.0), p);
  expect_dist(dist(1.0, 2, 1.0), {0, 0.4 / 0.7, 0, 0.3 / 0.7, 0});
  expect_dist(dist(1.0, 0, 0.65), {0, 0.4 / 0.7, 0, 0.3 / 0.7, 0});             // 0.4 < 0.65 <= 0.7
  expect_dist(dist(1.0, 0, 0.8), {0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85});  // 0.7 < 0.8 <= 0.85
  expect_dist(dist(1.0, 0, 0.01), {0, 1, 0, 0, 0});                             // at least one token
  expect_dist(dist(0.0, 0, 1.0), {0, 1, 0, 0, 0});                              // greedy
  // Temperature 2: p^(1/2) renormalized; then top_k 3 and top_p over the renormalized three.
  double z = 0;
  for (double x : p) z += std::sqrt(x);
  std::vector<double> t2;
  for (double x : p) t2.push_back(std::sqrt(x) / z);
  expect_dist(dist(2.0, 0, 1.0), t2);
  const double a = std::sqrt(0.4), b = std::sqrt(0.3), c = std::sqrt(0.15);
  // The top 3 renormalized: a / (a + b + c) = 0.40 < 0.5 <= (a + b) / (a + b + c) = 0.75.
  expect_dist(dist(2.0, 3, 1.0), {0, a / (a + b + c), 0, b / (a + b + c), c / (a + b + c)});
  expect_dist(dist(2.0, 3, 0.5), {0, a / (a + b), 0, b / (a + b), 0});
}

TEST(Sampler, DrawsFollowTheDistributionWithinItsSupport) {
  const std::vector<double> logits = {0.0, 2.0, -1.0, 1.5, 0.5};
  const SamplingOptions o{1.0, 3, 1.0};
  const std::vector<double> want = sampling_distribution(logits, o);
  Generator gen(123);
  constexpr int kDraws = 20000;
  std::map<int64_t, int> count;
  for (int i = 0; i < kDraws; ++i) ++count[pick_token(logits, o, gen)];
  for (const auto& [id, n] : count) EXPECT_GT(want[size_t(id)], 0) << "token " << id << " outside the top 3";
  for (size_t i = 0; i < want.size(); ++i) {
    // Binomial: 5 standard deviations of the count (fails by chance with probability ~1e-6).
    const double mean = kDraws * want[i], sd = std::sqrt(kDraws * want[i] * (1 - want[i]));
    EXPECT_NEAR(count[int64_t(i)], mean, 5 * sd + 1e-9) << "token " << i;
  }
}

TEST(CacheFootprint, DeepSeekV3Is576Versus40960ElementsPerTokenPerLayer) {
  const auto check = [](const model::ModelConfig& c) {
    const model::CacheFootprint f = model::cache_footprint(c);
    EXPECT_EQ(f.latent, 576);       // 512 + 64
    EXPECT_EQ(f.expanded, 40960);   // 128 · (128 + 64 + 128)
    EXPECT_EQ(f.mha, 32768);        // 2 · 128 · 128
    EXPECT_EQ(4 * f.latent, 2304);  // fp32 bytes; bf16 1152 vs 81,920
  };
  check(model::ModelConfig{});  // the defaults are DeepSeek-V3's
#if !DAEDALUS_MINIMAL
  const auto configs = std::filesystem::path(__FILE__).parent_path().parent_path() / "configs";
  check(load_config((configs / "deepseek-v3.yaml").string()).model);
#endif
}

TEST(Generate, BadInputIsAnInputErrorAndTheContextBoundsTheOutput) {
  model::CausalLM lm(fp32_options());
  const model::ModelConfig& c = lm.options().config;
  GenerateOptions o;
  o.max_new_tokens = 10;
  EXPECT_THROW(generate(lm, {}, o), InputError);
  EXPECT_THROW(generate(lm, {1, c.vocab_size}, o), InputError);
  EXPECT_THROW(generate(lm, {1, -1}, o), InputError);
  EXPECT_THROW(generate(lm, std::vector<int64_t>(size_t(c.max_position_embeddings) + 1, 1), o), InputError);
  GenerateOptions bad = o;
  bad.sampling.top_p = 0;
  EXPECT_THROW(generate(lm, {1}, bad), InputError);
  bad = o;
  bad.sampling.temperature = -1;
  EXPECT_THROW(generate(lm, {1}, bad), InputError);

  // prompt + new tokens stop at max_position_embeddings (64): 60 + 4.
  GenerateStats stats;
  const std::vector<int64_t> out = generate(lm, std::vector<int64_t>(60, 2), o, {}, &stats);
  EXPECT_EQ(out.size(), 4u);
  EXPECT_TRUE(stats.context_full);
  EXPECT_EQ(stats.decode_steps, 3);
  EXPECT_TRUE(generate(lm, std::vector<int64_t>(64, 2), o).empty());
}

}  // namespace
}  // namespace daedalus::train
