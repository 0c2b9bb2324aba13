// AdamW kernels: dispatcher and CPU implementation (the rule is in adamw.h).
#include "autograd/kernels/adamw.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "autograd/dtype_codec.h"
#include "autograd/kernels/cpu_clones.h"
#include "autograd/kernels/dispatch.h"

#if DAEDALUS_WITH_CUDA
#include "autograd/cuda/adamw.h"
#endif

namespace daedalus {

namespace cpu {

namespace {

// Elements per partial sum of sum_squares: the blocks are summed in order, so the result does not
// depend on the thread count. The CUDA twin uses the same block.
constexpr int64_t kNormBlock = 8192;
// Below this many elements one thread does the work (the fork costs more than the work).
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

// The update of elements [0, n), in the order and with the roundings adamw.h states. With fp32
// moments it vectorizes (no branch in the loop, restrict pointers, each stored moment reused as a
// value): every operation is an IEEE add, multiply, divide or square root of doubles, or an exact
// widening, or a nearest-even narrowing to float, each correctly rounded per lane, and this file is
// compiled with -ffp-contract=off (no fused multiply-add) and -fno-math-errno (sqrt without the
// errno call; v >= 0 or NaN, so no result changes): a vector lane gives the scalar loop's bits.
// bf16 moments round through double_to_bf16's branches and stay scalar. (Inlined into each clone
// below, so that each compiles it for its own target.)
template <typename S, bool kScaleGrad>
[[gnu::always_inline]] inline void adamw_span(float* __restrict p, float* __restrict g, S* __restrict m,
                                              S* __restrict v, int64_t n, const kernels::AdamwConstants& c) {
  const double beta1 = c.beta1, beta2 = c.beta2, one_minus_beta1 = 1.0 - c.beta1, one_minus_beta2 = 1.0 - c.beta2;
  const double bc2_sqrt = c.bc2_sqrt, eps = c.eps, keep = 1.0 - c.decay, step_size = c.step_size;
  const double grad_scale = c.grad_scale;
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (kScaleGrad) g[i] = static_cast<float>(double(g[i]) * grad_scale);
    const double gi = g[i];
    const S mi = store<S>(beta1 * load(m[i]) + one_minus_beta1 * gi);
    const S vi = store<S>(beta2 * load(v[i]) + one_minus_beta2 * gi * gi);
    m[i] = mi;
    v[i] = vi;
    const double denom = std::sqrt(load(vi)) / bc2_sqrt + eps;
    const double pi = double(p[i]) * keep;
    p[i] = static_cast<float>(pi - step_size * load(mi) / denom);
  }
}
DAEDALUS_CPU_CLONES void adamw_span_f32_scaled(float* p, float* g, float* m, float* v, int64_t n,
                                               const kernels::AdamwConstants& c) {
  adamw_span<float, true>(p, g, m, v, n, c);
}
DAEDALUS_CPU_CLONES void adamw_span_f32_unscaled(float* p, float* g, float* m, float* v, int64_t n,
                                                 const kernels::AdamwConstants& c) {
  adamw_span<float, false>(p, g, m, v, n, c);
}

template <typename S>
void adamw_update(float* p, float* g, S* m, S* v, int64_t n, const kernels::AdamwConstants& c) {
  constexpr int64_t kSpan = 4096;
  const int64_t spans = (n + kSpan - 1) / kSpan;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t s = 0; s < spans; ++s) {
    const int64_t i0 = s * kSpan, len = std::min(kSpan, n - i0);
    const bool scale = c.grad_scale != 1.0;
    if constexpr (std::is_same_v<S, float>) {
      (scale ? adamw_span_f32_scaled : adamw_span_f32_unscaled)(p + i0, g + i0, m + i0, v + i0, len, c);
    } else {
      (scale ? adamw_span<S, true> : adamw_span<S, false>)(p + i0, g + i0, m + i0, v + i0, len, c);
    }
  }
}

double sum_squares(const float* x, int64_t n) {
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

}  // namespace cpu

namespace kernels {

void adamw_step(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v, const AdamwConstants& c) {
  constexpr std::string_view op = "adamw_step";
  const Device device = common_device(op, {&w, &g, &m, &v});
  check_dtype(op, w, "w", DType::f32);
  check_dtype(op, g, "g", DType::f32);
  DAEDALUS_CHECK(m.dtype() == v.dtype() && (m.dtype() == DType::f32 || m.dtype() == DType::bf16),
                 "{}: moments must both be fp32 or both bf16, got {} and {}", op, m.describe(), v.describe());
  for (const Tensor* t : {&w, &g, &m, &v}) {
    DAEDALUS_CHECK(t->is_contiguous() && t->numel() == w.numel(),
                   "{}: operands must be contiguous with {} elements, got {}", op, w.numel(), t->describe());
  }
  if (w.numel() == 0) return;
  switch (device.type) {
    case DeviceType::cpu:
      if (m.dtype() == DType::bf16) {
        cpu::adamw_update(w.data<float>(), g.data<float>(), m.data<bf16>(), v.data<bf16>(), w.numel(), c);
      } else {
        cpu::adamw_update(w.data<float>(), g.data<float>(), m.data<float>(), v.data<float>(), w.numel(), c);
      }
      break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("adamw_step", adamw_step(w, g, m, v, c)); break;
  }
}

std::vector<double> sum_squares(const std::vector<Tensor>& xs) {
  constexpr std::string_view op = "sum_squares";
  if (xs.empty()) return {};
  Device device = xs.front().device();
  for (const Tensor& x : xs) {
    DAEDALUS_CHECK(x.defined(), "{}: undefined tensor", op);
    check_dtype(op, x, "x", DType::f32);
    DAEDALUS_CHECK(x.is_contiguous(), "{}: x must be contiguous, got {}", op, x.describe());
    DAEDALUS_CHECK(x.device() == device, "{}: operands on {} and {}", op, device.str(), x.device().str());
  }
  switch (device.type) {
    case DeviceType::cpu: {
      std::vector<double> out;
      out.reserve(xs.size());
      for (const Tensor& x : xs) out.push_back(cpu::sum_squares(x.data<float>(), x.numel()));
      return out;
    }
    case DeviceType::cuda: {
      std::vector<double> out;
      DAEDALUS_CUDA_KERNEL("sum_squares", sum_squares(xs, out));
      return out;
    }
  }
  return {};
}

}  // namespace kernels

}  // namespace daedalus
