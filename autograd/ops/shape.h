// Differentiable views and joins: reshape, transpose, permute, slice, concat, split.
// Forward results are views where the Tensor allows (no copy); gradients are routed back to
// the input's shape.
#pragma once

#include <vector>

#include "autograd/tape.h"

namespace daedalus::ops {

Var reshape(const Var& x, const Shape& shape);
Var transpose(const Var& x, int d0, int d1);
// Size-1 dims of x broadcast to `shape` (a stride-0 view, Tensor::expand). Backward sums the
// gradient over the broadcast dims (MLA: the one shared rotary key head, expanded to every head).
Var expand(const Var& x, const Shape& shape);
Var permute(const Var& x, const std::vector<int>& order);
// [start, end) along d with step (Tensor::slice semantics). Backward scatters into zeros.
Var slice(const Var& x, int d, int64_t start, int64_t end, int64_t step = 1);
// Joins along d; every part has the same shape except along d.
Var concat(const std::vector<Var>& parts, int d);
// Splits along d into pieces of the given sizes (summing to the size of d).
std::vector<Var> split(const Var& x, const std::vector<int64_t>& sizes, int d);

}  // namespace daedalus::ops
