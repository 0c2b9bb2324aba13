// SwiGLU MLP.
#include "model/mlp.h"

namespace daedalus::model {

Mlp::Mlp(const BuildContext& ctx, const std::string& module, int64_t hidden, int64_t intermediate)
    : gate_proj_(ctx, module + ".gate_proj", hidden, intermediate),
      up_proj_(ctx, module + ".up_proj", hidden, intermediate),
      down_proj_(ctx, module + ".down_proj", intermediate, hidden) {}

Var Mlp::forward(const Var& x) { return down_proj_.forward_swiglu(gate_proj_.forward(x), up_proj_.forward(x)); }

}  // namespace daedalus::model
