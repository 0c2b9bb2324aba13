// Token embedding lookup and its gradient (a scatter-add of output-gradient rows into the table).
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace daedalus::kernels {

// weight [V, D] (fp32|bf16, any strides), ids [...] (int32|int64, any shape and strides, values in
// [0, V)) -> out [..., D], weight's dtype, contiguous: out[p] = weight[ids[p]] (an exact copy).
// An id outside [0, V) is an InputError naming the position, the id and V.
Tensor embedding(const Tensor& weight, const Tensor& ids);

// dy [..., D] (fp32|bf16, any strides; ids' shape plus D), ids [...] (the forward's ids, values in
// [0, vocab_size)) -> dW fp32 [vocab_size, D]: dW[v] = sum of dy[p] over the positions p with
// ids[p] == v, accumulated in double in row-major position order and rounded once (repeated ids are
// deterministic for any thread count); rows of ids that never occur are 0.
Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t vocab_size);

}  // namespace daedalus::kernels
