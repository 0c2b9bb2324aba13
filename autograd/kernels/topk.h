// Top-k along the last dimension: MoE routing (k of up to 256 experts) and top-k sampling (k of the
// whole vocabulary, e.g. 129280).
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace daedalus::kernels {

struct TopK {
  Tensor values;   // [..., k], x's dtype
  Tensor indices;  // [..., k], int64, positions along x's last dim
};

// x [..., N] (fp32|bf16, any strides, at least 1-d), 1 <= k <= N -> the k largest entries of each row
// along the last dim, sorted by value descending. Order is total and deterministic:
//   - equal values are ordered by index ascending (the lower index wins a tie, also for the last place);
//   - -0.0 and +0.0 are equal (a tie, broken by index); values keep their original bits;
//   - NaN counts as larger than every number, +inf included (torch.topk's convention), and NaNs are
//     equal among themselves, so NaNs come first, in index order.
// Cost per row O(N + k log k) (selection, then sorting the k selected); rows run in parallel.
TopK topk(const Tensor& x, int64_t k);

}  // namespace daedalus::kernels
