// Softmax and log-softmax over the last dimension, forward and backward (attention probabilities,
// router scores). fp32 and bf16, computed in float with the row sum accumulated in double and
// each output rounded once on store. Inputs may have any strides; outputs are new contiguous
// tensors of the input dtype. Numerically stable: every row is shifted by its maximum, so large
// finite logits (1000 and beyond) give finite results. A row that is entirely -inf has no
// defined softmax and gives NaN (as in PyTorch); callers that mask whole rows must handle that.
#pragma once

#include "autograd/tensor.h"

namespace daedalus::kernels {

// x [..., C] fp32|bf16 (at least 1-d) -> y [..., C] same dtype:
//   y[r, c] = exp(x[r, c] - m_r) / sum_k exp(x[r, k] - m_r),  m_r = max_k x[r, k].
Tensor softmax(const Tensor& x);

// x [..., C] fp32|bf16 -> y [..., C] same dtype:
//   y[r, c] = x[r, c] - m_r - log(sum_k exp(x[r, k] - m_r)).
Tensor log_softmax(const Tensor& x);

// y = softmax(x) [..., C], dy [..., C] (same shape and dtype) -> dx [..., C] same dtype:
//   dx[r, c] = y[r, c] * (dy[r, c] - sum_k dy[r, k] * y[r, k]).
Tensor softmax_backward(const Tensor& y, const Tensor& dy);

// y = log_softmax(x) [..., C], dy [..., C] (same shape and dtype) -> dx [..., C] same dtype:
//   dx[r, c] = dy[r, c] - exp(y[r, c]) * sum_k dy[r, k].
Tensor log_softmax_backward(const Tensor& y, const Tensor& dy);

}  // namespace daedalus::kernels
