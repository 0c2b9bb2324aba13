// SiLU / sigmoid backward and SwiGLU: dispatchers and CPU kernels.
#include "autograd/kernels/activation.h"

#include <cmath>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }  // exp overflow -> 0, no NaN

// d silu / dx = s (1 + x (1 - s)) with s = sigma(x). 1 - s is not taken as a difference (which
// loses all digits as s -> 1): the exp of -|x| gives both s and 1 - s to a few ulps.
inline float silu_grad(float x) {
  float s, one_minus_s;
  if (x >= 0.0f) {
    const float e = std::exp(-x);
    s = 1.0f / (1.0f + e);
    one_minus_s = e * s;
  } else {
    const float e = std::exp(x);
    one_minus_s = 1.0f / (1.0f + e);
    s = e * one_minus_s;
  }
  return s * (1.0f + x * one_minus_s);
}

// out (contiguous) = f(a, b) elementwise over strided a, b of out's shape and dtype.
template <typename T, typename F>
void map2(const Tensor& out, const Tensor& a, const Tensor& b, F f) {
  T* o = static_cast<T*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  for_each_strided<3>(out.shape(), {out.strides(), a.strides(), b.strides()}, [&](auto off, int64_t n, auto st) {
    for (int64_t k = 0; k < n; ++k)
      o[off[0] + k * st[0]] = from_float<T>(f(to_float(pa[off[1] + k * st[1]]), to_float(pb[off[2] + k * st[2]])));
  });
}

}  // namespace

void silu_backward(const Tensor& dx, const Tensor& x, const Tensor& dy) {
  dispatch_float("silu_backward", x.dtype(),
                 [&]<typename T>() { map2<T>(dx, x, dy, [](float v, float g) { return g * silu_grad(v); }); });
}

void sigmoid_backward(const Tensor& dx, const Tensor& y, const Tensor& dy) {
  dispatch_float("sigmoid_backward", y.dtype(),
                 [&]<typename T>() { map2<T>(dx, y, dy, [](float s, float g) { return g * s * (1.0f - s); }); });
}

void swiglu(const Tensor& h, const Tensor& gate, const Tensor& up) {
  dispatch_float("swiglu", gate.dtype(),
                 [&]<typename T>() { map2<T>(h, gate, up, [](float g, float u) { return g * sigmoid(g) * u; }); });
}

void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& gate, const Tensor& up, const Tensor& dy) {
  dispatch_float("swiglu_backward", gate.dtype(), [&]<typename T>() {
    T* pdg = static_cast<T*>(dgate.data_ptr());
    T* pdu = static_cast<T*>(dup.data_ptr());
    const T* pg = static_cast<const T*>(gate.data_ptr());
    const T* pu = static_cast<const T*>(up.data_ptr());
    const T* pdy = static_cast<const T*>(dy.data_ptr());
    for_each_strided<5>(dgate.shape(), {dgate.strides(), dup.strides(), gate.strides(), up.strides(), dy.strides()},
                        [&](auto off, int64_t n, auto st) {
                          for (int64_t k = 0; k < n; ++k) {
                            const float g = to_float(pg[off[2] + k * st[2]]);
                            const float u = to_float(pu[off[3] + k * st[3]]);
                            const float d = to_float(pdy[off[4] + k * st[4]]);
                            pdg[off[0] + k * st[0]] = from_float<T>(d * u * silu_grad(g));
                            pdu[off[1] + k * st[1]] = from_float<T>(d * g * sigmoid(g));
                          }
                        });
  });
}

}  // namespace cpu

namespace kernels {

namespace {

// Two operands of one shape, dtype (fp32|bf16) and device; returns the device.
Device check_pair(std::string_view op, const Tensor& a, std::string_view a_name, const Tensor& b,
                  std::string_view b_name) {
  const Device device = common_device(op, {&a, &b});
  check_same_shape(op, a, b);
  DAEDALUS_CHECK(a.dtype() == b.dtype(), "{}: {} and {} dtypes differ ({} and {})", op, a_name, b_name, a.describe(),
                 b.describe());
  DAEDALUS_CHECK(a.dtype() == DType::f32 || a.dtype() == DType::bf16, "{}: {} must be fp32 or bf16, got {}", op, a_name,
                 a.describe());
  return device;
}

}  // namespace

Tensor silu_backward(const Tensor& x, const Tensor& dy) {
  const Device device = check_pair("silu_backward", x, "x", dy, "dy");
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::silu_backward(dx, x, dy); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("silu_backward", silu_backward(dx, x, dy)); break;
  }
  return dx;
}

Tensor sigmoid_backward(const Tensor& y, const Tensor& dy) {
  const Device device = check_pair("sigmoid_backward", y, "y", dy, "dy");
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::sigmoid_backward(dx, y, dy); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("sigmoid_backward", sigmoid_backward(dx, y, dy)); break;
  }
  return dx;
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  const Device device = check_pair("swiglu", gate, "gate", up, "up");
  Tensor h = Tensor::empty(gate.shape(), gate.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::swiglu(h, gate, up); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("swiglu", swiglu(h, gate, up)); break;
  }
  return h;
}

SwigluGrads swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dy) {
  const Device device = check_pair("swiglu_backward", gate, "gate", up, "up");
  check_pair("swiglu_backward", gate, "gate", dy, "dy");
  SwigluGrads grads{Tensor::empty(gate.shape(), gate.dtype(), device),
                    Tensor::empty(gate.shape(), gate.dtype(), device)};
  switch (device.type) {
    case DeviceType::cpu: cpu::swiglu_backward(grads.dgate, grads.dup, gate, up, dy); break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL("swiglu_backward", swiglu_backward(grads.dgate, grads.dup, gate, up, dy));
      break;
  }
  return grads;
}

}  // namespace kernels

}  // namespace daedalus
