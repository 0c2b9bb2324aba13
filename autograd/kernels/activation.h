// Activations of the FFN and the router: SiLU and sigmoid backward, SwiGLU forward and backward.
// (Forward SiLU and sigmoid are kernels::unary(UnaryOp::silu / UnaryOp::sigmoid, x) in
// elementwise.h.) fp32|bf16, all operands of one shape and dtype, any strides; computed in float,
// rounded once on store; outputs are new contiguous tensors of the operands' dtype.
// sigma(x) = 1 / (1 + exp(-x)), silu(x) = x sigma(x); both saturate cleanly (no NaN) for |x| large.
#pragma once

#include "autograd/tensor.h"

namespace daedalus::kernels {

// x, dy [...] -> dx [...]:  dx = dy * sigma(x) * (1 + x * (1 - sigma(x)))      (d silu / dx)
Tensor silu_backward(const Tensor& x, const Tensor& dy);

// y = sigmoid(x) [...], dy [...] -> dx [...]:  dx = dy * y * (1 - y)
Tensor sigmoid_backward(const Tensor& y, const Tensor& dy);

// gate, up [..., F] -> h [..., F]:  h = silu(gate) * up     (DeepSeek-V3 MLP: w2(silu(w1 x) * w3 x))
Tensor swiglu(const Tensor& gate, const Tensor& up);

struct SwigluGrads {
  Tensor dgate;  // dy * up * sigma(gate) * (1 + gate * (1 - sigma(gate)))
  Tensor dup;    // dy * silu(gate)
};

// gate, up, dy [..., F] -> dgate, dup [..., F].
SwigluGrads swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dy);

}  // namespace daedalus::kernels
