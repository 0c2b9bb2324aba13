// The SwiGLU feed-forward network: down_proj(silu(gate_proj(x)) * up_proj(x)). DeepSeek-V3's
// dense MLP of the first first_k_dense_replace layers (intermediate_size) and its shared experts
// (`mlp.shared_experts`, moe_intermediate_size × n_shared_experts).
#pragma once

#include "model/linear.h"

namespace daedalus::model {

class Mlp {
 public:
  Mlp() = default;
  // Registers <module>.{gate_proj,up_proj,down_proj}.weight.
  Mlp(const BuildContext& ctx, const std::string& module, int64_t hidden, int64_t intermediate);

  // x [..., hidden] -> [..., hidden] fp32.
  Var forward(const Var& x);

  std::vector<Linear*> linears() { return {&gate_proj_, &up_proj_, &down_proj_}; }

 private:
  Linear gate_proj_, up_proj_, down_proj_;
  Recompute recompute_ = Recompute::none;  // selective: down_proj(swiglu(gate, up)) rerun in backward
};

}  // namespace daedalus::model
