// Differentiable token embedding lookup, through kernels::embedding / embedding_backward.
#pragma once

#include "autograd/tape.h"

namespace daedalus::ops {

// weight [V, D] fp32|bf16, ids [...] int32|int64 in [0, V) (not differentiable) -> [..., D],
// weight's dtype: out[p] = weight[ids[p]]. Saves nothing but ids. dweight [V, D] is the
// scatter-add of the output gradient rows (accumulated in double, deterministic for repeated ids),
// in weight's dtype.
Var embedding(const Var& weight, const Tensor& ids);

}  // namespace daedalus::ops
