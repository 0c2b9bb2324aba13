// Softmax and log-softmax over the last dimension: dispatchers and CPU kernels.
#include "autograd/kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

// Every kernel here works on contiguous [rows, cols] operands of one dtype; each row is independent.

void softmax(const Tensor& y, const Tensor& x, int64_t rows, int64_t cols) {
  dispatch_float("softmax", x.dtype(), [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    parallel_rows(rows, cols, [&](int64_t r) {
      const T* xr = in + r * cols;
      T* yr = out + r * cols;
      float m = -INFINITY;
      for (int64_t c = 0; c < cols; ++c) m = std::max(m, to_float(xr[c]));
      double sum = 0.0;
      for (int64_t c = 0; c < cols; ++c) sum += std::exp(to_float(xr[c]) - m);
      const double inv = 1.0 / sum;
      for (int64_t c = 0; c < cols; ++c) yr[c] = round_from_double<T>(std::exp(to_float(xr[c]) - m) * inv);
    });
  });
}

void log_softmax(const Tensor& y, const Tensor& x, int64_t rows, int64_t cols) {
  dispatch_float("log_softmax", x.dtype(), [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    parallel_rows(rows, cols, [&](int64_t r) {
      const T* xr = in + r * cols;
      T* yr = out + r * cols;
      float m = -INFINITY;
      for (int64_t c = 0; c < cols; ++c) m = std::max(m, to_float(xr[c]));
      double sum = 0.0;
      for (int64_t c = 0; c < cols; ++c) sum += std::exp(to_float(xr[c]) - m);
      const double lse = double(m) + std::log(sum);  // x - lse in double: no cancellation when y is near 0
      for (int64_t c = 0; c < cols; ++c) yr[c] = round_from_double<T>(double(to_float(xr[c])) - lse);
    });
  });
}

void softmax_backward(const Tensor& dx, const Tensor& y, const Tensor& dy, int64_t rows, int64_t cols) {
  dispatch_float("softmax_backward", y.dtype(), [&]<typename T>() {
    const T* py = static_cast<const T*>(y.data_ptr());
    const T* pdy = static_cast<const T*>(dy.data_ptr());
    T* out = static_cast<T*>(dx.data_ptr());
    parallel_rows(rows, cols, [&](int64_t r) {
      const T* yr = py + r * cols;
      const T* dyr = pdy + r * cols;
      T* dxr = out + r * cols;
      double dot = 0.0;  // float * float is exact in double
      for (int64_t c = 0; c < cols; ++c) dot += double(to_float(dyr[c])) * double(to_float(yr[c]));
      // dy - dot cancels when dy is near the row's mean: taken in double, rounded once.
      for (int64_t c = 0; c < cols; ++c)
        dxr[c] = round_from_double<T>(double(to_float(yr[c])) * (double(to_float(dyr[c])) - dot));
    });
  });
}

void log_softmax_backward(const Tensor& dx, const Tensor& y, const Tensor& dy, int64_t rows, int64_t cols) {
  dispatch_float("log_softmax_backward", y.dtype(), [&]<typename T>() {
    const T* py = static_cast<const T*>(y.data_ptr());
    const T* pdy = static_cast<const T*>(dy.data_ptr());
    T* out = static_cast<T*>(dx.data_ptr());
    parallel_rows(rows, cols, [&](int64_t r) {
      const T* yr = py + r * cols;
      const T* dyr = pdy + r * cols;
      T* dxr = out + r * cols;
      double sum = 0.0;
      for (int64_t c = 0; c < cols; ++c) sum += to_float(dyr[c]);
      for (int64_t c = 0; c < cols; ++c)
        dxr[c] = round_from_double<T>(double(to_float(dyr[c])) - std::exp(double(to_float(yr[c]))) * sum);
    });
  });
}

}  // namespace cpu

namespace kernels {

namespace {

// [rows, cols] of the last dimension.
std::pair<int64_t, int64_t> rows_cols(std::string_view op, const Tensor& x, std::string_view name) {
  DAEDALUS_CHECK(x.dim() >= 1, "{}: {} must have at least 1 dimension, got {}", op, name, shape_str(x.shape()));
  const int64_t cols = x.size(-1);
  return {cols == 0 ? 0 : x.numel() / cols, cols};
}

void check_backward(std::string_view op, const Tensor& y, const Tensor& dy) {
  check_same_shape(op, y, dy);
  check_float(op, y, "y");
  DAEDALUS_CHECK(y.dtype() == dy.dtype(), "{}: y and dy dtypes differ ({} and {})", op, y.describe(), dy.describe());
}

}  // namespace

Tensor softmax(const Tensor& x) {
  const Device device = common_device("softmax", {&x});
  check_float("softmax", x, "x");
  const auto [rows, cols] = rows_cols("softmax", x, "x");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::softmax(y, x.contiguous(), rows, cols); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("softmax", softmax(y, x.contiguous(), rows, cols)); break;
  }
  return y;
}

Tensor log_softmax(const Tensor& x) {
  const Device device = common_device("log_softmax", {&x});
  check_float("log_softmax", x, "x");
  const auto [rows, cols] = rows_cols("log_softmax", x, "x");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::log_softmax(y, x.contiguous(), rows, cols); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("log_softmax", log_softmax(y, x.contiguous(), rows, cols)); break;
  }
  return y;
}

Tensor softmax_backward(const Tensor& y, const Tensor& dy) {
  const Device device = common_device("softmax_backward", {&y, &dy});
  check_backward("softmax_backward", y, dy);
  const auto [rows, cols] = rows_cols("softmax_backward", y, "y");
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::softmax_backward(dx, y.contiguous(), dy.contiguous(), rows, cols); break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL("softmax_backward", softmax_backward(dx, y.contiguous(), dy.contiguous(), rows, cols));
      break;
  }
  return dx;
}

Tensor log_softmax_backward(const Tensor& y, const Tensor& dy) {
  const Device device = common_device("log_softmax_backward", {&y, &dy});
  check_backward("log_softmax_backward", y, dy);
  const auto [rows, cols] = rows_cols("log_softmax_backward", y, "y");
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu: cpu::log_softmax_backward(dx, y.contiguous(), dy.contiguous(), rows, cols); break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL("log_softmax_backward",
                           log_softmax_backward(dx, y.contiguous(), dy.contiguous(), rows, cols));
      break;
  }
  return dx;
}

}  // namespace kernels

}  // namespace daedalus
