// Differentiable elementwise arithmetic (NumPy broadcasting) and reductions.
#pragma once

#include "autograd/tape.h"

namespace daedalus::ops {

// a, b broadcastable, same dtype -> broadcast shape. Backward sums over broadcast dims.
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
// alpha * x + beta.
Var affine(const Var& x, double alpha, double beta = 0.0);
// x converted to `dtype` (fp32 <-> bf16, round to nearest even); the gradient converts back.
Var cast(const Var& x, DType dtype);

// x [..., d, ...] -> sum / mean over `dim` (keepdim keeps it as size 1).
Var sum(const Var& x, int dim, bool keepdim = false);
Var mean(const Var& x, int dim, bool keepdim = false);
// Every element -> fp32 scalar [].
Var sum_all(const Var& x);
Var mean_all(const Var& x);

}  // namespace daedalus::ops
