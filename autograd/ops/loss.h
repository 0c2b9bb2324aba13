// Differentiable losses: the fused softmax cross-entropy of the LM and MTP heads, through
// kernels::cross_entropy / cross_entropy_backward (the [N, V] probabilities are never kept).
#pragma once

#include <cstdint>

#include "autograd/tape.h"

namespace daedalus::ops {

// logits [N, V] fp32|bf16, targets [N] int32|int64 in [0, V) or == ignore_index (not
// differentiable) -> fp32 scalar []: the mean over the non-ignored rows of
// logsumexp(logits[n]) - logits[n, targets[n]]; 0 (and a zero gradient) when every row is ignored.
// Saves logits and the fp32 per-row logsumexp [N]; dlogits comes back in logits' dtype:
//   dlogits[n, v] = dloss / valid * (softmax(logits[n])[v] - [v == targets[n]]), ignored rows 0.
Var cross_entropy(const Var& logits, const Tensor& targets, int64_t ignore_index = -100);

}  // namespace daedalus::ops
