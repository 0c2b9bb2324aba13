// The tape: reverse-mode automatic differentiation over Tensors.
//
// A Var is a tensor that may take part in differentiation: its value, and a shared gradient slot.
// Every differentiable op computes its output with the raw kernels and, when an input requires a
// gradient, appends a Node to the current thread's tape: the op name, the input gradient slots, the
// output gradient slots, and a closure that captures only what its backward needs. backward(loss)
// seeds the loss gradient and runs the nodes in reverse order (tape order is already topological),
// each accumulating into its inputs' slots with += after checking shape and dtype. Nodes are freed
// as they run, so saved activations go as soon as they are used; afterwards the tape is empty.
//
// Leaves created with requires_grad (parameters) keep their gradient across backward passes,
// so micro-batches accumulate until zero_grad(). Other ops extend the tape with record()
// (fp8/ registers its FP8 Linear, parallel/ its all-to-all), and may keep saved tensors through
// save(), which applies the thread's saved-tensor hook (e.g. an FP8 copy) when one is installed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "autograd/tensor.h"

namespace daedalus {

// Where a gradient accumulates. Shared by the Var and by the nodes that read or write it; holds
// no activation, so a node keeping it alive keeps only the gradient.
struct GradSlot {
  Shape shape;
  DType dtype = DType::f32;
  bool requires_grad = false;
  bool is_leaf = true;      // created by the user, not by an op: keeps its gradient
  uint64_t tape_epoch = 0;  // the tape epoch whose node produced it (non-leaves)
  Tensor grad;              // undefined until something accumulates into it
  bool grad_owned = false;  // grad is ours to update in place (not a view of another tensor)

  // grad += g, checking shape and dtype; `op` names the node for the error message.
  void accumulate(std::string_view op, const Tensor& g);
};

class Var {
 public:
  Var() = default;
  explicit Var(Tensor value, bool requires_grad = false);

  bool defined() const { return slot_ != nullptr; }
  const Tensor& value() const { return value_; }
  const Shape& shape() const { return value_.shape(); }
  DType dtype() const { return value_.dtype(); }
  bool requires_grad() const { return slot_ && slot_->requires_grad; }
  // The accumulated gradient (undefined when none flowed here).
  const Tensor& grad() const;
  void zero_grad();  // drops the gradient (the next accumulation starts from it)
  // Same value, no history: gradients do not flow back through the result.
  Var detach() const { return Var(value_, false); }

  const std::shared_ptr<GradSlot>& slot() const { return slot_; }

 private:
  friend class Tape;
  friend std::vector<Var> record_outputs(std::vector<Tensor>, std::vector<std::shared_ptr<GradSlot>>&);
  Var(Tensor value, std::shared_ptr<GradSlot> slot) : value_(std::move(value)), slot_(std::move(slot)) {}

  Tensor value_;
  std::shared_ptr<GradSlot> slot_;
};

// ---- saved tensors ------------------------------------------------------------------------------

// What a node keeps for backward. Plain tensors by default; while a SavedTensorHook is installed,
// the hook may replace the tensor by a compact form that unpacks back when backward runs.
class SavedTensor {
 public:
  SavedTensor() = default;
  Tensor get() const { return unpack_ ? unpack_() : tensor_; }

 private:
  friend SavedTensor save(const Tensor& t);
  Tensor tensor_;
  std::function<Tensor()> unpack_;
};

SavedTensor save(const Tensor& t);

// While alive, save() passes every tensor through `pack`, which returns a function that restores
// it (or an equivalent). Hooks nest; the innermost wins.
class SavedTensorHook {
 public:
  using Pack = std::function<std::function<Tensor()>(const Tensor&)>;
  explicit SavedTensorHook(Pack pack);
  ~SavedTensorHook();
  SavedTensorHook(const SavedTensorHook&) = delete;
  SavedTensorHook& operator=(const SavedTensorHook&) = delete;

 private:
  Pack previous_;
};

// ---- recording ----------------------------------------------------------------------------------

// What a backward closure receives.
class BackwardContext {
 public:
  BackwardContext(std::vector<Tensor> grad_outputs, std::vector<bool> needs)
      : grads_(std::move(grad_outputs)), needs_(std::move(needs)) {}
  // Gradient of output i (zeros of the output's shape when only other outputs received one).
  const Tensor& grad(size_t i = 0) const { return grads_.at(i); }
  // Whether input i wants a gradient (skip work for frozen inputs; return an undefined Tensor).
  bool needs_grad(size_t i) const { return needs_.at(i); }

 private:
  std::vector<Tensor> grads_;
  std::vector<bool> needs_;
};

// Returns one gradient per input, in input order; undefined entries mean "no gradient".
using BackwardFn = std::function<std::vector<Tensor>(const BackwardContext&)>;

// Wraps outputs already computed from `inputs` as Vars and, when grad mode is on and an input
// requires a gradient, appends a node running `backward` to the current tape.
std::vector<Var> record(std::string_view op, const std::vector<Var>& inputs, std::vector<Tensor> outputs,
                        BackwardFn backward);
Var record1(std::string_view op, const std::vector<Var>& inputs, Tensor output, BackwardFn backward);

// ---- the tape -----------------------------------------------------------------------------------

class Tape;

// Watches one backward pass as it runs (Tape::set_observer), e.g. to start reducing gradients
// that are already final while earlier layers still differentiate (parallel/grad_overlap.h).
class BackwardObserver {
 public:
  virtual ~BackwardObserver() = default;
  virtual void begin(const Tape& tape) = 0;  // the roots are seeded; no node has run
  virtual void node_done(size_t index) = 0;  // nodes [index, size) have run (or had nothing to do)
  virtual void end() = 0;                    // every node has run
};

class Tape {
 public:
  struct Node {
    std::string op;
    std::vector<std::shared_ptr<GradSlot>> inputs;
    std::vector<std::shared_ptr<GradSlot>> outputs;
    BackwardFn backward;
  };

  Tape();
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  void push(Node node);
  size_t size() const { return nodes_.size(); }
  uint64_t epoch() const { return epoch_; }

  // A leaf's first use on this tape: the index of the first node that may add to its gradient
  // (the first node taking it as an input, or the recompute() node whose function read it), or
  // size() when none does. In backward, once the nodes from that index on have run, the leaf's
  // gradient is final. Uses are noted while recording (grad mode on, or inside recompute()'s
  // forward) for leaves that require a gradient.
  size_t first_use(const GradSlot* leaf) const;
  void note_use(const GradSlot* leaf);
  // `observer` (null: none) watches the next backward() only; it must outlive that call.
  void set_observer(BackwardObserver* observer) { observer_ = observer; }

  // Runs every node in reverse, seeding each root with its seed (a root with one element may pass
  // an undefined seed: 1). Releases the tape: nodes, saved tensors and non-leaf gradients are freed.
  void backward(const std::vector<Var>& roots, const std::vector<Tensor>& seeds = {});
  void backward(const Var& root, const Tensor& seed = Tensor()) { backward(std::vector<Var>{root}, {seed}); }
  // Drops every node without running it (e.g. after an evaluation forward with grad on).
  void clear();

 private:
  void run_node(size_t i);  // runs node i (the last one) and pops it

  std::vector<Node> nodes_;
  uint64_t epoch_;  // renewed when the tape is released; Vars from older epochs have no history
  std::unordered_map<const GradSlot*, size_t> first_use_;  // leaves -> first node index (see first_use)
  BackwardObserver* observer_ = nullptr;
};

// The tape ops record onto on this thread (a thread-local default unless a TapeScope is active).
Tape& current_tape();

// Makes `tape` current for this thread while alive.
class TapeScope {
 public:
  explicit TapeScope(Tape& tape);
  ~TapeScope();
  TapeScope(const TapeScope&) = delete;
  TapeScope& operator=(const TapeScope&) = delete;

 private:
  Tape* previous_;
};

// backward(loss) on the current tape.
void backward(const Var& loss, const Tensor& seed = Tensor());

// Evaluation and generation: ops record nothing while a NoGradGuard is alive.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};
bool grad_enabled();

// Activation recomputation: runs fn(inputs) without recording and keeps only the inputs; backward
// runs fn again on a private tape and differentiates through it. Parameters that fn uses (not
// passed as inputs) receive their gradients as usual.
std::vector<Var> recompute(std::string_view name, const std::function<std::vector<Var>(const std::vector<Var>&)>& fn,
                           const std::vector<Var>& inputs);

}  // namespace daedalus
