// The FP4 recipes on the Linear op (fp8/linear.h, fp8/recipe.h): nvfp4 and mxfp4 apply their
// formats to all three GEMMs exactly (with and without the Hadamard transform; stochastic rounding
// off, so that the reference is deterministic), stochastic rounding is reproducible from the
// state's seed and unbiased in the gradient on average, fp4_experts runs FP8 1x128 activations
// against MXFP4 weights with straight-through gradients, every FP4 recipe stays within its format's
// error of fp32, and the recipe table and config keys route them.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/kernels/gemm.h"
#include "fp8/hadamard.h"
#include "fp8/linear.h"
#include "tests/model_testing.h"
#include "tests/testing.h"

namespace daedalus::fp8 {
namespace {

using testing::random_tensor;

using testing::LinearRun;
using testing::run_linear;

Recipe fp4_recipe(RecipeKind kind, bool hadamard, bool sr) {
  Recipe r = Recipe{}.with_kind(kind);
  r.fp4.hadamard = hadamard;
  r.fp4.stochastic_rounding = sr;
  return r;
}

constexpr int64_t kM = 40, kN = 48, kK = 80;  // tokens not a multiple of 16 or 32: padded Hadamard chunks

TEST(Fp4Linear, Nvfp4AndMxfp4ApplyExactlyToAllThreeGemms) {
  const Tensor x = random_tensor({kM, kK}, 1), w = random_tensor({kN, kK}, 2, DType::f32, 0.05),
               g = random_tensor({kM, kN}, 3);
  for (RecipeKind kind : {RecipeKind::nvfp4, RecipeKind::mxfp4}) {
    for (bool hadamard : {false, true}) {
      SCOPED_TRACE(::testing::Message() << recipe_name(kind) << (hadamard ? " with RHT" : " without RHT"));
      const Recipe r = fp4_recipe(kind, hadamard, /*sr=*/false);
      LinearState state;
      state.rounding_seed = 5;
      const LinearRun run = run_linear(x, w, g, r, &state);
      const GemmSpec f = r.fprop(), d = r.dgrad(), wg = r.wgrad();
      // Fprop and Dgrad: nvfp4's weights in 16x16 blocks, the same q(W) transposed for Dgrad.
      const QuantizedTensor qw = quantize(w, f.b.granularity, Format::e2m1);
      EXPECT_TRUE(testing::bit_identical(run.y, scaled_gemm(quantize(x, f.a.granularity, Format::e2m1), qw)));
      const QuantizedTensor qwt =
          kind == RecipeKind::nvfp4 ? transpose_quantized(qw) : quantize(w.t(), d.b.granularity, Format::e2m1);
      EXPECT_TRUE(testing::bit_identical(run.dx, scaled_gemm(quantize(g, d.a.granularity, Format::e2m1), qwt)));
      // Wgrad: along tokens, from X itself, through the transform keyed by the state's seed.
      Tensor a = g.t(), b = x.t();
      if (hadamard) {
        const uint64_t seed = random_use_seed(state.rounding_seed, RandomUse::hadamard);
        a = random_hadamard_16(a, seed);
        b = random_hadamard_16(b, seed);
        EXPECT_EQ(a.size(1), 48);
      }
      EXPECT_TRUE(testing::bit_identical(run.dw, scaled_gemm(quantize(a, wg.a.granularity, Format::e2m1),
                                                             quantize(b, wg.b.granularity, Format::e2m1))));
    }
  }
}

// Relative Frobenius error of an FP4 result against fp32: E2M1 has 2 significant bits (unit roundoff
// 2^-2, RMS relative error of one rounding about 10% for normal data); a product of two such operands
// summed over K stays near 15%: below 30%, and above 1% (FP4 was applied).
double relative_error(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = got.to_doubles(), w = want.to_doubles();
  double e = 0, n = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    e += (g[i] - w[i]) * (g[i] - w[i]);
    n += w[i] * w[i];
  }
  return std::sqrt(e / n);
}

TEST(Fp4Linear, EveryFp4RecipeApproachesFp32WithinItsFormatError) {
  const Tensor x = random_tensor({kM, kK}, 4), w = random_tensor({kN, kK}, 5, DType::f32, 0.05),
               g = random_tensor({kM, kN}, 6);
  LinearState s32;
  const LinearRun ref = run_linear(x, w, g, Recipe{}.with_kind(RecipeKind::fp32), &s32);
  for (RecipeKind kind : {RecipeKind::nvfp4, RecipeKind::mxfp4, RecipeKind::fp4_experts}) {
    LinearState state;
    state.rounding_seed = 9;
    const LinearRun run = run_linear(x, w, g, Recipe{}.with_kind(kind), &state);
    for (auto [name, got, want] :
         {std::tuple{"y", run.y, ref.y}, std::tuple{"dx", run.dx, ref.dx}, std::tuple{"dw", run.dw, ref.dw}}) {
      const double err = relative_error(got, want);
      // fp4_experts quantizes only W to FP4 (and everything in its backward to FP8): the gradients
      // carry E4M3's error (below 10%) on top of the FP4 weight's in dx.
      EXPECT_LT(err, 0.3) << recipe_name(kind) << " " << name;
      EXPECT_GT(err, kind == RecipeKind::fp4_experts && std::string(name) == "dw" ? 1e-4 : 1e-2)
          << recipe_name(kind) << " " << name;
    }
  }
}

TEST(Fp4Linear, StochasticRoundingIsReproducibleFromTheSeedAndUnbiasedOnAverage) {
  const Tensor x = random_tensor({kM, kK}, 7), w = random_tensor({kN, kK}, 8, DType::f32, 0.05),
               g = random_tensor({kM, kN}, 9);
  const Recipe r = fp4_recipe(RecipeKind::nvfp4, /*hadamard=*/true, /*sr=*/true);
  const auto run_seeded = [&](uint64_t seed) {
    LinearState state;
    state.rounding_seed = seed;
    return run_linear(x, w, g, r, &state);
  };
  const LinearRun a = run_seeded(1), b = run_seeded(1), c = run_seeded(2);
  EXPECT_TRUE(testing::bit_identical(a.dw, b.dw));  // the same seed: the same words, the same bits
  EXPECT_TRUE(testing::bit_identical(a.dx, b.dx));
  EXPECT_TRUE(testing::bit_identical(a.y, c.y));  // the forward pass rounds to nearest
  EXPECT_FALSE(testing::bytes(a.dw) == testing::bytes(c.dw));
  EXPECT_FALSE(testing::bytes(a.dx) == testing::bytes(c.dx));
  // Averaged over seeds, dX approaches the product q(dY)·q(W) would have without rounding dY: the
  // error of the mean of 64 stochastic runs is well below one nearest-even run's (dY's rounding is
  // unbiased; what remains is W's nearest-even error, common to both).
  const QuantizedTensor qwt = transpose_quantized(quantize(w, Granularity::nv_16x16, Format::e2m1));
  const std::vector<double> target = kernels::matmul(g, qwt.dequantize().t()).to_doubles();
  std::vector<double> mean(target.size(), 0.0);
  for (uint64_t s = 0; s < 64; ++s) {
    const std::vector<double> dx = run_seeded(100 + s).dx.to_doubles();
    for (size_t i = 0; i < dx.size(); ++i) mean[i] += dx[i] / 64;
  }
  const std::vector<double> rne =
      run_linear(x, w, g, fp4_recipe(RecipeKind::nvfp4, true, false), nullptr).dx.to_doubles();
  double e_mean = 0, e_rne = 0;
  for (size_t i = 0; i < target.size(); ++i) {
    e_mean += (mean[i] - target[i]) * (mean[i] - target[i]);
    e_rne += (rne[i] - target[i]) * (rne[i] - target[i]);
  }
  EXPECT_LT(e_mean, 0.25 * e_rne);
}

TEST(Fp4Linear, Fp4ExpertsIsW4A8ForwardWithStraightThroughGradients) {
  const Tensor x = random_tensor({kM, 256}, 10), w = random_tensor({kN, 256}, 11, DType::f32, 0.05),
               g = random_tensor({kM, kN}, 12);
  const Recipe r = Recipe{}.with_kind(RecipeKind::fp4_experts);
  LinearState state;
  const LinearRun run = run_linear(x, w, g, r, &state);
  const QuantizedTensor qx = quantize(x, Granularity::tile_1x128, Format::e4m3);
  const QuantizedTensor qw = quantize(w, Granularity::mx_1x32, Format::e2m1);
  EXPECT_TRUE(testing::bit_identical(run.y, scaled_gemm(qx, qw)));
  // Dgrad: fp8_block's, on Wq (the FP4-rounded weight, exact in fp32).
  const Tensor wq = qw.dequantize();
  const Recipe block = Recipe{}.with_kind(RecipeKind::fp8_block);
  EXPECT_TRUE(testing::bit_identical(run.dx, scaled_gemm(quantize(g, Granularity::tile_1x128, Format::e4m3),
                                                         quantize(wq.t(), Granularity::block_128x128, Format::e4m3))));
  // Wgrad: fp8_block's (it does not read W), passed to the FP32 master as is.
  const LinearRun plain = run_linear(x, w, g, block, nullptr);
  EXPECT_TRUE(testing::bit_identical(run.dw, plain.dw));
}

TEST(Fp4Recipe, TableAndSpecs) {
  const Recipe nv = Recipe{}.with_kind(RecipeKind::nvfp4);
  EXPECT_TRUE(nv.is_fp4() && nv.is_fp8());
  EXPECT_EQ(nv.fprop().a.granularity, Granularity::nv_1x16);
  EXPECT_EQ(nv.fprop().b.granularity, Granularity::nv_16x16);
  EXPECT_EQ(nv.dgrad().b.granularity, Granularity::nv_16x16);
  EXPECT_EQ(nv.wgrad().a.granularity, Granularity::nv_1x16);
  EXPECT_EQ(nv.wgrad().b.granularity, Granularity::nv_1x16);
  Recipe nv1d = nv;
  nv1d.fp4.weight_2d = false;
  EXPECT_EQ(nv1d.fprop().b.granularity, Granularity::nv_1x16);
  const Recipe mx = Recipe{}.with_kind(RecipeKind::mxfp4);
  EXPECT_EQ(mx.fprop().b.granularity, Granularity::mx_1x32);
  EXPECT_EQ(mx.fprop().b.format, Format::e2m1);
  // fp4_experts: routed experts only; shared experts, attention and dense MLPs run fp8_block; the
  // always-high modules stay bf16; an override still wins.
  const RecipeTable table(Recipe{}.with_kind(RecipeKind::fp4_experts), {{"model.layers.3.*", RecipeKind::bf16}});
  EXPECT_EQ(table.for_module("model.layers.1.mlp.experts.gate_proj").kind, RecipeKind::fp4_experts);
  EXPECT_EQ(table.for_module("model.layers.1.mlp.shared_experts.gate_proj").kind, RecipeKind::fp8_block);
  EXPECT_EQ(table.for_module("model.layers.1.self_attn.q_a_proj").kind, RecipeKind::fp8_block);
  EXPECT_EQ(table.for_module("model.layers.0.mlp.down_proj").kind, RecipeKind::fp8_block);
  EXPECT_EQ(table.for_module("lm_head").kind, RecipeKind::bf16);
  EXPECT_EQ(table.for_module("model.layers.3.mlp.experts.up_proj").kind, RecipeKind::bf16);
  for (std::string_view name : {"nvfp4", "mxfp4", "fp4_experts"}) EXPECT_EQ(recipe_name(parse_recipe(name)), name);
  // The seeds: a pure function of their parts; every part matters.
  EXPECT_EQ(rounding_seed(1, 2, 3, 4), rounding_seed(1, 2, 3, 4));
  EXPECT_NE(rounding_seed(1, 2, 3, 4), rounding_seed(1, 2, 3, 5));
  EXPECT_NE(rounding_seed(1, 2, 3, 4), rounding_seed(1, 3, 3, 4));
  EXPECT_NE(rounding_seed(1, 2, 3, 4), rounding_seed(2, 2, 3, 4));
  EXPECT_NE(rounding_seed(1, 2, 0, 4), rounding_seed(1, 2, 1, 4));
}

}  // namespace
}  // namespace daedalus::fp8
