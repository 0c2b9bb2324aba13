// The model's named parameters, under HuggingFace DeepseekV3 names, and their initialization.
//
// Every module registers its tensors here when it is built (`model.layers.3.self_attn.kv_b_proj
// .weight`, ...); the trainer, the optimizer, the checkpoint and the HF export all walk this one
// list in registration order. Values are FP32 master weights.
//
// Routed experts of a layer are stacked, `model.layers.L.mlp.experts.gate_proj.weight` [E_local,
// F, D], and sharded over the expert-parallel group: this rank holds global experts
// [expert_offset, expert_offset + E_local) of num_experts.
//
// Initialization is a pure function of (seed, name, global expert index): a tensor draws from
// its own Philox stream keyed by those, so weights do not depend on registration order, on which
// rank holds an expert, or on the world size — an EP=4 run starts from the same model as EP=1.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/tape.h"

namespace daedalus::model {

enum class Init : uint8_t {
  normal,  // N(0, initializer_range²)  (HF DeepseekV3's Linear and Embedding init)
  ones,    // RMSNorm weights
  zeros,   // the router's e_score_correction_bias
};

struct Parameter {
  std::string name;           // HF name
  Var var;                    // FP32 value (and gradient, when trainable)
  bool trainable = true;      // false: updated by a rule of its own (router bias), not by AdamW
  bool weight_decay = true;   // false for norms, biases and the router bias
  bool expert = false;        // stacked routed experts, sharded over the EP group
  int64_t expert_offset = 0;  // first global expert held here (expert tensors)
  int64_t num_experts = 0;    // experts in the global stack (expert tensors)

  // The shape of the whole tensor across the EP group (the local shape for non-expert tensors).
  Shape global_shape() const;
};

class ParameterStore {
 public:
  explicit ParameterStore(uint64_t seed = 0, double init_std = 0.02, Device device = Device::cpu())
      : seed_(seed), init_std_(init_std), device_(device) {}

  // Registers and initializes a tensor; names are unique (InputError otherwise).
  Var add(const std::string& name, const Shape& shape, Init init, bool weight_decay = true);
  // A stacked expert tensor [local, rest...] holding global experts [offset, offset + local).
  Var add_experts(const std::string& name, int64_t local, int64_t offset, int64_t num_experts, const Shape& rest);
  // A tensor updated outside the optimizer (no gradient).
  Var add_buffer(const std::string& name, const Shape& shape, Init init);

  const std::vector<Parameter>& all() const { return params_; }
  const Parameter* find(std::string_view name) const;  // nullptr when absent
  const Parameter& get(std::string_view name) const;   // InputError naming it when absent
  // Parameters whose names match a shell glob (fnmatch), in registration order.
  std::vector<const Parameter*> match(const std::string& glob) const;
  int64_t numel() const;  // elements held on this rank

  uint64_t seed() const { return seed_; }

 private:
  Var add_impl(Parameter p, const Shape& shape, Init init);

  uint64_t seed_;
  double init_std_;
  Device device_;
  std::vector<Parameter> params_;
};

// The values `init` gives tensor `name` (expert tensors: one stream per global expert, rows
// [offset, offset + local)): the function ParameterStore uses, exposed for tests.
Tensor initial_value(uint64_t seed, const std::string& name, const Shape& shape, Init init, double std,
                     int64_t expert_offset = -1);

}  // namespace daedalus::model
