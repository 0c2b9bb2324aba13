// The model's Linear layers (HF layout, weight [out, in], no bias) and the per-module precision
// they run under: each knows its HF module name, its recipe from the RecipeTable (overrides and
// the always-high modules applied by name) and its FP8 state (delayed-scaling amax histories,
// statistics), so the recipe of every GEMM is decided where the layer is built.
#pragma once

#include <string>
#include <vector>

#include "fp8/linear.h"
#include "fp8/recipe.h"
#include "model/parameters.h"

namespace daedalus::model {

// train.recompute: which activations backward recomputes instead of keeping.
//   none       every op keeps what its backward needs
//   selective  DeepSeek-V3's choice: each MLA's latent RMSNorms, up-projections (q_b_proj,
//              kv_b_proj), RoPE and the attention core that reads them are recomputed from the
//              latents, and each SwiGLU product with its down projection from gate and up; the
//              GEMM inputs outside those spans keep their (FP8, under FP8 recipes) caches
//   full       each decoder layer keeps only its input and runs again in backward
// Recomputing runs the same kernels on the same inputs, so losses and gradients are bit-identical
// to none (tests/test_recompute.cpp). Delayed scaling is refused (a second forward would move its
// amax histories).
enum class Recompute : uint8_t { none, selective, full };

// What every module needs to build itself.
struct BuildContext {
  ParameterStore* store;
  const fp8::RecipeTable* recipes;
  Recompute recompute = Recompute::none;
};

class Linear {
 public:
  Linear() = default;
  // Registers `<module>.weight` [out, in].
  Linear(const BuildContext& ctx, const std::string& module, int64_t in, int64_t out);
  // A Linear over a weight registered elsewhere (lm_head tied to the embedding).
  Linear(const BuildContext& ctx, const std::string& module, const Var& weight);

  // x [..., in] -> [..., out] fp32, through fp8::linear under this module's recipe.
  Var forward(const Var& x);
  // forward(ops::swiglu(gate, up)), the SwiGLU fused into the FP8 quantization where the recipe
  // allows (fp8::swiglu_linear).
  Var forward_swiglu(const Var& gate, const Var& up);

  const std::string& name() const { return module_; }
  const Var& weight() const { return weight_; }
  const fp8::Recipe& recipe() const { return recipe_; }
  fp8::LinearState& state() { return state_; }

 private:
  std::string module_;
  Var weight_;
  fp8::Recipe recipe_;
  fp8::LinearState state_;
};

// The routed experts' stacked projection `<module>.weight` [local, out, in] (this rank's slice
// of the global stack), run over token rows grouped by expert (fp8::grouped_linear).
class GroupedLinear {
 public:
  GroupedLinear() = default;
  GroupedLinear(const BuildContext& ctx, const std::string& module, int64_t local, int64_t offset, int64_t num_experts,
                int64_t in, int64_t out);

  // x [R, in] grouped by local expert (offsets [local + 1]) -> [R, out] fp32.
  Var forward(const Var& x, const std::vector<int64_t>& offsets);
  // forward(ops::swiglu(gate, up), offsets), fused where the recipe allows (fp8::swiglu_grouped_linear).
  Var forward_swiglu(const Var& gate, const Var& up, const std::vector<int64_t>& offsets);

  const std::string& name() const { return module_; }
  const Var& weight() const { return weight_; }
  const fp8::Recipe& recipe() const { return recipe_; }
  std::vector<fp8::LinearState>& states() { return states_; }

 private:
  std::string module_;
  Var weight_;
  fp8::Recipe recipe_;
  std::vector<fp8::LinearState> states_;  // one per local expert
};

}  // namespace daedalus::model
