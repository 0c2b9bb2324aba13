// AdamW with global-norm clipping on FP32 master weights; the update rule is in optimizer.h.
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "autograd/check.h"
#include "autograd/dtype_codec.h"

namespace daedalus::train {

namespace {

// Elements per partial sum of the gradient norm: the blocks are summed in order, so the result
// does not depend on the thread count.
constexpr int64_t kNormBlock = 8192;
// Below this many elements a tensor is updated by one thread (the fork costs more than the work).
constexpr int64_t kParallelMin = 1 << 15;

// A double rounded to bf16 with a single rounding to nearest even: first to float rounding to odd
// (x itself when it fits, otherwise its neighbour toward zero with the last bit set), then to bf16.
// Rounding to odd with at least two extra bits makes the second rounding exact (Boldo & Melquiond
// 2008), so no value near a bf16 tie is rounded twice.
bf16 double_to_bf16(double x) {
  float f = static_cast<float>(x);
  if (std::isnan(x) || double(f) == x) return codec::float_to_bf16(f);
  if (std::fabs(double(f)) > std::fabs(x)) f = std::nextafter(f, 0.0f);
  return codec::float_to_bf16(codec::bits_float(codec::float_bits(f) | 1u));
}

double load(float s) { return s; }
double load(bf16 s) { return codec::bf16_to_float(s); }
template <typename S>
S store(double x) {
  if constexpr (std::is_same_v<S, float>) {
    return static_cast<float>(x);
  } else {
    return double_to_bf16(x);
  }
}

// The constants of one step, shared by every element.
struct StepConstants {
  double lr, beta1, beta2, eps;
  double step_size;   // lr / (1 - beta1^t)
  double bc2_sqrt;    // sqrt(1 - beta2^t)
  double grad_scale;  // clipping factor, 1 = none
};

// One AdamW step over n contiguous elements: p fp32, g fp32 (scaled in place when grad_scale != 1),
// m and v of storage type S. `decay` = lr * weight_decay of this parameter (0 for none).
template <typename S>
void adamw_update(float* p, float* g, S* m, S* v, int64_t n, double decay, const StepConstants& c) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    if (c.grad_scale != 1.0) g[i] = static_cast<float>(double(g[i]) * c.grad_scale);
    const double gi = g[i];
    m[i] = store<S>(c.beta1 * load(m[i]) + (1.0 - c.beta1) * gi);
    v[i] = store<S>(c.beta2 * load(v[i]) + (1.0 - c.beta2) * gi * gi);
    const double denom = std::sqrt(load(v[i])) / c.bc2_sqrt + c.eps;
    const double pi = double(p[i]) * (1.0 - decay);
    p[i] = static_cast<float>(pi - c.step_size * load(m[i]) / denom);
  }
}

// A contiguous host tensor holding t's values: t itself when it already is one (updates land in
// place), otherwise a copy that write_back() copies into t.
Tensor host_contiguous(const Tensor& t) {
  if (t.device().is_cpu() && t.is_contiguous()) return t;
  return t.to(Device::cpu()).contiguous();
}
void write_back(Tensor& t, const Tensor& host) {
  if (!host.shares_storage(t)) t.copy_(host);
}

// Sum of squares of an fp32 tensor in double, in kNormBlock blocks added in order.
double sum_squares(const Tensor& t) {
  const Tensor h = host_contiguous(t);
  const float* x = h.data<float>();
  const int64_t n = h.numel();
  const int64_t blocks = (n + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(size_t(blocks), 0.0);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0.0;
    const int64_t end = std::min(n, (b + 1) * kNormBlock);
    for (int64_t i = b * kNormBlock; i < end; ++i) s += double(x[i]) * double(x[i]);
    partial[size_t(b)] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
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
    exp_avg_.push_back(Tensor::zeros(w.shape(), config_.state_dtype, w.device()));
    exp_avg_sq_.push_back(Tensor::zeros(w.shape(), config_.state_dtype, w.device()));
  }
}

double AdamW::grad_norm(const std::function<double(double)>& reduce_sharded_sq) const {
  double replicated = 0.0, sharded = 0.0;
  for (const Param& p : params_) {
    const Tensor& g = p.var.grad();
    if (!g.defined()) continue;
    (p.sharded ? sharded : replicated) += sum_squares(g);
  }
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
  ++step_;
  const double t = double(step_);
  const auto [beta1, beta2] = config_.betas;
  const StepConstants c{lr,
                        beta1,
                        beta2,
                        config_.eps,
                        lr / (1.0 - std::pow(beta1, t)),
                        std::sqrt(1.0 - std::pow(beta2, t)),
                        clip_scale(grad_norm)};
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = params_[i];
    Tensor& grad = p.var.slot()->grad;
    if (!grad.defined()) continue;
    Tensor w = p.var.value();
    for (const Tensor* s : {&exp_avg_[i], &exp_avg_sq_[i]}) {
      DAEDALUS_CHECK(s->shape() == w.shape() && s->dtype() == config_.state_dtype,
                     "AdamW: optimizer state of \"{}\" is {}, expected {} {}", p.name, s->describe(),
                     dtype_name(config_.state_dtype), shape_str(w.shape()));
    }
    Tensor hw = host_contiguous(w), hg = host_contiguous(grad);
    Tensor hm = host_contiguous(exp_avg_[i]), hv = host_contiguous(exp_avg_sq_[i]);
    const double decay = p.weight_decay ? lr * config_.weight_decay : 0.0;
    if (config_.state_dtype == DType::bf16) {
      adamw_update(hw.data<float>(), hg.data<float>(), hm.data<bf16>(), hv.data<bf16>(), hw.numel(), decay, c);
    } else {
      adamw_update(hw.data<float>(), hg.data<float>(), hm.data<float>(), hv.data<float>(), hw.numel(), decay, c);
    }
    write_back(w, hw);
    if (c.grad_scale != 1.0) write_back(grad, hg);
    write_back(exp_avg_[i], hm);
    write_back(exp_avg_sq_[i], hv);
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
