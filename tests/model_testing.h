// Shared pieces of the model tests: small configs and a finite-difference check over a
// model's parameters.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "model/causal_lm.h"

namespace daedalus::testing {

// A CPU-sized DeepSeek-V3 shape: 2 layers (one dense, one MoE), q_lora on, 8 experts in 4 groups
// (top-2 groups, top-3 experts), a shared expert, MTP depth 1.
model::ModelConfig small_model_config();

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
