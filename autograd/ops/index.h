// Differentiable selection by index for MoE routing: top-k of the router scores, picking values at
// given positions along the last dim, and the row permutation (gather) and its weighted inverse
// (scatter-add) that send tokens to experts and combine the expert outputs.
//
// Index tensors are plain int32|int64 Tensors: they never require a gradient and never go through
// the tape. Out-of-range indices are an InputError (kernels::check_index_range). The kernels these
// ops use are CPU-only for now; topk and take_along_last also build a flat int64 index on the host.
#pragma once

#include <cstdint>

#include "autograd/tape.h"

namespace daedalus::ops {

struct TopKVars {
  Var values;      // [..., k], x's dtype, sorted descending; differentiable
  Tensor indices;  // [..., k] int64, positions along x's last dim; not differentiable
};

// x [..., N] fp32|bf16, 1 <= k <= N -> the k largest entries of each row (kernels::topk: ties go
// to the lower index). Backward scatters the values' gradient into zeros [..., N] at the indices.
TopKVars topk(const Var& x, int64_t k);

// x [..., N] fp32|bf16, indices [..., k] int32|int64 in [0, N) (the same leading dims) ->
// [..., k], x's dtype: out[r, j] = x[r, indices[r, j]] (an exact copy). Indices may repeat.
// Backward scatter-adds the gradient into zeros [..., N]. MoE: the router probabilities at the
// top-k expert indices, take_along_last(probs, topk(scores, k).indices).
Var take_along_last(const Var& x, const Tensor& indices);

// x [N, D] fp32|bf16, index [M] int32|int64 in [0, N) -> [M, D], x's dtype: out[i] = x[index[i]].
// Backward: dx = zeros [N, D] with dx[index[i]] += dy[i] (repeated rows accumulate in double).
Var gather_rows(const Var& x, const Tensor& index);

// base [N, D], index [M] in [0, N), src [M, D] (fp32|bf16 each) -> a NEW [N, D] tensor of base's
// dtype, base + src scattered: out[index[i]] += src[i]. base is not modified.
// Backward: dbase = dy, dsrc[i] = dy[index[i]].
Var scatter_add_rows(const Var& base, const Tensor& index, const Var& src);

// The gated MoE combine: as above with weight [M] fp32: out[index[i]] += weight[i] * src[i].
// Backward: dbase = dy, dsrc[i] = weight[i] * dy[index[i]], dweight[i] = <dy[index[i]], src[i]>
// (products in fp32, row sums in double; dweight fp32, dsrc in src's dtype).
Var scatter_add_rows(const Var& base, const Tensor& index, const Var& src, const Var& weight);

}  // namespace daedalus::ops
