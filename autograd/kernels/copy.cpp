// Copy, cast and fill: dispatcher and CPU kernels.
#include "autograd/kernels/copy.h"

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

namespace {
template <typename D, typename S>
D convert(S v, Fp8Overflow overflow) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_integral_v<D> || std::is_integral_v<S>) {
    return element_from_double<D>(element_to_double(v));
  } else if constexpr (std::is_same_v<D, fp8e4m3>) {
    return codec::float_to_e4m3(to_float(v), overflow);
  } else if constexpr (std::is_same_v<D, fp8e5m2>) {
    return codec::float_to_e5m2(to_float(v), overflow);
  } else {
    return from_float<D>(to_float(v));
  }
}
}  // namespace

void copy(const Tensor& dst, const Tensor& src, Fp8Overflow overflow) {
  dispatch_all("copy", dst.dtype(), [&]<typename D>() {
    dispatch_all("copy", src.dtype(), [&]<typename S>() {
      D* out = static_cast<D*>(dst.data_ptr());
      const S* in = static_cast<const S*>(src.data_ptr());
      for_each_strided<2>(dst.shape(), {dst.strides(), src.strides()}, [&](auto off, int64_t n, auto st) {
        D* o = out + off[0];
        const S* i = in + off[1];
        if (st[0] == 1 && st[1] == 1) {
          for (int64_t k = 0; k < n; ++k) o[k] = convert<D>(i[k], overflow);
        } else {
          for (int64_t k = 0; k < n; ++k) o[k * st[0]] = convert<D>(i[k * st[1]], overflow);
        }
      });
    });
  });
}

void fill(const Tensor& dst, double value) {
  dispatch_all("fill", dst.dtype(), [&]<typename T>() {
    const T v = element_from_double<T>(value);
    T* out = static_cast<T*>(dst.data_ptr());
    for_each_strided<1>(dst.shape(), {dst.strides()}, [&](auto off, int64_t n, auto st) {
      for (int64_t k = 0; k < n; ++k) out[off[0] + k * st[0]] = v;
    });
  });
}

}  // namespace cpu

namespace kernels {

void copy(const Tensor& dst, const Tensor& src, Fp8Overflow overflow) {
  const Device device = common_device("copy", {&dst, &src});
  check_same_shape("copy", dst, src);
  switch (device.type) {
    case DeviceType::cpu: cpu::copy(dst, src, overflow); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("copy", copy(dst, src, overflow)); break;
  }
}

void fill(const Tensor& dst, double value) {
  const Device device = common_device("fill", {&dst});
  switch (device.type) {
    case DeviceType::cpu: cpu::fill(dst, value); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("fill", fill(dst, value)); break;
  }
}

Tensor cast(const Tensor& x, DType dtype, Fp8Overflow overflow) {
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  copy(out, x, overflow);
  return out;
}

Tensor round_to_bf16(const Tensor& x) {
  check_dtype("round_to_bf16", x, "x", DType::f32);
  return cast(cast(x, DType::bf16), DType::f32);
}

}  // namespace kernels

}  // namespace daedalus
