// Fused log-softmax + negative log-likelihood over a vocabulary (the LM and MTP heads' loss),
// forward and backward. The forward keeps one logsumexp per row and never materializes the
// [N, V] probabilities; the backward recomputes them from logits and lse. Logits are fp32|bf16
// with any strides, math in float with row sums and the loss accumulated in double.
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace daedalus::kernels {

struct CrossEntropyOutput {
  Tensor loss;    // fp32 scalar []: mean over the valid rows of lse[n] - logits[n, targets[n]]; 0 when valid == 0
  Tensor lse;     // fp32 [N]: log sum_v exp(logits[n, v]) per row (ignored rows included)
  int64_t valid;  // rows whose target is not ignore_index
};

// logits [N, V] fp32|bf16, targets [N] int32|int64, each in [0, V) or equal to ignore_index.
// Any other target is an InputError naming the row, the target and V.
CrossEntropyOutput cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

// logits [N, V], targets [N], lse fp32 [N] (from cross_entropy) -> dlogits [N, V], logits' dtype:
//   dlogits[n, v] = dloss / valid * (exp(logits[n, v] - lse[n]) - [v == targets[n]])
// with rows whose target is ignore_index all zero, and everything zero when valid == 0.
// `valid` is the divisor of the mean: forward's count, or a global count when the loss is
// averaged over several micro-batches or ranks.
Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, double dloss,
                              int64_t ignore_index, int64_t valid);

}  // namespace daedalus::kernels
