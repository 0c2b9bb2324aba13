// YaRN RoPE (model/rope_scaling.h): frequencies, cos/sin amplitude and softmax scale against values
// transformers 5.25 computed, against the independent double reference of tests/model_testing, the
// kernel with an amplitude against a double rotation, its gradient against finite differences, and
// `model.rope_scaling` in the YAML config (types other than yarn refused naming the key).
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/kernels/rope.h"
#include "autograd/ops/rope.h"
#include "model/rope_scaling.h"
#include "tests/gradcheck.h"
#include "tests/model_testing.h"
#include "tests/testing.h"
#if !DAEDALUS_MINIMAL
#include "train/config.h"
#endif

namespace daedalus {
namespace {

using model::ModelConfig;
using model::RopeScaling;

// DeepSeek-V3's released rope_scaling with its rope dims (qk_rope_head_dim 64, theta 10000).
ModelConfig deepseek_v3_yarn() {
  ModelConfig c;  // defaults: DeepSeek-V3 (nope 128, rope 64, theta 1e4)
  RopeScaling y;
  y.factor = 40;
  y.original_max_position_embeddings = 4096;
  y.beta_fast = 32;
  y.beta_slow = 1;
  y.mscale = 1;
  y.mscale_all_dim = 1;
  c.rope_scaling = y;
  c.max_position_embeddings = 163840;
  return c;
}

TEST(RopeScaling, DeepSeekV3ReleaseMatchesTransformers) {
  // Printed by transformers 5.25 (DeepseekV3RotaryEmbedding.inv_freq, attention_scaling,
  // DeepseekV3Attention.scaling) for this config. HF's inv_freq is fp32 (base ** (2j/d) and the
  // blend in float32: a few float roundings, < 1e-6 relative); ours is double. The ramp runs from
  // dim 10 (floor of 10.47) to 23 (ceil of 22.51): dims 0..10 keep base^(-2j/d), 23.. are divided by 40.
  const double hf[32] = {1.000000000e+00, 7.498942018e-01, 5.623413324e-01, 4.216965139e-01, 3.162277639e-01,
                         2.371373624e-01, 1.778279394e-01, 1.333521456e-01, 1.000000015e-01, 7.498941571e-02,
                         5.623412877e-02, 3.900692612e-02, 2.687936090e-02, 1.837814413e-02, 1.244795602e-02,
                         8.334509097e-03, 5.500000436e-03, 3.561997321e-03, 2.249365207e-03, 1.370513462e-03,
                         7.905694074e-04, 4.149904125e-04, 1.778279402e-04, 3.333803397e-05, 2.499999937e-05,
                         1.874735426e-05, 1.405853254e-05, 1.054241238e-05, 7.905694474e-06, 5.928434348e-06,
                         4.445698323e-06, 3.333803534e-06};
  const ModelConfig c = deepseek_v3_yarn();
  const kernels::RopeFrequencies f = model::rope_frequencies(c);
  ASSERT_EQ(f.inv_freq.size(), 32u);
  for (size_t j = 0; j < 32; ++j) EXPECT_NEAR(f.inv_freq[j], hf[j], 1e-6 * hf[j]) << "j = " << j;
  EXPECT_EQ(f.attention_factor, 1.0);  // mscale == mscale_all_dim: the ratio is exactly 1
  // HF's Python double: 192^-0.5 * (0.1 ln 40 + 1)^2 = 0.1352337788608801; the same double
  // operations here, so to a couple of ulps.
  EXPECT_NEAR(model::attention_softmax_scale(c), 0.1352337788608801, 1e-15);
  EXPECT_NEAR(model::yarn_mscale(40, 1), 1.3688879454113936, 1e-15);
}

TEST(RopeScaling, RaggedConfigMatchesTransformers) {
  // qk_rope 8, theta 500, factor 4, original 250, beta 8 / 2, mscale 0.707 / mscale_all_dim 0.5
  // (attention factor = mscale(4, 0.707) / mscale(4, 0.5) != 1): transformers 5.25's values.
  ModelConfig c;
  c.qk_rope_head_dim = 8;
  c.qk_nope_head_dim = 16;
  c.rope_theta = 500;
  RopeScaling y;
  y.factor = 4;
  y.original_max_position_embeddings = 250;
  y.beta_fast = 8;
  y.beta_slow = 2;
  y.mscale = 0.707;
  y.mscale_all_dim = 0.5;
  c.rope_scaling = y;
  const kernels::RopeFrequencies f = model::rope_frequencies(c);
  const double hf[4] = {1.000000000e+00, 2.114742398e-01, 1.118034031e-02, 2.364353975e-03};
  for (size_t j = 0; j < 4; ++j) EXPECT_NEAR(f.inv_freq[j], hf[j], 1e-6 * hf[j]) << "j = " << j;
  EXPECT_NEAR(f.attention_factor, 1.0268361529030026, 1e-15);
  EXPECT_NEAR(model::attention_softmax_scale(c), 0.23340248099017752, 1e-15);
}

TEST(RopeScaling, MatchesTheIndependentReferenceOverManyConfigs) {
  // Same double formulas written separately (tests/model_testing.cpp): agreement to 1e-14
  // relative (a handful of double roundings), across truncate on/off, default betas (0),
  // an explicit attention_factor and mscale_all_dim 0 (no softmax correction).
  int cases = 0;
  for (int64_t rope : {2, 8, 64})
    for (double factor : {1.0, 2.5, 40.0})
      for (int64_t original : {16, 4096})
        for (bool truncate : {true, false})
          for (int variant = 0; variant < 3; ++variant) {
            ModelConfig c;
            c.qk_rope_head_dim = rope;
            c.rope_theta = variant == 2 ? 1e6 : 1e4;
            RopeScaling y;
            y.factor = factor;
            y.original_max_position_embeddings = original;
            y.truncate = truncate;
            y.beta_fast = variant == 1 ? 0 : 16;
            y.beta_slow = variant == 1 ? 0 : 2;
            y.mscale = variant == 0 ? 0.8 : 1.0;
            y.mscale_all_dim = variant == 1 ? 0.0 : 0.7;
            if (variant == 2) y.attention_factor = 1.25;
            c.rope_scaling = y;
            const kernels::RopeFrequencies f = model::rope_frequencies(c);
            const testing::RopeReference r = testing::rope_reference(c);
            ASSERT_EQ(f.inv_freq.size(), r.inv_freq.size());
            for (size_t j = 0; j < r.inv_freq.size(); ++j)
              ASSERT_NEAR(f.inv_freq[j], r.inv_freq[j], 1e-14 * r.inv_freq[j]) << "case " << cases << " j " << j;
            ASSERT_NEAR(f.attention_factor, r.amplitude, 1e-14) << "case " << cases;
            ASSERT_NEAR(model::attention_softmax_scale(c), r.softmax_scale, 1e-14 * r.softmax_scale);
            ++cases;
          }
  EXPECT_EQ(cases, 108);
  // Without rope_scaling: plain RoPE, amplitude 1, scale 1/sqrt(qk).
  const ModelConfig plain;
  EXPECT_EQ(model::rope_frequencies(plain).attention_factor, 1.0);
  EXPECT_EQ(model::rope_frequencies(plain).inv_freq, kernels::RopeFrequencies::standard(1e4, 64).inv_freq);
  EXPECT_DOUBLE_EQ(model::attention_softmax_scale(plain), 1 / std::sqrt(192.0));
}

TEST(RopeScaling, KernelAppliesFrequenciesAndAmplitude) {
  // y = m R(angle) x with angle = pos * inv_freq[j]: a double reference; the float table rounds
  // m cos and m sin once (2^-24 relative) and the kernel adds two products in float: an absolute
  // error of about 4 * 2^-24 * m * (|a| + |b|), so 12 * 2^-24 * m * max|x|.
  kernels::RopeFrequencies f;
  f.inv_freq = {1.0, 0.37, 2.5e-3, 1e-5};
  f.attention_factor = 1.1;
  const Shape shape = {2, 9, 3, 8};
  const Tensor x = testing::random_tensor(shape, 41);
  const std::vector<int64_t> pos = {0, 1, 5, 4095, 4096, 5000, 9000, 20000, 163839};
  const Tensor positions = Tensor::from_vector(pos, {9});
  const std::vector<double> xd = x.to_doubles();
  double max_x = 0;
  for (double v : xd) max_x = std::max(max_x, std::fabs(v));
  for (bool inverse : {false, true}) {
    const std::vector<double> y = kernels::rope(x, positions, f, kernels::RopeLayout::interleaved, inverse).to_doubles();
    for (size_t row = 0; row < xd.size() / 8; ++row) {
      const int64_t t = int64_t(row / 3) % 9;
      for (size_t j = 0; j < 4; ++j) {
        const double angle = double(pos[size_t(t)]) * f.inv_freq[j];
        const double c = 1.1 * std::cos(angle), s = 1.1 * std::sin(angle) * (inverse ? -1 : 1);
        const double a = xd[row * 8 + 2 * j], b = xd[row * 8 + 2 * j + 1];
        ASSERT_NEAR(y[row * 8 + 2 * j], a * c - b * s, 12 * testing::kU32 * 1.1 * max_x);
        ASSERT_NEAR(y[row * 8 + 2 * j + 1], a * s + b * c, 12 * testing::kU32 * 1.1 * max_x);
      }
    }
  }
  EXPECT_TRUE(testing::mentions(testing::error_of([&] {
                                  kernels::rope(Tensor::zeros({1, 9, 1, 6}), positions, f,
                                                kernels::RopeLayout::interleaved);
                                }),
                                {"rope", "4 frequencies", "[1, 9, 1, 6]"}));
}

TEST(RopeScaling, GradientIsTheTransposeAndMatchesFiniteDifferences) {
  // With an amplitude m != 1 the map is m R, not a rotation: backward must be m R^T (the kernel's
  // inverse flag with the same table), checked by the gradcheck harness (see gradcheck.h).
  const kernels::RopeFrequencies f = model::rope_frequencies(testing::small_yarn_config());
  ASSERT_NE(f.attention_factor, 1.0);
  const Tensor pos = Tensor::from_vector<int64_t>({2, 17, 40, 63}, {4});
  for (kernels::RopeLayout layout : {kernels::RopeLayout::interleaved, kernels::RopeLayout::half}) {
    testing::expect_gradcheck([&](const std::vector<Var>& in) { return ops::rope(in[0], pos, f, layout); },
                              {testing::random_tensor({2, 4, 3, 8}, 43)});
  }
}

TEST(RopeScaling, ValidationNamesTheKey) {
  ModelConfig c = testing::small_yarn_config();
  c.rope_scaling->factor = 0.5;
  testing::expect_error([&] { c.validate(); }, {"model.rope_scaling.factor", "0.5"});
  c = testing::small_yarn_config();
  c.rope_scaling->original_max_position_embeddings = 0;
  testing::expect_error([&] { c.validate(); }, {"model.rope_scaling.original_max_position_embeddings"});
  c = testing::small_yarn_config();
  c.rope_scaling->beta_fast = 0.5;
  testing::expect_error([&] { c.validate(); }, {"model.rope_scaling.beta_fast", "beta_slow"});
}

#if !DAEDALUS_MINIMAL
TEST(RopeScaling, YamlKeyReadsWritesAndRefusesOtherTypes) {
  const std::string base = "data: {format: synthetic}\n";
  const train::RunConfig a = train::parse_config(
      base + "model:\n  rope_scaling: {type: yarn, factor: 40, original_max_position_embeddings: 4096, "
             "beta_fast: 32, beta_slow: 1, mscale: 1.0, mscale_all_dim: 1.0}\n",
      {}, "test.yaml");
  ASSERT_TRUE(a.model.rope_scaling.has_value());
  EXPECT_EQ(a.model.rope_scaling->factor, 40.0);
  EXPECT_EQ(a.model.rope_scaling->original_max_position_embeddings, 4096);
  EXPECT_EQ(a.model.rope_scaling->mscale_all_dim, 1.0);
  EXPECT_FALSE(a.model.rope_scaling->attention_factor.has_value());
  // HF's rope_type spelling, and the round trip through the resolved YAML.
  const train::RunConfig b = train::parse_config(
      base + "model:\n  rope_scaling: {rope_type: yarn, factor: 2.5, original_max_position_embeddings: 16, "
             "attention_factor: 1.5, truncate: false}\n",
      {}, "test.yaml");
  EXPECT_EQ(b.model.rope_scaling->attention_factor, std::optional<double>(1.5));
  EXPECT_FALSE(b.model.rope_scaling->truncate);
  const std::string text = train::to_yaml(b);
  EXPECT_EQ(train::to_yaml(train::parse_config(text, {}, "resolved.yaml")), text);
  EXPECT_FALSE(train::parse_config(base + "model: {rope_scaling: null}\n", {}, "t.yaml").model.rope_scaling);
  // --set takes the same map.
  const train::RunConfig c = train::parse_config(
      base, {"model.rope_scaling={type: yarn, factor: 4, original_max_position_embeddings: 32}"}, "test.yaml");
  EXPECT_EQ(c.model.rope_scaling->factor, 4.0);

  testing::expect_error(
      [&] {
        train::parse_config(base + "model:\n  rope_scaling: {type: linear, factor: 2.0}\n", {}, "test.yaml");
      },
      {"test.yaml:3", "model.rope_scaling.type", "\"linear\" is not supported"});
  testing::expect_error(
      [&] {
        train::parse_config(base + "model:\n  rope_scaling: {rope_type: dynamic, factor: 2.0}\n", {}, "test.yaml");
      },
      {"model.rope_scaling.rope_type", "dynamic"});
  testing::expect_error(
      [&] { train::parse_config(base + "model:\n  rope_scaling: {factor: 2.0}\n", {}, "test.yaml"); },
      {"model.rope_scaling.type", "missing"});
  testing::expect_error(
      [&] {
        train::parse_config(base + "model:\n  rope_scaling: {type: yarn, original_max_position_embeddings: 8}\n", {},
                            "test.yaml");
      },
      {"model.rope_scaling.factor", "missing"});
  testing::expect_error(
      [&] {
        train::parse_config(base + "model:\n  rope_scaling: {type: yarn, factor: 2, original_max_position_embeddings: "
                                   "8, mscal: 1}\n",
                            {}, "test.yaml");
      },
      {"model.rope_scaling.mscal", "unknown key", "did you mean mscale"});
}
#endif

}  // namespace
}  // namespace daedalus
