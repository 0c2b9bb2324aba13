// Shared pieces of the model tests: small configs and a finite-difference check over a
// model's parameters.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "fp8/linear.h"
#include "model/causal_lm.h"

namespace daedalus::testing {

// A CPU-sized DeepSeek-V3 shape: 2 layers (one dense, one MoE), q_lora on, 8 experts in 4 groups
// (top-2 groups, top-3 experts), a shared expert, MTP depth 1.
model::ModelConfig small_model_config();

// small_model_config() with a YaRN model.rope_scaling (factor 4, original 16 positions, mscale 0.9,
// mscale_all_dim 0.6) and qk_rope_head_dim 8, so that the ramp has interior points.
model::ModelConfig small_yarn_config();

// YaRN written independently from HF's _compute_yarn_parameters / yarn_get_mscale /
// yarn_apply_mscale in double (not through model/rope_scaling.cpp): the frequencies [d/2] of the
// rope dims, the cos/sin amplitude and the attention softmax scale. Plain RoPE when rope_scaling
// is null.
struct RopeReference {
  std::vector<double> inv_freq;
  double amplitude = 1;
  double softmax_scale = 1;
};
RopeReference rope_reference(const model::ModelConfig& c);

// One fp8::linear forward and backward from the output gradient g: y = x wᵀ, dx, dw.
struct LinearRun {
  Tensor y, dx, dw;
};
LinearRun run_linear(const Tensor& x, const Tensor& w, const Tensor& g, const fp8::Recipe& recipe,
                     fp8::LinearState* state);

// The recipe table of one base recipe by name ("fp32", "fp8_block", ...).
fp8::RecipeTable recipes_of(const std::string& name);

// Central differences of loss() with respect to `samples` coordinates of each parameter (fp32
// forward, h = step · max(1, |p|)), against the tape's gradients from one backward of loss().
// Passes when |analytic − fd| <= atol + rtol · |fd| for every sampled coordinate.
struct ParamGradcheckOptions {
  int samples = 6;
  double step = 1e-2;
  double atol = 2e-4;
  double rtol = 2e-2;
  uint64_t seed = 5;
};
::testing::AssertionResult param_gradcheck(const std::function<Var()>& loss,
                                           const std::vector<model::Parameter>& params,
                                           const ParamGradcheckOptions& options = {});

}  // namespace daedalus::testing
