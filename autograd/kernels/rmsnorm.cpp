// RMSNorm over the last dimension: dispatchers and CPU kernels.
#include "autograd/kernels/rmsnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

// Rows are split into this many blocks (fewer when there are fewer rows) for the dweight
// reduction, whatever the thread count, so that the summation order is fixed.
inline constexpr int64_t kRmsNormBlocks = 64;

// x, y contiguous [rows, dim] of one dtype; weight contiguous fp32 [dim]; rstd fp32 [rows].
void rmsnorm(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& weight, double eps, int64_t rows,
             int64_t dim) {
  const float* w = weight.data<float>();
  float* rs = rstd.data<float>();
  dispatch_float("rmsnorm", x.dtype(), [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    parallel_rows(rows, dim, [&](int64_t r) {
      const T* xr = in + r * dim;
      T* yr = out + r * dim;
      double sum_sq = 0.0;
      for (int64_t d = 0; d < dim; ++d) {
        const double v = to_float(xr[d]);
        sum_sq += v * v;
      }
      const float s = float(1.0 / std::sqrt(sum_sq / double(dim) + eps));
      rs[r] = s;
      for (int64_t d = 0; d < dim; ++d) yr[d] = from_float<T>(to_float(xr[d]) * s * w[d]);
    });
  });
}

// dy, x, dx contiguous [rows, dim] of one dtype; weight contiguous fp32 [dim]; rstd fp32 [rows];
// dweight fp32 [dim].
void rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dy, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, int64_t rows, int64_t dim) {
  const float* w = weight.data<float>();
  const float* rs = rstd.data<float>();
  const int64_t blocks = std::min(rows, kRmsNormBlocks);
  std::vector<double> partial(static_cast<size_t>(blocks * dim), 0.0);
  dispatch_float("rmsnorm_backward", x.dtype(), [&]<typename T>() {
    const T* px = static_cast<const T*>(x.data_ptr());
    const T* pdy = static_cast<const T*>(dy.data_ptr());
    T* pdx = static_cast<T*>(dx.data_ptr());
#pragma omp parallel for schedule(static) if (blocks > 1 && rows * dim >= kParallelThreshold)
    for (int64_t b = 0; b < blocks; ++b) {
      double* acc = partial.data() + b * dim;
      for (int64_t r = rows * b / blocks; r < rows * (b + 1) / blocks; ++r) {
        const T* xr = px + r * dim;
        const T* dyr = pdy + r * dim;
        T* dxr = pdx + r * dim;
        const double s = rs[r];
        double dot = 0.0;
        for (int64_t d = 0; d < dim; ++d) {
          const double g = to_float(dyr[d]), v = to_float(xr[d]);
          dot += g * double(w[d]) * v;
          acc[d] += g * v * s;
        }
        const double c = s * s * s * dot / double(dim);
        // The two terms cancel when dy is nearly parallel to y: combined in double, rounded once.
        for (int64_t d = 0; d < dim; ++d)
          dxr[d] = round_from_double<T>(s * double(w[d]) * double(to_float(dyr[d])) - double(to_float(xr[d])) * c);
      }
    }
  });
  float* dw = dweight.data<float>();
#pragma omp parallel for schedule(static) if (blocks * dim >= kParallelThreshold)
  for (int64_t d = 0; d < dim; ++d) {
    double sum = 0.0;
    for (int64_t b = 0; b < blocks; ++b) sum += partial[static_cast<size_t>(b * dim + d)];
    dw[d] = float(sum);
  }
}

}  // namespace cpu

namespace kernels {

namespace {

// x [..., D] and weight [D]; returns D.
int64_t check_x_weight(std::string_view op, const Tensor& x, const Tensor& weight) {
  check_float(op, x, "x");
  check_float(op, weight, "weight");
  DAEDALUS_CHECK(x.dim() >= 1, "{}: x must have at least 1 dimension, got {}", op, shape_str(x.shape()));
  check_dim(op, weight, "weight", 1);
  DAEDALUS_CHECK(weight.size(0) == x.size(-1), "{}: weight {} does not match the last dimension of x {}", op,
                 shape_str(weight.shape()), shape_str(x.shape()));
  return x.size(-1);
}

}  // namespace

RmsNormOutput rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  const Device device = common_device("rmsnorm", {&x, &weight});
  const int64_t dim = check_x_weight("rmsnorm", x, weight);
  DAEDALUS_CHECK(eps >= 0.0 && std::isfinite(eps), "rmsnorm: eps must be finite and >= 0, got {}", eps);
  const int64_t rows = dim == 0 ? 0 : x.numel() / dim;
  RmsNormOutput out{Tensor::empty(x.shape(), x.dtype(), device), Tensor::empty({rows}, DType::f32, device)};
  switch (device.type) {
    case DeviceType::cpu:
      cpu::rmsnorm(out.y, out.rstd, x.contiguous(), weight.to(DType::f32).contiguous(), eps, rows, dim);
      break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL(
          "rmsnorm", rmsnorm(out.y, out.rstd, x.contiguous(), weight.to(DType::f32).contiguous(), eps, rows, dim));
      break;
  }
  return out;
}

RmsNormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd) {
  const Device device = common_device("rmsnorm_backward", {&dy, &x, &weight, &rstd});
  const int64_t dim = check_x_weight("rmsnorm_backward", x, weight);
  check_same_shape("rmsnorm_backward", dy, x);
  DAEDALUS_CHECK(dy.dtype() == x.dtype(), "rmsnorm_backward: dy and x dtypes differ ({} and {})", dy.describe(),
                 x.describe());
  const int64_t rows = dim == 0 ? 0 : x.numel() / dim;
  check_dtype("rmsnorm_backward", rstd, "rstd", DType::f32);
  DAEDALUS_CHECK(rstd.dim() == 1 && rstd.size(0) == rows,
                 "rmsnorm_backward: rstd must be [{}] (one per row of x {}), got {}", rows, shape_str(x.shape()),
                 shape_str(rstd.shape()));
  RmsNormGrads grads{Tensor::empty(x.shape(), x.dtype(), device), Tensor::zeros({dim}, DType::f32, device)};
  switch (device.type) {
    case DeviceType::cpu:
      cpu::rmsnorm_backward(grads.dx, grads.dweight, dy.contiguous(), x.contiguous(),
                            weight.to(DType::f32).contiguous(), rstd.contiguous(), rows, dim);
      break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL("rmsnorm_backward",
                           rmsnorm_backward(grads.dx, grads.dweight, dy.contiguous(), x.contiguous(),
                                            weight.to(DType::f32).contiguous(), rstd.contiguous(), rows, dim));
      break;
  }
  return grads;
}

}  // namespace kernels

}  // namespace daedalus
