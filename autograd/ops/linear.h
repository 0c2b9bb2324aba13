// Differentiable matrix products in high precision (fp32 or bf16 operands, fp32 accumulation).
// fp8/ records its FP8 Linear through the same tape with record().
#pragma once

#include "autograd/tape.h"

namespace daedalus::ops {

// a [..., M, K] · b [..., K, N] -> [..., M, N] fp32; a or b may be 2-d (shared across the batch).
Var matmul(const Var& a, const Var& b);

// x [..., in] · weight [out, in]ᵀ (+ bias [out]) -> [..., out] fp32.
// Backward: dx = dy · W, dW = dyᵀ · x over all leading dims, db = Σ dy.
Var linear(const Var& x, const Var& weight, const Var& bias = Var());

}  // namespace daedalus::ops
