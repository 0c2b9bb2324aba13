// RoPE on the tape.
#include "autograd/ops/rope.h"

#include "autograd/kernels/dispatch.h"

namespace daedalus::ops {

Var rope(const Var& x, const Tensor& positions, const kernels::RopeFrequencies& freqs, kernels::RopeLayout layout) {
  // positions are integers: captured as they are, not through save() (a saved-tensor hook that
  // compresses activations must never see, and round, an index tensor).
  return record1("rope", {x}, kernels::rope(x.value(), positions, freqs, layout),
                 [positions, freqs, layout](const BackwardContext& ctx) {
                   return std::vector<Tensor>{kernels::rope(ctx.grad(), positions, freqs, layout, /*inverse=*/true)};
                 });
}

Var rope(const Var& x, const Tensor& positions, double theta, kernels::RopeLayout layout) {
  kernels::check_dim("rope", x.value(), "x [B, T, H, D]", 4);
  return rope(x, positions, kernels::RopeFrequencies::standard(theta, x.value().size(3)), layout);
}

}  // namespace daedalus::ops
