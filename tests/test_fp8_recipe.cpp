// The recipe table against shared/design/NUMERICS.md, overrides, always-high-precision modules.
#include <gtest/gtest.h>

#include "fp8/recipe.h"
#include "tests/testing.h"

namespace daedalus::fp8 {
namespace {

using G = Granularity;
using F = Format;

void expect_spec(const GemmSpec& s, G ga, F fa, G gb, F fb, const char* what) {
  EXPECT_EQ(s.a.granularity, ga) << what;
  EXPECT_EQ(s.a.format, fa) << what;
  EXPECT_EQ(s.b.granularity, gb) << what;
  EXPECT_EQ(s.b.format, fb) << what;
}

Recipe recipe(RecipeKind k) { return Recipe{}.with_kind(k); }

TEST(Fp8Recipe, DeepSeekBlockRecipe) {
  // Fprop: X 1x128 along K, W 128x128. Dgrad: dY 1x128 along N, W's blocks (transposed view).
  // Wgrad: dYᵀ and Xᵀ both 1x128 along M ("1x128 becomes 128x1"). E4M3 everywhere.
  const Recipe r = recipe(RecipeKind::fp8_block);
  expect_spec(r.fprop(), G::tile_1x128, F::e4m3, G::block_128x128, F::e4m3, "fprop");
  expect_spec(r.dgrad(), G::tile_1x128, F::e4m3, G::block_128x128, F::e4m3, "dgrad");
  expect_spec(r.wgrad(), G::tile_1x128, F::e4m3, G::tile_1x128, F::e4m3, "wgrad");
}

TEST(Fp8Recipe, TensorRecipesAreHybridByDefault) {
  for (RecipeKind k : {RecipeKind::fp8_tensor_delayed, RecipeKind::fp8_tensor_current}) {
    const Recipe r = recipe(k);
    expect_spec(r.fprop(), G::tensor, F::e4m3, G::tensor, F::e4m3, "fprop");
    expect_spec(r.dgrad(), G::tensor, F::e5m2, G::tensor, F::e4m3, "dgrad");  // gradients in E5M2
    expect_spec(r.wgrad(), G::tensor, F::e5m2, G::tensor, F::e4m3, "wgrad");
  }
  Recipe e4m3 = recipe(RecipeKind::fp8_tensor_current);
  e4m3.formats = Fp8Formats::e4m3;
  EXPECT_EQ(e4m3.dgrad().a.format, F::e4m3);
  Recipe hybrid_block = recipe(RecipeKind::fp8_block);
  hybrid_block.formats = Fp8Formats::hybrid;
  EXPECT_EQ(hybrid_block.dgrad().a.format, F::e5m2);
  EXPECT_TRUE(recipe(RecipeKind::fp8_tensor_delayed).delayed());
}

TEST(Fp8Recipe, RowwiseUsesPowerOfTwoScalesAndMxUses1x32) {
  const Recipe row = recipe(RecipeKind::fp8_row);
  EXPECT_TRUE(row.scale.power_of_two);
  expect_spec(row.fprop(), G::row, F::e4m3, G::row, F::e4m3, "fprop");
  expect_spec(row.wgrad(), G::row, F::e4m3, G::row, F::e4m3, "wgrad");
  const Recipe mx = recipe(RecipeKind::mxfp8);
  expect_spec(mx.fprop(), G::mx_1x32, F::e4m3, G::mx_1x32, F::e4m3, "fprop");
  expect_spec(mx.wgrad(), G::mx_1x32, F::e4m3, G::mx_1x32, F::e4m3, "wgrad");
}

TEST(Fp8Recipe, HighPrecisionRecipesQuantizeNothing) {
  EXPECT_FALSE(recipe(RecipeKind::bf16).is_fp8());
  EXPECT_EQ(recipe(RecipeKind::fp32).high_precision_dtype(), DType::f32);
  EXPECT_EQ(recipe(RecipeKind::fp8_block).high_precision_dtype(), DType::bf16);
  EXPECT_TRUE(testing::mentions(testing::error_of([] { (void)recipe(RecipeKind::bf16).fprop(); }),
                                {"recipe bf16", "quantizes no GEMM"}));
}

TEST(Fp8Recipe, OverridesFirstMatchWinsAndHighPrecisionModulesStayHigh) {
  const RecipeTable table(recipe(RecipeKind::fp8_block),
                          {{"model.layers.0.*", RecipeKind::bf16},
                           {"model.layers.*.self_attn.*", RecipeKind::fp8_tensor_current},
                           {"model.layers.0.self_attn.*", RecipeKind::mxfp8}});
  EXPECT_EQ(table.for_module("model.layers.0.self_attn.q_a_proj").kind, RecipeKind::bf16);  // first match
  EXPECT_EQ(table.for_module("model.layers.3.self_attn.kv_b_proj").kind, RecipeKind::fp8_tensor_current);
  EXPECT_EQ(table.for_module("model.layers.3.mlp.experts.gate_proj").kind, RecipeKind::fp8_block);
  EXPECT_EQ(table.for_module("model.layers.3.mlp.gate_proj").kind, RecipeKind::fp8_block);  // dense MLP, not the router
  for (const char* name : {"model.embed_tokens", "lm_head", "model.layers.3.mlp.gate", "model.layers.3.input_layernorm",
                           "model.layers.2.self_attn.kv_a_layernorm", "model.norm"})
    EXPECT_EQ(table.for_module(name).kind, RecipeKind::bf16) << name;
  const RecipeTable fp32(recipe(RecipeKind::fp32));
  EXPECT_EQ(fp32.for_module("lm_head").kind, RecipeKind::fp32);  // high precision stays the base's
}

TEST(Fp8Recipe, ParsingNamesTheBadValue) {
  for (RecipeKind k : {RecipeKind::fp32, RecipeKind::bf16, RecipeKind::fp8_tensor_delayed,
                       RecipeKind::fp8_tensor_current, RecipeKind::fp8_row, RecipeKind::fp8_block, RecipeKind::mxfp8})
    EXPECT_EQ(parse_recipe(recipe_name(k)), k);
  EXPECT_TRUE(testing::mentions(testing::error_of([] { parse_recipe("fp8_blok"); }), {"\"fp8_blok\"", "fp8_block"}));
  EXPECT_EQ(parse_fp8_formats("hybrid"), Fp8Formats::hybrid);
  EXPECT_THROW(parse_fp8_formats("e5m2"), InputError);
}

}  // namespace
}  // namespace daedalus::fp8
