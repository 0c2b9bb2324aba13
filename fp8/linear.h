// The differentiable FP8 Linear: y = x·Wᵀ (HF layout: W [out, in]) with the recipe's three GEMMs.
//
//   Fprop  Y  = q(X)·q(W)ᵀ            X [M, K] and W [N, K] quantized along K
//   Dgrad  dX = q(dY)·q(Wᵀ)ᵀ           dY along N; W on its transposed view (same 128x128 blocks)
//   Wgrad  dW = q(dYᵀ)·q(Xqᵀ)ᵀ         both along M; Xq is the dequantized X that Fprop used
// Backward always sees the quantized X that Fprop used: saved as that FP8 copy when the recipe
// caches activations in FP8, otherwise saved in high precision and re-quantized identically.
// Wgrad runs in high precision when recipe.wgrad_fp8 is false. Master weights and their gradients
// are FP32; y and dX are FP32. For the fp32 and bf16 recipes this is a plain high-precision Linear
// with operands in that dtype.
#pragma once

#include <map>
#include <string>

#include "autograd/tape.h"
#include "fp8/recipe.h"
#include "fp8/stats.h"

namespace daedalus::fp8 {

// What a module's FP8 Linear keeps between steps: delayed-scaling amax histories (checkpointed
// with the model) and, when asked, the statistics of its last quantizations.
struct LinearState {
  AmaxHistory x{16}, w{16}, dy{16};
  bool collect_stats = false;
  std::map<std::string, QuantStats> stats;  // "x", "w", "dy" -> statistics of the last quantization
};

// x [..., K], weight [N, K] -> [..., N] fp32. `state` is required for fp8_tensor_delayed and for
// statistics; it must outlive the backward pass.
Var linear(const Var& x, const Var& weight, const Recipe& recipe, LinearState* state = nullptr);

}  // namespace daedalus::fp8
