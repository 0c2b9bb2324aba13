// Elementwise arithmetic: dispatcher and CPU kernels.
#include "autograd/kernels/elementwise.h"

#include <cmath>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

using kernels::BinaryOp;
using kernels::UnaryOp;

namespace {

template <BinaryOp kOp>
inline float apply(float a, float b) {
  if constexpr (kOp == BinaryOp::add) return a + b;
  if constexpr (kOp == BinaryOp::sub) return a - b;
  if constexpr (kOp == BinaryOp::mul) return a * b;
  if constexpr (kOp == BinaryOp::div) return a / b;
  if constexpr (kOp == BinaryOp::maximum) return a > b || std::isnan(a) ? a : b;
  if constexpr (kOp == BinaryOp::minimum) return a < b || std::isnan(a) ? a : b;
}

template <UnaryOp kOp>
inline float apply(float x) {
  if constexpr (kOp == UnaryOp::neg) return -x;
  if constexpr (kOp == UnaryOp::abs) return std::fabs(x);
  if constexpr (kOp == UnaryOp::exp) return std::exp(x);
  if constexpr (kOp == UnaryOp::log) return std::log(x);
  if constexpr (kOp == UnaryOp::sqrt) return std::sqrt(x);
  if constexpr (kOp == UnaryOp::rsqrt) return 1.0f / std::sqrt(x);
  if constexpr (kOp == UnaryOp::square) return x * x;
  if constexpr (kOp == UnaryOp::sigmoid) return 1.0f / (1.0f + std::exp(-x));
  if constexpr (kOp == UnaryOp::silu) return x / (1.0f + std::exp(-x));
}

// out (contiguous, broadcast shape) = f(a, b) with a, b expanded views. f is a lambda (a type of
// its own, so it inlines and the unit-stride loop vectorizes), never a function pointer.
template <typename T, typename F>
void binary_loop(const Tensor& out, const Tensor& a, const Tensor& b, F f) {
  T* o = static_cast<T*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  for_each_strided<3>(out.shape(), {out.strides(), a.strides(), b.strides()}, [&](auto off, int64_t n, auto st) {
    T* y = o + off[0];
    const T* x0 = pa + off[1];
    const T* x1 = pb + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t k = 0; k < n; ++k) y[k] = from_float<T>(f(to_float(x0[k]), to_float(x1[k])));
    } else {
      for (int64_t k = 0; k < n; ++k) y[k * st[0]] = from_float<T>(f(to_float(x0[k * st[1]]), to_float(x1[k * st[2]])));
    }
  });
}

template <typename T, typename F>
void unary_loop(const Tensor& out, const Tensor& x, F f) {
  T* o = static_cast<T*>(out.data_ptr());
  const T* px = static_cast<const T*>(x.data_ptr());
  for_each_strided<2>(out.shape(), {out.strides(), x.strides()}, [&](auto off, int64_t n, auto st) {
    T* y = o + off[0];
    const T* in = px + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t k = 0; k < n; ++k) y[k] = from_float<T>(f(to_float(in[k])));
    } else {
      for (int64_t k = 0; k < n; ++k) y[k * st[0]] = from_float<T>(f(to_float(in[k * st[1]])));
    }
  });
}

template <typename Fn>
void dispatch_binary_op(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::add: return fn.template operator()<BinaryOp::add>();
    case BinaryOp::sub: return fn.template operator()<BinaryOp::sub>();
    case BinaryOp::mul: return fn.template operator()<BinaryOp::mul>();
    case BinaryOp::div: return fn.template operator()<BinaryOp::div>();
    case BinaryOp::maximum: return fn.template operator()<BinaryOp::maximum>();
    case BinaryOp::minimum: return fn.template operator()<BinaryOp::minimum>();
  }
}

template <typename Fn>
void dispatch_unary_op(UnaryOp op, Fn&& fn) {
  switch (op) {
    case UnaryOp::neg: return fn.template operator()<UnaryOp::neg>();
    case UnaryOp::abs: return fn.template operator()<UnaryOp::abs>();
    case UnaryOp::exp: return fn.template operator()<UnaryOp::exp>();
    case UnaryOp::log: return fn.template operator()<UnaryOp::log>();
    case UnaryOp::sqrt: return fn.template operator()<UnaryOp::sqrt>();
    case UnaryOp::rsqrt: return fn.template operator()<UnaryOp::rsqrt>();
    case UnaryOp::square: return fn.template operator()<UnaryOp::square>();
    case UnaryOp::sigmoid: return fn.template operator()<UnaryOp::sigmoid>();
    case UnaryOp::silu: return fn.template operator()<UnaryOp::silu>();
  }
}

}  // namespace

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  dispatch_float(kernels::op_name(op), out.dtype(), [&]<typename T>() {
    dispatch_binary_op(
        op, [&]<BinaryOp kOp>() { binary_loop<T>(out, a, b, [](float x, float y) { return apply<kOp>(x, y); }); });
  });
}

void unary(UnaryOp op, const Tensor& out, const Tensor& x) {
  dispatch_float(kernels::op_name(op), out.dtype(), [&]<typename T>() {
    dispatch_unary_op(op, [&]<UnaryOp kOp>() { unary_loop<T>(out, x, [](float v) { return apply<kOp>(v); }); });
  });
}

void affine(const Tensor& out, const Tensor& x, float alpha, float beta) {
  dispatch_float("affine", out.dtype(),
                 [&]<typename T>() { unary_loop<T>(out, x, [=](float v) { return alpha * v + beta; }); });
}

void add_(const Tensor& dst, const Tensor& src, float alpha) {
  dispatch_float("add_", dst.dtype(),
                 [&]<typename T>() { binary_loop<T>(dst, dst, src, [=](float d, float s) { return d + alpha * s; }); });
}

}  // namespace cpu

namespace kernels {

std::string_view op_name(BinaryOp op) {
  constexpr std::string_view names[] = {"add", "sub", "mul", "div", "maximum", "minimum"};
  return names[size_t(op)];
}

std::string_view op_name(UnaryOp op) {
  constexpr std::string_view names[] = {"neg", "abs", "exp", "log", "sqrt", "rsqrt", "square", "sigmoid", "silu"};
  return names[size_t(op)];
}

Shape broadcast_shapes(std::string_view op, const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    DAEDALUS_CHECK(da == db || da == 1 || db == 1, "{}: shapes {} and {} are not broadcastable", op, shape_str(a),
                   shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const std::string_view name = op_name(op);
  const Device device = common_device(name, {&a, &b});
  DAEDALUS_CHECK(a.dtype() == b.dtype(), "{}: dtypes {} and {} differ ({} and {})", name, dtype_name(a.dtype()),
                 dtype_name(b.dtype()), a.describe(), b.describe());
  const Shape shape = broadcast_shapes(name, a.shape(), b.shape());
  Tensor out = Tensor::empty(shape, a.dtype(), device);
  const Tensor ea = a.expand(shape), eb = b.expand(shape);
  switch (device.type) {
    case DeviceType::cpu: cpu::binary(op, out, ea, eb); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL(name, binary(op, out, ea, eb)); break;
  }
  return out;
}

Tensor unary(UnaryOp op, const Tensor& x) {
  const std::string_view name = op_name(op);
  const Device device = common_device(name, {&x});
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::unary(op, out, x); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL(name, unary(op, out, x)); break;
  }
  return out;
}

Tensor affine(const Tensor& x, double alpha, double beta) {
  const Device device = common_device("affine", {&x});
  Tensor out = Tensor::empty(x.shape(), x.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::affine(out, x, float(alpha), float(beta)); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("affine", affine(out, x, float(alpha), float(beta))); break;
  }
  return out;
}

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  const Device device = common_device("add_", {&dst, &src});
  DAEDALUS_CHECK(dst.dtype() == src.dtype(), "add_: dtypes {} and {} differ", dtype_name(dst.dtype()),
                 dtype_name(src.dtype()));
  const Shape shape = broadcast_shapes("add_", dst.shape(), src.shape());
  DAEDALUS_CHECK(shape == dst.shape(), "add_: source {} does not broadcast to destination {}", shape_str(src.shape()),
                 shape_str(dst.shape()));
  const Tensor es = src.expand(shape);
  switch (device.type) {
    case DeviceType::cpu: cpu::add_(dst, es, float(alpha)); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("add_", add_(dst, es, float(alpha))); break;
  }
}

}  // namespace kernels

}  // namespace daedalus
