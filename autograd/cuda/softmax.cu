// CUDA twins of autograd/kernels/softmax: softmax and log-softmax over the last dimension, forward
// and backward. One block per row (kRowThreads threads striding over the columns): the row maximum
// and the double sums through the fixed-tree block reductions, then each output rounded once from
// the same double expression as the CPU. expf may differ from the CPU's by an ulp or two, and the
// double sums by their order; NaN and all -inf rows behave as on the CPU (NaN results).
#include <cuda_runtime.h>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/row_reduce.cuh"
#include "autograd/cuda/stream.h"

namespace daedalus::cuda {

namespace {

enum class Kind { softmax, log_softmax };

// x, y contiguous [rows, cols].
template <typename T, Kind kKind>
__global__ void softmax_kernel(T* y, const T* x, int64_t rows, int64_t cols) {
  __shared__ float smax[kRowThreads / 32];
  __shared__ double ssum[kRowThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    float m;
    double sum;
    row_max_sumexp(xr, cols, smax, ssum, m, sum);
    if constexpr (kKind == Kind::softmax) {
      const double inv = 1.0 / sum;
      for (int64_t c = threadIdx.x; c < cols; c += kRowThreads)
        yr[c] = round_once<T>(double(expf(to_float(xr[c]) - m)) * inv);
    } else {
      const double lse = double(m) + log(sum);
      for (int64_t c = threadIdx.x; c < cols; c += kRowThreads) yr[c] = round_once<T>(double(to_float(xr[c])) - lse);
    }
  }
}

// softmax:     dx = y (dy - sum_k dy_k y_k)
// log_softmax: dx = dy - exp(y) sum_k dy_k
template <typename T, Kind kKind>
__global__ void softmax_backward_kernel(T* dx, const T* y, const T* dy, int64_t rows, int64_t cols) {
  __shared__ double ssum[kRowThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    T* dxr = dx + r * cols;
    double acc = 0.0;
    for (int64_t c = threadIdx.x; c < cols; c += kRowThreads) {
      const double g = to_float(dyr[c]);
      // float * float is exact in double; the add is kept apart from it (no FMA), as on the CPU.
      acc = __dadd_rn(acc, kKind == Kind::softmax ? __dmul_rn(g, double(to_float(yr[c]))) : g);
    }
    acc = block_sum(acc, ssum);
    for (int64_t c = threadIdx.x; c < cols; c += kRowThreads) {
      const double yv = to_float(yr[c]), g = to_float(dyr[c]);
      if constexpr (kKind == Kind::softmax) {
        dxr[c] = round_once<T>(yv * (g - acc));
      } else {
        dxr[c] = round_once<T>(__dsub_rn(g, __dmul_rn(exp(yv), acc)));
      }
    }
  }
}

template <Kind kKind>
void launch_forward(std::string_view name, const Tensor& y, const Tensor& x, int64_t rows, int64_t cols) {
  if (rows == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(x.device().index));
  const cudaStream_t stream = compute_stream(x.device().index);
  dispatch_float(name, x.dtype(), [&]<typename T>() {
    softmax_kernel<T, kKind><<<row_blocks(rows), kRowThreads, 0, stream>>>(
        static_cast<T*>(y.data_ptr()), static_cast<const T*>(x.data_ptr()), rows, cols);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

template <Kind kKind>
void launch_backward(std::string_view name, const Tensor& dx, const Tensor& y, const Tensor& dy, int64_t rows,
                     int64_t cols) {
  if (rows == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(y.device().index));
  const cudaStream_t stream = compute_stream(y.device().index);
  dispatch_float(name, y.dtype(), [&]<typename T>() {
    softmax_backward_kernel<T, kKind><<<row_blocks(rows), kRowThreads, 0, stream>>>(
        static_cast<T*>(dx.data_ptr()), static_cast<const T*>(y.data_ptr()), static_cast<const T*>(dy.data_ptr()), rows,
        cols);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void softmax(const Tensor& y, const Tensor& x, int64_t rows, int64_t cols) {
  launch_forward<Kind::softmax>("softmax", y, x, rows, cols);
}

void log_softmax(const Tensor& y, const Tensor& x, int64_t rows, int64_t cols) {
  launch_forward<Kind::log_softmax>("log_softmax", y, x, rows, cols);
}

void softmax_backward(const Tensor& dx, const Tensor& y, const Tensor& dy, int64_t rows, int64_t cols) {
  launch_backward<Kind::softmax>("softmax_backward", dx, y, dy, rows, cols);
}

void log_softmax_backward(const Tensor& dx, const Tensor& y, const Tensor& dy, int64_t rows, int64_t cols) {
  launch_backward<Kind::log_softmax>("log_softmax_backward", dx, y, dy, rows, cols);
}

}  // namespace daedalus::cuda
