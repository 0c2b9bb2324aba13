// Precision recipes: which format and scale granularity each operand of a Linear's three GEMMs
// gets, per module, with per-module overrides. The table is shared/design/NUMERICS.md's.
//
// A Linear y = x·Wᵀ (x [M, K] tokens × in, W [N, K] out × in) runs three GEMMs, each TN with both
// operands quantized along its reduction axis (fp8/scaled_gemm.h):
//   Fprop  Y  = X · Wᵀ     a = X  [M, K] along K        b = W  [N, K] along K
//   Dgrad  dX = dY · W     a = dY [M, N] along N        b = Wᵀ [K, N] along N
//   Wgrad  dW = dYᵀ · X    a = dYᵀ [N, M] along M       b = Xᵀ [K, M] along M
// GemmSpec names the granularity and format of a and b for each.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "fp8/quantized.h"
#include "fp8/scaled_gemm.h"

namespace daedalus::fp8 {

enum class RecipeKind : uint8_t {
  fp32,
  bf16,
  fp8_tensor_delayed,
  fp8_tensor_current,
  fp8_row,
  fp8_block,
  mxfp8,
  nvfp4,       // NVIDIA's NVFP4 pretraining recipe: E2M1, 1x16 E4M3 scales x FP32 tensor scale, every GEMM
  mxfp4,       // OCP MXFP4: E2M1, 1x32 E8M0 scales, every GEMM
  fp4_experts  // DeepSeek-V4's layout: routed experts' weights MXFP4 in Fprop (QAT), everything else fp8_block
};

std::string_view recipe_name(RecipeKind kind);
std::vector<RecipeKind> all_recipe_kinds();      // every recipe, in the enum's order
RecipeKind parse_recipe(std::string_view name);  // InputError listing the valid names

// precision.fp8_format: e4m3 everywhere, or hybrid (E4M3 forward operands, E5M2 gradients).
enum class Fp8Formats : uint8_t { recipe_default, e4m3, hybrid };
Fp8Formats parse_fp8_formats(std::string_view name);

struct OperandSpec {
  Granularity granularity = Granularity::tensor;
  Format format = Format::e4m3;
};
struct GemmSpec {
  OperandSpec a, b;
};

// The NVFP4 paper's stabilisers (precision.fp4.*; they apply to nvfp4 and mxfp4 only).
struct Fp4Options {
  bool weight_2d = true;            // nvfp4: weights in 16x16 blocks (Fprop and Dgrad see the same q(W))
  bool hadamard = true;             // 16x16 random Hadamard transform on Wgrad's inputs, along tokens
  bool stochastic_rounding = true;  // gradients (dY for Dgrad and Wgrad) round stochastically
};

struct Recipe {
  RecipeKind kind = RecipeKind::bf16;
  Fp4Options fp4;
  Fp8Formats formats = Fp8Formats::recipe_default;
  ScaleOptions scale;         // margin, power_of_two (fp8_row forces power-of-two scales)
  int amax_history_len = 16;  // fp8_tensor_delayed
  bool wgrad_fp8 = true;      // precision.wgrad: fp8 | high
  bool cache_fp8 = false;     // precision.cache_activations: fp8 | high
  Accumulator accumulator;    // precision.accumulator (CPU emulation)

  // Whether the recipe quantizes GEMMs at all (FP8 or FP4; the name predates FP4).
  bool is_fp8() const { return kind != RecipeKind::fp32 && kind != RecipeKind::bf16; }
  // nvfp4 and mxfp4: every GEMM operand in E2M1 (the stabilisers of `fp4` apply).
  bool is_fp4() const { return kind == RecipeKind::nvfp4 || kind == RecipeKind::mxfp4; }
  bool delayed() const { return kind == RecipeKind::fp8_tensor_delayed; }
  // The dtype of high-precision GEMM operands: fp32 for the fp32 recipe, bf16 otherwise.
  DType high_precision_dtype() const { return kind == RecipeKind::fp32 ? DType::f32 : DType::bf16; }
  // Operand specs of the three GEMMs; InputError for fp32/bf16 (no quantization).
  GemmSpec fprop() const;
  GemmSpec dgrad() const;
  GemmSpec wgrad() const;
  // The same settings with another kind (what an override changes).
  Recipe with_kind(RecipeKind k) const;
};

// precision.overrides: {match: GLOB, recipe: NAME}, first match wins.
struct RecipeOverride {
  std::string match;
  RecipeKind recipe;
};

// The recipe of every module: overrides first, then the base. Modules DeepSeek-V3 and Transformer
// Engine keep in high precision (embedding, lm_head, the MoE router `mlp.gate`, norms) get the
// high-precision recipe whatever the base or an override says. fp4_experts stays fp4_experts only
// on the routed experts (`*.mlp.experts.*`); every other module gets fp8_block.
class RecipeTable {
 public:
  explicit RecipeTable(Recipe base, std::vector<RecipeOverride> overrides = {});
  Recipe for_module(std::string_view hf_name) const;
  static bool always_high_precision(std::string_view hf_name);
  static bool is_routed_expert(std::string_view hf_name);
  const Recipe& base() const { return base_; }

 private:
  Recipe base_;
  std::vector<RecipeOverride> overrides_;
};

}  // namespace daedalus::fp8
