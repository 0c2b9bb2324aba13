// Differentiable activations of the FFN and the router: SiLU, sigmoid, SwiGLU, exp.
// fp32|bf16 inputs of any strides; outputs are new contiguous tensors of the input's dtype and
// every gradient comes back in the input's dtype (the kernels compute in float, round once).
#pragma once

#include "autograd/tape.h"

namespace daedalus::ops {

// x [...] -> silu(x) = x * sigmoid(x) [...]. Saves x.
Var silu(const Var& x);

// x [...] -> sigmoid(x) = 1 / (1 + exp(-x)) [...]. Saves the output y (dx = dy * y * (1 - y)).
Var sigmoid(const Var& x);

// gate, up [..., F] (same shape and dtype) -> silu(gate) * up [..., F]. Saves gate and up.
// DeepSeek-V3's MLP: w2(swiglu(w1 x, w3 x)).
Var swiglu(const Var& gate, const Var& up);

// x [...] -> exp(x) [...]. Saves the output y (dx = dy * y).
Var exp(const Var& x);

}  // namespace daedalus::ops
