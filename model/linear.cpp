// Linear and GroupedLinear modules: registration and the recipe-driven forward.
#include "model/linear.h"

namespace daedalus::model {

namespace {

fp8::LinearState state_for(const fp8::Recipe& recipe) {
  fp8::LinearState s;
  const int len = recipe.amax_history_len;
  s.x = fp8::AmaxHistory(len);
  s.w = fp8::AmaxHistory(len);
  s.dy = fp8::AmaxHistory(len);
  return s;
}

}  // namespace

Linear::Linear(const BuildContext& ctx, const std::string& module, int64_t in, int64_t out)
    : module_(module),
      weight_(ctx.store->add(module + ".weight", {out, in}, Init::normal)),
      recipe_(ctx.recipes->for_module(module)),
      state_(state_for(recipe_)) {}

Linear::Linear(const BuildContext& ctx, const std::string& module, const Var& weight)
    : module_(module), weight_(weight), recipe_(ctx.recipes->for_module(module)), state_(state_for(recipe_)) {}

Var Linear::forward(const Var& x) { return fp8::linear(x, weight_, recipe_, &state_); }

Var Linear::forward_swiglu(const Var& gate, const Var& up) {
  return fp8::swiglu_linear(gate, up, weight_, recipe_, &state_);
}

GroupedLinear::GroupedLinear(const BuildContext& ctx, const std::string& module, int64_t local, int64_t offset,
                             int64_t num_experts, int64_t in, int64_t out)
    : module_(module),
      weight_(ctx.store->add_experts(module + ".weight", local, offset, num_experts, {out, in})),
      recipe_(ctx.recipes->for_module(module)),
      states_(size_t(local), state_for(recipe_)) {}

Var GroupedLinear::forward(const Var& x, const std::vector<int64_t>& offsets) {
  return fp8::grouped_linear(x, weight_, offsets, recipe_, &states_);
}

Var GroupedLinear::forward_swiglu(const Var& gate, const Var& up, const std::vector<int64_t>& offsets) {
  return fp8::swiglu_grouped_linear(gate, up, weight_, offsets, recipe_, &states_);
}

}  // namespace daedalus::model
