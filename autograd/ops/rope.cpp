// RoPE on the tape.
#include "autograd/ops/rope.h"

namespace daedalus::ops {

Var rope(const Var& x, const Tensor& positions, double theta, kernels::RopeLayout layout) {
  // positions are integers: captured as they are, not through save() (a saved-tensor hook that
  // compresses activations must never see, and round, an index tensor).
  return record1("rope", {x}, kernels::rope(x.value(), positions, theta, layout),
                 [positions, theta, layout](const BackwardContext& ctx) {
                   return std::vector<Tensor>{kernels::rope(ctx.grad(), positions, theta, layout, /*inverse=*/true)};
                 });
}

}  // namespace daedalus::ops
