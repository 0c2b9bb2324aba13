// AdamW on the FP32 master weights, with global gradient-norm clipping (config section `optimizer:`).
//
// PyTorch's torch.optim.AdamW semantics, step t = 1, 2, ... (one count for all parameters):
//   p ← p · (1 − lr·wd)                                  decoupled decay (wd = 0 when Param::weight_decay is false)
//   m ← β1·m + (1 − β1)·g          v ← β2·v + (1 − β2)·g²    (m, v stored in state_dtype: fp32 or bf16)
//   p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
// Each element is computed in double from the stored values and every stored result is rounded
// once, to nearest even: p to fp32, m and v to the state dtype — and the update reads the stored
// (rounded) m and v, so a bf16 state behaves exactly like a bf16 tensor updated in place. PyTorch's
// fp32 kernels round after every operation; the two agree to a few fp32 ulps per step.
//
// Clipping follows torch.nn.utils.clip_grad_norm_: the norm is the L2 norm over every gradient
// (sum of squares in double), the gradients are multiplied in place by min(1, grad_clip / (norm + 1e-6))
// just before the update. A parameter without a gradient this step is skipped: no decay, its
// moments untouched (unlike PyTorch, which keeps a step count per parameter, the bias correction
// uses the one global count, the one a checkpoint stores).
//
// The arithmetic is autograd/kernels/adamw.h: in place on each parameter's device (CPU: OpenMP over
// elements; CUDA: one fused kernel per parameter), the same bits on both for the same inputs. The
// gradient norm's sums of squares run on the device too; only one double per parameter comes back.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "autograd/tape.h"

namespace daedalus::train {

struct OptimizerConfig {
  double lr = 3e-4;  // base learning rate; the schedule scales it per step
  std::array<double, 2> betas{0.9, 0.95};
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;          // max global L2 norm of the gradients; 0 = no clipping
  DType state_dtype = DType::f32;  // exp_avg / exp_avg_sq storage: f32 | bf16
  // InputError naming `optimizer.<key>` and the value.
  void validate() const;
};

// An element range [begin, end) of a tensor's row-major flattening.
using ElementRange = std::pair<int64_t, int64_t>;

// A trainable tensor as the model registers it. `var` holds the FP32 master weight (value()) and
// its accumulated gradient (grad()). The model decides `weight_decay` (none on norms, biases, the
// router bias). `sharded`: the part this rank updates is held by no other rank of the group that
// grad_norm's reduce_sharded_sq sums over (routed experts over the EP group; with ZeRO-1 every
// parameter's shard over the world), so its squared norm is summed over that group.
// `owned` (ZeRO-1, train/zero.h): the element ranges of the tensor this rank updates, in order
// (possibly none); unset means the whole tensor (stage 0). Only these elements of the gradient are
// read, and only these of the weight written; the moments hold just them.
struct Param {
  std::string name;
  Var var;
  bool weight_decay = true;
  bool sharded = false;
  std::optional<std::vector<ElementRange>> owned = std::nullopt;
};

class AdamW {
 public:
  // Moments start at zero, on each parameter's device. InputError for a non-fp32, non-contiguous or
  // duplicate-named parameter, or an invalid config.
  AdamW(std::vector<Param> params, OptimizerConfig config);

  // Global L2 norm of the gradients this step: sqrt(replicated + reduce(sharded)), where each term
  // is a sum of squares in double (summed in fixed-size blocks in a fixed order: the same bits at
  // any thread count). `reduce_sharded_sq`, when given, is called exactly once with this rank's
  // sharded sum (0 when it holds none: it is a collective, e.g. an all-reduce over the EP group).
  // A NaN or inf anywhere makes the result non-finite: the trainer's signal to skip or abort.
  double grad_norm(const std::function<double(double)>& reduce_sharded_sq = {}) const;

  // The factor clip_and_step applies: min(1, grad_clip / (grad_norm + 1e-6)); 1 when clipping is off.
  double clip_scale(double grad_norm) const;

  // Scales the gradients by clip_scale(grad_norm) (in place) and takes one AdamW step with learning
  // rate `lr`; the step count advances first (the first step is t = 1). InputError for a non-finite
  // grad_norm (the trainer skips such steps before stepping).
  void clip_and_step(double lr, double grad_norm);

  void zero_grad();  // drops every parameter's gradient

  // ---- state, for checkpoints ----
  int64_t step_count() const { return step_; }  // steps taken (the next step is step_count() + 1)
  void set_step_count(int64_t steps);
  const std::vector<Param>& params() const { return params_; }
  const OptimizerConfig& config() const { return config_; }
  // The moments of a parameter, dtype state_dtype, on its device: the parameter's shape (stage 0),
  // or [owned elements] holding its owned ranges back to back (ZeRO-1). Overwrite them in place
  // (copy_) when loading; InputError for an unknown name.
  Tensor& exp_avg(std::string_view name);
  Tensor& exp_avg_sq(std::string_view name);
  // The element ranges this rank updates of params()[index]: `owned`, or the whole tensor.
  std::vector<ElementRange> ranges(size_t index) const;
  // Bytes of optimizer state on this rank (both moments; the FP32 masters are the model's weights).
  int64_t state_bytes() const;

 private:
  size_t index_of(std::string_view name) const;

  std::vector<Param> params_;
  OptimizerConfig config_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  std::unordered_map<std::string, size_t> index_;
  int64_t step_ = 0;
};

}  // namespace daedalus::train
