// SwiGLU MLP.
#include "model/mlp.h"

#include "autograd/tape.h"

namespace daedalus::model {

Mlp::Mlp(const BuildContext& ctx, const std::string& module, int64_t hidden, int64_t intermediate)
    : gate_proj_(ctx, module + ".gate_proj", hidden, intermediate),
      up_proj_(ctx, module + ".up_proj", hidden, intermediate),
      down_proj_(ctx, module + ".down_proj", intermediate, hidden),
      recompute_(ctx.recompute) {}

Var Mlp::forward(const Var& x) {
  const Var gate = gate_proj_.forward(x), up = up_proj_.forward(x);
  if (recompute_ != Recompute::selective || !grad_enabled()) return down_proj_.forward_swiglu(gate, up);
  // Only gate and up are kept; backward recomputes the SwiGLU product (and its FP8 copy).
  return recompute(
      down_proj_.name() + ".recompute",
      [this](const std::vector<Var>& in) { return std::vector<Var>{down_proj_.forward_swiglu(in[0], in[1])}; },
      {gate, up})[0];
}

}  // namespace daedalus::model
