// The recipe table of NUMERICS.md, per-module overrides, and the always-high-precision modules.
#include "fp8/recipe.h"

#include <fnmatch.h>

#include <array>

#include "autograd/check.h"

namespace daedalus::fp8 {

namespace {

constexpr std::array<std::pair<RecipeKind, std::string_view>, 10> kNames{{
    {RecipeKind::fp32, "fp32"},
    {RecipeKind::bf16, "bf16"},
    {RecipeKind::fp8_tensor_delayed, "fp8_tensor_delayed"},
    {RecipeKind::fp8_tensor_current, "fp8_tensor_current"},
    {RecipeKind::fp8_row, "fp8_row"},
    {RecipeKind::fp8_block, "fp8_block"},
    {RecipeKind::mxfp8, "mxfp8"},
    {RecipeKind::nvfp4, "nvfp4"},
    {RecipeKind::mxfp4, "mxfp4"},
    {RecipeKind::fp4_experts, "fp4_experts"},
}};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::string_view recipe_name(RecipeKind kind) { return kNames[size_t(kind)].second; }

std::vector<RecipeKind> all_recipe_kinds() {
  std::vector<RecipeKind> kinds;
  for (const auto& entry : kNames) kinds.push_back(entry.first);
  return kinds;
}

RecipeKind parse_recipe(std::string_view name) {
  for (const auto& [kind, n] : kNames)
    if (n == name) return kind;
  DAEDALUS_FAIL(
      "unknown precision recipe \"{}\" (expected fp32, bf16, fp8_tensor_delayed, fp8_tensor_current, "
      "fp8_row, fp8_block, mxfp8, nvfp4, mxfp4 or fp4_experts)",
      name);
}

Fp8Formats parse_fp8_formats(std::string_view name) {
  if (name == "e4m3") return Fp8Formats::e4m3;
  if (name == "hybrid") return Fp8Formats::hybrid;
  DAEDALUS_FAIL("unknown fp8_format \"{}\" (expected e4m3 or hybrid)", name);
}

GemmSpec Recipe::fprop() const {
  DAEDALUS_CHECK(is_fp8(), "recipe {} quantizes no GEMM", recipe_name(kind));
  const Format fwd = Format::e4m3;
  switch (kind) {
    case RecipeKind::fp8_tensor_delayed:
    case RecipeKind::fp8_tensor_current: return {{Granularity::tensor, fwd}, {Granularity::tensor, fwd}};
    case RecipeKind::fp8_row: return {{Granularity::row, fwd}, {Granularity::row, fwd}};
    case RecipeKind::fp8_block: return {{Granularity::tile_1x128, fwd}, {Granularity::block_128x128, fwd}};
    case RecipeKind::nvfp4:
      return {{Granularity::nv_1x16, Format::e2m1},
              {fp4.weight_2d ? Granularity::nv_16x16 : Granularity::nv_1x16, Format::e2m1}};
    case RecipeKind::mxfp4: return {{Granularity::mx_1x32, Format::e2m1}, {Granularity::mx_1x32, Format::e2m1}};
    case RecipeKind::fp4_experts: return {{Granularity::tile_1x128, fwd}, {Granularity::mx_1x32, Format::e2m1}};
    default: return {{Granularity::mx_1x32, fwd}, {Granularity::mx_1x32, fwd}};
  }
}

GemmSpec Recipe::dgrad() const {
  GemmSpec s = fprop();
  if (is_fp4()) return s;  // dY in the activations' blocks; Wᵀ in the weights' (16x16: the same q(W) transposed)
  // fp4_experts: the backward GEMMs are fp8_block's, on the FP4-rounded weights (straight-through).
  if (kind == RecipeKind::fp4_experts) return with_kind(RecipeKind::fp8_block).dgrad();
  // Gradients: E5M2 under hybrid (the tensor recipes' default), E4M3 otherwise.
  const bool hybrid = formats == Fp8Formats::hybrid ||
                      (formats == Fp8Formats::recipe_default &&
                       (kind == RecipeKind::fp8_tensor_delayed || kind == RecipeKind::fp8_tensor_current));
  s.a.format = hybrid ? Format::e5m2 : Format::e4m3;
  // dY keeps 1x128 tiles (DeepSeek: 128x128 blocks for activation gradients diverged); W reuses
  // its 128x128 blocks on the transposed view.
  return s;
}

GemmSpec Recipe::wgrad() const {
  if (is_fp4()) {  // both operands along tokens, in the activations' 1-d blocks
    const GemmSpec f = fprop();
    return {f.a, f.a};
  }
  if (kind == RecipeKind::fp4_experts) return with_kind(RecipeKind::fp8_block).wgrad();
  GemmSpec s = dgrad();
  // Both operands along M (tokens): dYᵀ and Xᵀ, "1x128 becomes 128x1"; X keeps its forward format.
  if (kind == RecipeKind::fp8_block) s.b.granularity = Granularity::tile_1x128;
  s.b.format = Format::e4m3;
  return s;
}

Recipe Recipe::with_kind(RecipeKind k) const {
  Recipe r = *this;
  r.kind = k;
  if (k == RecipeKind::fp8_row) r.scale.power_of_two = true;
  return r;
}

RecipeTable::RecipeTable(Recipe base, std::vector<RecipeOverride> overrides)
    : base_(base.with_kind(base.kind)), overrides_(std::move(overrides)) {}

bool RecipeTable::always_high_precision(std::string_view name) {
  return name.find("embed_tokens") != std::string_view::npos || name.starts_with("lm_head") ||
         ends_with(name, ".mlp.gate") || ends_with(name, ".mlp.gate.weight") ||
         name.find("norm") != std::string_view::npos;
}

bool RecipeTable::is_routed_expert(std::string_view name) {
  return name.find(".mlp.experts.") != std::string_view::npos;
}

Recipe RecipeTable::for_module(std::string_view hf_name) const {
  Recipe chosen = base_;
  const std::string name(hf_name);
  for (const RecipeOverride& o : overrides_) {
    if (fnmatch(o.match.c_str(), name.c_str(), 0) == 0) {
      chosen = base_.with_kind(o.recipe);
      break;
    }
  }
  if (chosen.kind == RecipeKind::fp4_experts && !is_routed_expert(hf_name))
    chosen = chosen.with_kind(RecipeKind::fp8_block);
  if (always_high_precision(hf_name) && chosen.is_fp8()) chosen = chosen.with_kind(RecipeKind::bf16);
  return chosen;
}

}  // namespace daedalus::fp8
