// The tape, gradient slots, recording, no-grad mode, saved-tensor hooks, recomputation.
#include "autograd/tape.h"

#include <atomic>

#include "autograd/kernels/elementwise.h"

namespace daedalus {

namespace {

thread_local bool t_grad_enabled = true;
thread_local Tape* t_current_tape = nullptr;
thread_local SavedTensorHook::Pack t_pack;
thread_local bool t_recompute_forward = false;  // inside recompute()'s first, unrecorded run of fn

// Epochs are unique across all tapes, so a Var can tell whether the tape it is on still holds its
// history (a private recomputation tape never shares an epoch with the thread's tape).
std::atomic<uint64_t> g_next_epoch{1};
uint64_t next_epoch() { return g_next_epoch.fetch_add(1); }

// Turns recording on for a scope (recomputation runs inside backward, which may be under no-grad).
struct EnableGrad {
  bool previous = t_grad_enabled;
  EnableGrad() { t_grad_enabled = true; }
  ~EnableGrad() { t_grad_enabled = previous; }
};

}  // namespace

// ---- gradient slots and variables ---------------------------------------------------------------

void GradSlot::accumulate(std::string_view op, const Tensor& g) {
  DAEDALUS_CHECK(g.shape() == shape, "{} backward: gradient of shape {} for a tensor of shape {}", op,
                 shape_str(g.shape()), shape_str(shape));
  DAEDALUS_CHECK(g.dtype() == dtype, "{} backward: gradient of dtype {} for a {} tensor of shape {}", op,
                 dtype_name(g.dtype()), dtype_name(dtype), shape_str(shape));
  if (!grad.defined()) {
    // A leaf's gradient outlives the tape and may be updated in place (clipping, accumulation), so
    // it gets storage of its own; a non-leaf's may alias the tensor the node returned.
    grad = is_leaf ? g.clone() : g;
    grad_owned = is_leaf;
  } else if (!grad_owned) {
    grad = kernels::add(grad, g);
    grad_owned = true;
  } else {
    kernels::add_(grad, g);
  }
}

Var::Var(Tensor value, bool requires_grad) : value_(std::move(value)) {
  DAEDALUS_CHECK(value_.defined(), "Var: undefined tensor");
  DAEDALUS_CHECK(!requires_grad || is_floating(value_.dtype()),
                 "Var: a {} tensor cannot require a gradient (only floating dtypes can)", value_.describe());
  slot_ = std::make_shared<GradSlot>();
  slot_->shape = value_.shape();
  slot_->dtype = value_.dtype();
  slot_->requires_grad = requires_grad;
}

const Tensor& Var::grad() const {
  static const Tensor kNone;
  return slot_ ? slot_->grad : kNone;
}

void Var::zero_grad() {
  if (!slot_) return;
  slot_->grad = Tensor();
  slot_->grad_owned = false;
}

// ---- saved tensors ------------------------------------------------------------------------------

SavedTensor save(const Tensor& t) {
  SavedTensor s;
  if (t_pack && t.defined()) {
    s.unpack_ = t_pack(t);
  } else {
    s.tensor_ = t;
  }
  return s;
}

SavedTensorHook::SavedTensorHook(Pack pack) : previous_(std::move(t_pack)) { t_pack = std::move(pack); }
SavedTensorHook::~SavedTensorHook() { t_pack = std::move(previous_); }

// ---- recording ----------------------------------------------------------------------------------

std::vector<Var> record_outputs(std::vector<Tensor> outputs, std::vector<std::shared_ptr<GradSlot>>& slots) {
  std::vector<Var> vars;
  vars.reserve(outputs.size());
  for (size_t i = 0; i < outputs.size(); ++i) vars.push_back(Var(std::move(outputs[i]), slots[i]));
  return vars;
}

std::vector<Var> record(std::string_view op, const std::vector<Var>& inputs, std::vector<Tensor> outputs,
                        BackwardFn backward) {
  bool any = false;
  if (t_grad_enabled)
    for (const Var& in : inputs) any = any || in.requires_grad();
  Tape& tape = current_tape();
  if (any || t_recompute_forward)
    for (const Var& in : inputs)
      if (in.requires_grad() && in.slot()->is_leaf) tape.note_use(in.slot().get());
  std::vector<std::shared_ptr<GradSlot>> slots;
  for (const Tensor& out : outputs) {
    auto slot = std::make_shared<GradSlot>();
    slot->shape = out.shape();
    slot->dtype = out.dtype();
    slot->requires_grad = any && is_floating(out.dtype());
    slot->is_leaf = !any;
    slot->tape_epoch = tape.epoch();
    slots.push_back(std::move(slot));
  }
  if (any) {
    Tape::Node node{std::string(op), {}, slots, std::move(backward)};
    for (const Var& in : inputs) node.inputs.push_back(in.slot());
    tape.push(std::move(node));
  }
  return record_outputs(std::move(outputs), slots);
}

Var record1(std::string_view op, const std::vector<Var>& inputs, Tensor output, BackwardFn backward) {
  std::vector<Tensor> outputs;
  outputs.push_back(std::move(output));
  return record(op, inputs, std::move(outputs), std::move(backward))[0];
}

// ---- the tape -----------------------------------------------------------------------------------

Tape::Tape() : epoch_(next_epoch()) {}

void Tape::push(Node node) { nodes_.push_back(std::move(node)); }

void Tape::clear() {
  nodes_.clear();
  first_use_.clear();
  observer_ = nullptr;
  epoch_ = next_epoch();
}

// The node that records this op (or the recompute() node around it) is pushed at index size().
void Tape::note_use(const GradSlot* leaf) { first_use_.try_emplace(leaf, nodes_.size()); }

size_t Tape::first_use(const GradSlot* leaf) const {
  const auto it = first_use_.find(leaf);
  return it == first_use_.end() ? nodes_.size() : it->second;
}

void Tape::backward(const std::vector<Var>& roots, const std::vector<Tensor>& seeds) {
  DAEDALUS_CHECK(seeds.empty() || seeds.size() == roots.size(), "backward: {} seeds for {} roots", seeds.size(),
                 roots.size());
  for (size_t r = 0; r < roots.size(); ++r) {
    const Var& root = roots[r];
    DAEDALUS_CHECK(root.defined(), "backward: undefined root");
    DAEDALUS_CHECK(root.requires_grad(),
                   "backward: the root {} does not require a gradient (no input requires one, or it was computed "
                   "under NoGradGuard)",
                   root.value().describe());
    DAEDALUS_CHECK(root.slot()->is_leaf || root.slot()->tape_epoch == epoch_,
                   "backward: the history of root {} is gone: an earlier backward released the tape (or it was "
                   "cleared); run the forward again",
                   root.value().describe());
    const Tensor seed = seeds.empty() ? Tensor() : seeds[r];
    if (seed.defined()) {
      root.slot()->accumulate("backward seed", seed);
    } else {
      DAEDALUS_CHECK(root.value().numel() == 1,
                     "backward: root of shape {} is not a scalar; pass a seed gradient of that shape",
                     shape_str(root.shape()));
      root.slot()->accumulate("backward seed", Tensor::ones(root.shape(), root.dtype(), root.value().device()));
    }
  }
  BackwardObserver* const observer = observer_;
  try {
    if (observer != nullptr) observer->begin(*this);
    for (size_t i = nodes_.size(); i-- > 0;) {
      run_node(i);
      if (observer != nullptr) observer->node_done(i);
    }
    if (observer != nullptr) observer->end();
  } catch (...) {
    clear();
    throw;
  }
  clear();
}

void Tape::run_node(size_t i) {
  Node node = std::move(nodes_[i]);
  nodes_.pop_back();  // the node (and what its closure saved) is freed when this call ends
  const Tensor* any = nullptr;
  for (const auto& out : node.outputs)
    if (out->grad.defined()) any = &out->grad;
  if (any == nullptr) return;  // nothing flowed into this node's outputs
  std::vector<Tensor> grads;
  for (const auto& out : node.outputs)
    grads.push_back(out->grad.defined() ? out->grad : Tensor::zeros(out->shape, out->dtype, any->device()));
  std::vector<bool> needs;
  for (const auto& in : node.inputs) needs.push_back(in->requires_grad);
  const std::vector<Tensor> input_grads = node.backward(BackwardContext(std::move(grads), needs));
  DAEDALUS_CHECK(input_grads.size() == node.inputs.size(), "{} backward: returned {} gradients for {} inputs", node.op,
                 input_grads.size(), node.inputs.size());
  for (size_t k = 0; k < node.inputs.size(); ++k)
    if (needs[k] && input_grads[k].defined()) node.inputs[k]->accumulate(node.op, input_grads[k]);
  for (const auto& out : node.outputs)
    if (!out->is_leaf) out->grad = Tensor();  // consumed: intermediate gradients are not kept
}

Tape& current_tape() {
  thread_local Tape default_tape;
  return t_current_tape ? *t_current_tape : default_tape;
}

TapeScope::TapeScope(Tape& tape) : previous_(t_current_tape) { t_current_tape = &tape; }
TapeScope::~TapeScope() { t_current_tape = previous_; }

void backward(const Var& loss, const Tensor& seed) { current_tape().backward(loss, seed); }

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = previous_; }
bool grad_enabled() { return t_grad_enabled; }

// ---- recomputation ------------------------------------------------------------------------------

std::vector<Var> recompute(std::string_view name, const std::function<std::vector<Var>(const std::vector<Var>&)>& fn,
                           const std::vector<Var>& inputs) {
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    struct Forward {  // parameters fn reads are noted as used by the node recorded below
      bool previous = t_recompute_forward;
      Forward() { t_recompute_forward = true; }
      ~Forward() { t_recompute_forward = previous; }
    } forward;
    std::vector<Var> detached;
    for (const Var& in : inputs) detached.push_back(in.detach());
    for (const Var& out : fn(detached)) outputs.push_back(out.value());
  }
  std::vector<SavedTensor> saved;
  for (const Var& in : inputs) saved.push_back(save(in.value()));
  return record(name, inputs, std::move(outputs), [fn, saved](const BackwardContext& ctx) {
    EnableGrad enable;
    Tape tape;
    TapeScope scope(tape);
    std::vector<Var> leaves;
    for (size_t i = 0; i < saved.size(); ++i) leaves.emplace_back(saved[i].get(), ctx.needs_grad(i));
    const std::vector<Var> outs = fn(leaves);
    std::vector<Var> roots;
    std::vector<Tensor> seeds;
    for (size_t k = 0; k < outs.size(); ++k) {
      if (!outs[k].requires_grad()) continue;
      roots.push_back(outs[k]);
      seeds.push_back(ctx.grad(k));
    }
    if (!roots.empty()) tape.backward(roots, seeds);
    std::vector<Tensor> grads;
    for (const Var& leaf : leaves) grads.push_back(leaf.grad());
    return grads;
  });
}

}  // namespace daedalus
