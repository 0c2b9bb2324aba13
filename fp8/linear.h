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
// FP4 recipes (nvfp4, mxfp4; recipe.fp4): dY is rounded stochastically for Dgrad and Wgrad; Wgrad's
// operands are quantized from X itself (not Fprop's q(X)), each after a 16x16 random Hadamard
// transform along tokens (fp8/hadamard.h) that cancels in the product — NVIDIA's NVFP4 recipe.
// fp4_experts: Fprop multiplies FP8 1x128 X by MXFP4 W; Dgrad uses the FP4-rounded weight Wq in
// fp8_block's 128x128 blocks; dW = Wgrad of Wq, applied to the FP32 master W (straight-through).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "fp8/recipe.h"
#include "fp8/stats.h"

namespace daedalus::fp8 {

// What a module's FP8 Linear keeps between steps: delayed-scaling amax histories (checkpointed
// with the model) and, when asked, the statistics of its last quantizations. `rounding_seed` keys
// the FP4 recipes' stochastic rounding and random Hadamard signs for the next forward/backward;
// the trainer sets it before every micro-batch from (run.seed, step, the micro-batch's first
// global sample, module): see
// rounding_seed() — so a resumed run draws the same random words as an uninterrupted one.
struct LinearState {
  AmaxHistory x{16}, w{16}, dy{16};
  bool collect_stats = false;
  std::map<std::string, QuantStats> stats;  // "x", "w", "dy" -> statistics of the last quantization
  uint64_t rounding_seed = 0;
};

// A 64-bit key from its parts (SplitMix64's finalizer chained over them): distinct parts give
// unrelated keys, the same parts the same key on every machine.
uint64_t rounding_seed(uint64_t run_seed, uint64_t step, uint64_t sample, uint64_t module);

// What one Linear call draws random words for, each from its own key random_use_seed(state seed,
// use): Dgrad's q(dY), Wgrad's q(dYᵀ) (stochastic rounding), the Hadamard signs of Wgrad.
enum class RandomUse : uint64_t { dgrad_dy = 1, wgrad_dy = 2, hadamard = 3 };
uint64_t random_use_seed(uint64_t state_seed, RandomUse use);

// x [..., K], weight [N, K] -> [..., N] fp32. `state` is required for fp8_tensor_delayed and for
// statistics; it must outlive the backward pass.
Var linear(const Var& x, const Var& weight, const Recipe& recipe, LinearState* state = nullptr);

// The routed experts' projections as one op: x [R, K] holds the rows of G groups back to back
// (group g: rows [offsets[g], offsets[g+1]), tokens sorted by expert), weight [G, N, K] one matrix
// per group -> [R, N] fp32, rows of group g multiplied by weight[g]. Each group is its own Linear
// under `recipe` (its own scales, and its own LinearState in `states` — one per group — for
// delayed scaling and statistics); empty groups cost nothing and get a zero weight gradient.
// One tape node for all groups (not G nodes of slices): backward writes each group's dX rows and
// dW[g] in place. GEMMs: FP8 recipes, one grouped_scaled_gemm forward (one cuBLASLt call per
// non-empty group on CUDA) and per-group Dgrad/Wgrad; with 1x128 X tiles and current scaling X is
// quantized once for all groups (and W too when its 128x128 blocks line up with the experts: N a
// multiple of 128), the same bits as per group; fp32 and bf16 recipes on CUDA, ONE grouped GEMM
// per pass (autograd/kernels/grouped_gemm.h), on the CPU one GEMM per group per pass.
Var grouped_linear(const Var& x, const Var& weight, const std::vector<int64_t>& offsets, const Recipe& recipe,
                   std::vector<LinearState>* states = nullptr);

// The SwiGLU feed-forward's down projection with the SwiGLU fused into its Fprop quantization:
// linear(ops::swiglu(gate, up), weight, ...) and grouped_linear(ops::swiglu(gate, up), ...), the
// same values and gradients bit for bit, as one tape node. When fuses_swiglu holds, q(h) comes
// from swiglu_quantize (fp8/quantized.h: on CUDA one kernel that never writes h) and backward keeps
// q(h) (what re-quantizing h gives) with gate and up; otherwise these are the two ops in sequence.
Var swiglu_linear(const Var& gate, const Var& up, const Var& weight, const Recipe& recipe,
                  LinearState* state = nullptr);
Var swiglu_grouped_linear(const Var& gate, const Var& up, const Var& weight, const std::vector<int64_t>& offsets,
                          const Recipe& recipe, std::vector<LinearState>* states = nullptr);
// Whether the fused path applies: an FP8 recipe whose Fprop X operand is 1x128 tiles with current
// scaling and round-to-nearest (so that the rows of q(h) are what quantizing any group of rows
// gives), fp32 gate and up of one shape, and no statistics being collected (they need h itself).
bool fuses_swiglu(const Recipe& recipe, const Var& gate, const Var& up, const std::vector<LinearState*>& states);

}  // namespace daedalus::fp8
