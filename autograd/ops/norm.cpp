// RMSNorm on the tape.
#include "autograd/ops/norm.h"

#include "autograd/kernels/copy.h"
#include "autograd/kernels/rmsnorm.h"

namespace daedalus::ops {

Var rms_norm(const Var& x, const Var& weight, double eps) {
  kernels::RmsNormOutput out = kernels::rmsnorm(x.value(), weight.value(), eps);
  SavedTensor keep_x = save(x.value());
  SavedTensor keep_w = save(weight.value());
  SavedTensor keep_rstd = save(out.rstd);
  return record1(
      "rms_norm", {x, weight}, out.y, [keep_x, keep_w, keep_rstd, tw = weight.dtype()](const BackwardContext& ctx) {
        kernels::RmsNormGrads g = kernels::rmsnorm_backward(ctx.grad(), keep_x.get(), keep_w.get(), keep_rstd.get());
        Tensor dw;
        if (ctx.needs_grad(1)) dw = g.dweight.dtype() == tw ? g.dweight : kernels::cast(g.dweight, tw);
        return std::vector<Tensor>{ctx.needs_grad(0) ? g.dx : Tensor(), dw};
      });
}

}  // namespace daedalus::ops
