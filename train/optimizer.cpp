// AdamW with global-norm clipping on FP32 master weights; the update rule is in optimizer.h.
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>

#include "autograd/check.h"
#include "autograd/kernels/adamw.h"
#include "autograd/nvtx.h"

namespace daedalus::train {

namespace {

// t itself when contiguous (updates land in place), otherwise a contiguous copy that write_back()
// copies into t.
Tensor contiguous_view(const Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }
void write_back(Tensor& t, const Tensor& updated) {
  if (!updated.shares_storage(t)) t.copy_(updated);
}

}  // namespace

void OptimizerConfig::validate() const {
  DAEDALUS_CHECK(std::isfinite(lr) && lr >= 0, "optimizer.lr: must be a finite number >= 0, got {}", lr);
  for (int i = 0; i < 2; ++i) {
    DAEDALUS_CHECK(betas[size_t(i)] >= 0 && betas[size_t(i)] < 1, "optimizer.betas: beta{} must be in [0, 1), got {}",
                   i + 1, betas[size_t(i)]);
  }
  DAEDALUS_CHECK(std::isfinite(eps) && eps > 0, "optimizer.eps: must be a finite number > 0, got {}", eps);
  DAEDALUS_CHECK(std::isfinite(weight_decay) && weight_decay >= 0,
                 "optimizer.weight_decay: must be a finite number >= 0, got {}", weight_decay);
  DAEDALUS_CHECK(std::isfinite(grad_clip) && grad_clip >= 0,
                 "optimizer.grad_clip: must be a finite number >= 0 (0 = off), got {}", grad_clip);
  DAEDALUS_CHECK(state_dtype == DType::f32 || state_dtype == DType::bf16,
                 "optimizer.state_dtype: expected fp32 or bf16, got {}", dtype_name(state_dtype));
}

AdamW::AdamW(std::vector<Param> params, OptimizerConfig config) : params_(std::move(params)), config_(config) {
  config_.validate();
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    DAEDALUS_CHECK(p.var.defined(), "AdamW: parameter \"{}\" has no tensor", p.name);
    const Tensor& w = p.var.value();
    DAEDALUS_CHECK(w.dtype() == DType::f32 && w.is_contiguous(),
                   "AdamW: parameter \"{}\" must be a contiguous fp32 master weight, got {}", p.name, w.describe());
    DAEDALUS_CHECK(p.var.requires_grad(), "AdamW: parameter \"{}\" does not require a gradient", p.name);
    DAEDALUS_CHECK(index_.emplace(p.name, i).second, "AdamW: parameter name \"{}\" appears twice", p.name);
    int64_t owned = 0, last = 0;
    for (const auto& [b, e] : p.owned.value_or(std::vector<ElementRange>{})) {
      DAEDALUS_CHECK(b >= last && b < e && e <= w.numel(),
                     "AdamW: parameter \"{}\": owned range [{}, {}) is empty, out of order or outside its {} elements",
                     p.name, b, e, w.numel());
      owned += e - b;
      last = e;
    }
    const Shape shape = p.owned ? Shape{owned} : w.shape();
    exp_avg_.push_back(Tensor::zeros(shape, config_.state_dtype, w.device()));
    exp_avg_sq_.push_back(Tensor::zeros(shape, config_.state_dtype, w.device()));
  }
}

std::vector<ElementRange> AdamW::ranges(size_t index) const {
  DAEDALUS_CHECK(index < params_.size(), "AdamW::ranges: parameter {} of {}", index, params_.size());
  const Param& p = params_[index];
  if (p.owned) return *p.owned;
  return {ElementRange{0, p.var.value().numel()}};
}

int64_t AdamW::state_bytes() const {
  int64_t n = 0;
  for (size_t i = 0; i < params_.size(); ++i) n += int64_t(exp_avg_[i].nbytes() + exp_avg_sq_[i].nbytes());
  return n;
}

double AdamW::grad_norm(const std::function<double(double)>& reduce_sharded_sq) const {
  // One kernel call per device for all gradients (on CUDA: one device-to-host copy of the sums).
  const nvtx::Range range("optimizer.grad_norm");
  std::vector<Tensor> replicated_grads, sharded_grads;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    const Tensor& g = p.var.grad();
    if (!g.defined()) continue;
    if (!p.owned) {
      (p.sharded ? sharded_grads : replicated_grads).push_back(contiguous_view(g));
      continue;
    }
    const Tensor flat = contiguous_view(g).view({-1});
    for (const auto& [b, e] : *p.owned) (p.sharded ? sharded_grads : replicated_grads).push_back(flat.slice(0, b, e));
  }
  const auto total = [](const std::vector<Tensor>& grads) {
    // Grouped by device (a run keeps all of them on one), summed in parameter order.
    std::vector<Device> devices;
    for (const Tensor& g : grads)
      if (std::find(devices.begin(), devices.end(), g.device()) == devices.end()) devices.push_back(g.device());
    double sum = 0.0;
    for (const Device& d : devices) {
      std::vector<Tensor> here;
      for (const Tensor& g : grads)
        if (g.device() == d) here.push_back(g);
      for (double s : kernels::sum_squares(here)) sum += s;
    }
    return sum;
  };
  const double replicated = total(replicated_grads);
  double sharded = total(sharded_grads);
  if (reduce_sharded_sq) sharded = reduce_sharded_sq(sharded);
  return std::sqrt(replicated + sharded);
}

double AdamW::clip_scale(double grad_norm) const {
  if (config_.grad_clip <= 0) return 1.0;
  return std::min(1.0, config_.grad_clip / (grad_norm + 1e-6));
}

void AdamW::clip_and_step(double lr, double grad_norm) {
  DAEDALUS_CHECK(std::isfinite(grad_norm),
                 "AdamW: gradient norm is {}; a non-finite step must be skipped (train.on_nonfinite) before stepping",
                 grad_norm);
  DAEDALUS_CHECK(std::isfinite(lr) && lr >= 0, "AdamW: learning rate must be a finite number >= 0, got {}", lr);
  const nvtx::Range range("optimizer.step");
  ++step_;
  const double t = double(step_);
  const auto [beta1, beta2] = config_.betas;
  kernels::AdamwConstants c;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = config_.eps;
  c.step_size = lr / (1.0 - std::pow(beta1, t));
  c.bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, t));
  c.grad_scale = clip_scale(grad_norm);
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    Tensor& grad = p.var.slot()->grad;
    if (!grad.defined()) continue;
    Tensor w = p.var.value();
    const Shape state_shape = p.owned ? exp_avg_[i].shape() : w.shape();  // fixed at construction
    for (const Tensor* s : {&exp_avg_[i], &exp_avg_sq_[i]}) {
      DAEDALUS_CHECK(s->shape() == state_shape && s->dtype() == config_.state_dtype && s->device() == w.device(),
                     "AdamW: optimizer state of \"{}\" is {}, expected {} {} on {}", p.name, s->describe(),
                     dtype_name(config_.state_dtype), shape_str(state_shape), w.device().str());
    }
    // The kernel updates contiguous operands in place, on their device: the whole tensors, or
    // (ZeRO-1) each owned range of weight and gradient with its part of the moments.
    Tensor cw = contiguous_view(w), cg = contiguous_view(grad);
    Tensor cm = contiguous_view(exp_avg_[i]), cv = contiguous_view(exp_avg_sq_[i]);
    c.decay = p.weight_decay ? lr * config_.weight_decay : 0.0;
    if (!p.owned) {
      kernels::adamw_step(cw, cg, cm, cv, c);
    } else {
      int64_t at = 0;
      for (const auto& [b, e] : *p.owned) {
        Tensor pw = cw.view({-1}).slice(0, b, e), pg = cg.view({-1}).slice(0, b, e);
        Tensor pm = cm.slice(0, at, at + (e - b)), pv = cv.slice(0, at, at + (e - b));
        kernels::adamw_step(pw, pg, pm, pv, c);
        at += e - b;
      }
    }
    write_back(w, cw);
    if (c.grad_scale != 1.0) write_back(grad, cg);
    write_back(exp_avg_[i], cm);
    write_back(exp_avg_sq_[i], cv);
  }
}

void AdamW::zero_grad() {
  for (Param& p : params_) p.var.zero_grad();
}

void AdamW::set_step_count(int64_t steps) {
  DAEDALUS_CHECK(steps >= 0, "AdamW: step count must be >= 0, got {}", steps);
  step_ = steps;
}

size_t AdamW::index_of(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  DAEDALUS_CHECK(it != index_.end(), "AdamW: no parameter named \"{}\"", name);
  return it->second;
}

Tensor& AdamW::exp_avg(std::string_view name) { return exp_avg_[index_of(name)]; }
Tensor& AdamW::exp_avg_sq(std::string_view name) { return exp_avg_sq_[index_of(name)]; }

}  // namespace daedalus::train
