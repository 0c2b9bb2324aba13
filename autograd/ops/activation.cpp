// Activations on the tape, through kernels::unary and the activation backward kernels.
#include "autograd/ops/activation.h"

#include "autograd/kernels/activation.h"
#include "autograd/kernels/elementwise.h"

namespace daedalus::ops {

Var silu(const Var& x) {
  SavedTensor keep_x = save(x.value());
  return record1("silu", {x}, kernels::unary(kernels::UnaryOp::silu, x.value()), [keep_x](const BackwardContext& ctx) {
    return std::vector<Tensor>{kernels::silu_backward(keep_x.get(), ctx.grad())};
  });
}

Var sigmoid(const Var& x) {
  const Tensor y = kernels::unary(kernels::UnaryOp::sigmoid, x.value());
  SavedTensor keep_y = save(y);
  return record1("sigmoid", {x}, y, [keep_y](const BackwardContext& ctx) {
    return std::vector<Tensor>{kernels::sigmoid_backward(keep_y.get(), ctx.grad())};
  });
}

Var swiglu(const Var& gate, const Var& up) {
  SavedTensor keep_gate = save(gate.value());
  SavedTensor keep_up = save(up.value());
  return record1(
      "swiglu", {gate, up}, kernels::swiglu(gate.value(), up.value()),
      [keep_gate, keep_up](const BackwardContext& ctx) {
        kernels::SwigluGrads g = kernels::swiglu_backward(keep_gate.get(), keep_up.get(), ctx.grad());
        return std::vector<Tensor>{ctx.needs_grad(0) ? g.dgate : Tensor(), ctx.needs_grad(1) ? g.dup : Tensor()};
      });
}

Var exp(const Var& x) {
  const Tensor y = kernels::unary(kernels::UnaryOp::exp, x.value());
  SavedTensor keep_y = save(y);
  return record1("exp", {x}, y, [keep_y](const BackwardContext& ctx) {
    return std::vector<Tensor>{kernels::mul(ctx.grad(), keep_y.get())};
  });
}

}  // namespace daedalus::ops
