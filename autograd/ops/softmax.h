// Differentiable softmax and log-softmax over the last dimension (attention probabilities, router
// scores), through kernels::softmax / log_softmax and their backward kernels.
#pragma once

#include "autograd/tape.h"

namespace daedalus::ops {

// x [..., C] fp32|bf16 -> softmax over the last dim [..., C], x's dtype. Saves the output y:
//   dx = y * (dy - sum_c dy * y).
Var softmax(const Var& x);

// x [..., C] fp32|bf16 -> log_softmax over the last dim [..., C], x's dtype. Saves the output y:
//   dx = dy - exp(y) * sum_c dy.
Var log_softmax(const Var& x);

}  // namespace daedalus::ops
