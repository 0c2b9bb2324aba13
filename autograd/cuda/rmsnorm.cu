// CUDA twins of autograd/kernels/rmsnorm: RMSNorm forward and backward over the last dimension.
//
// Forward and dx: one block per row; the row's sums in double through block_sum (a fixed tree, so
// they may differ from the CPU's left-to-right sums in the last bits of the double).
// dweight: the CPU's exact order. Rows are split into the same min(rows, 64) blocks; one thread per
// (column, block) sums its rows in increasing order in double, then one thread per column adds the
// block partials in block order. No atomics, and the same bits as the CPU given the same rstd.
// Products that the CPU rounds separately are written with __dmul_rn / __dsub_rn / __dadd_rn so
// that nvcc does not contract them into FMAs.
#include <cuda_runtime.h>

#include <algorithm>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/row_reduce.cuh"
#include "autograd/cuda/stream.h"

namespace daedalus::cuda {

namespace {

// Must equal cpu::kRmsNormBlocks (autograd/kernels/rmsnorm.cpp): the dweight summation order.
constexpr int64_t kRmsNormBlocks = 64;

// x, y [rows, dim]; w fp32 [dim]; rstd fp32 [rows].
template <typename T>
__global__ void rmsnorm_kernel(T* y, float* rstd, const T* x, const float* w, double eps, int64_t rows, int64_t dim) {
  __shared__ double smem[kRowThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    double sum_sq = 0.0;
    for (int64_t d = threadIdx.x; d < dim; d += kRowThreads) {
      const double v = to_float(xr[d]);
      sum_sq = __dadd_rn(sum_sq, __dmul_rn(v, v));
    }
    sum_sq = block_sum(sum_sq, smem);
    const float s = float(1.0 / sqrt(sum_sq / double(dim) + eps));
    if (threadIdx.x == 0) rstd[r] = s;
    for (int64_t d = threadIdx.x; d < dim; d += kRowThreads) yr[d] = from_float<T>(to_float(xr[d]) * s * w[d]);
  }
}

// dx[r, d] = rstd w[d] dy[r, d] - x[r, d] rstd^3 / D sum_k dy[r, k] w[k] x[r, k]; one block per row.
template <typename T>
__global__ void rmsnorm_dx_kernel(T* dx, const T* dy, const T* x, const float* w, const float* rstd, int64_t rows,
                                  int64_t dim) {
  __shared__ double smem[kRowThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T* dxr = dx + r * dim;
    const double s = rstd[r];
    double dot = 0.0;
    for (int64_t d = threadIdx.x; d < dim; d += kRowThreads) {
      const double g = to_float(dyr[d]), v = to_float(xr[d]);
      dot = __dadd_rn(dot, __dmul_rn(__dmul_rn(g, double(w[d])), v));
    }
    dot = block_sum(dot, smem);
    const double c = s * s * s * dot / double(dim);
    for (int64_t d = threadIdx.x; d < dim; d += kRowThreads) {
      const double a = __dmul_rn(__dmul_rn(s, double(w[d])), double(to_float(dyr[d])));
      dxr[d] = round_once<T>(__dsub_rn(a, __dmul_rn(double(to_float(xr[d])), c)));
    }
  }
}

// partial[b, d] = sum over the rows of block b, in order, of dy[r, d] x[r, d] rstd[r].
// grid.x covers the columns, grid.y the blocks.
template <typename T>
__global__ void rmsnorm_dweight_partial_kernel(double* partial, const T* dy, const T* x, const float* rstd,
                                               int64_t rows, int64_t dim, int64_t blocks) {
  const int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t b = blockIdx.y;
  if (d >= dim) return;
  double acc = 0.0;
  for (int64_t r = rows * b / blocks; r < rows * (b + 1) / blocks; ++r) {
    const double g = to_float(dy[r * dim + d]), v = to_float(x[r * dim + d]);
    acc = __dadd_rn(acc, __dmul_rn(__dmul_rn(g, v), double(rstd[r])));
  }
  partial[b * dim + d] = acc;
}

// dweight[d] = sum over b, in order, of partial[b, d].
__global__ void rmsnorm_dweight_sum_kernel(float* dweight, const double* partial, int64_t dim, int64_t blocks) {
  for (int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; d < dim; d += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int64_t b = 0; b < blocks; ++b) sum = __dadd_rn(sum, partial[b * dim + d]);
    dweight[d] = float(sum);
  }
}

}  // namespace

void rmsnorm(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& weight, double eps, int64_t rows,
             int64_t dim) {
  if (rows == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(x.device().index));
  const cudaStream_t stream = compute_stream(x.device().index);
  dispatch_float("rmsnorm", x.dtype(), [&]<typename T>() {
    rmsnorm_kernel<T><<<row_blocks(rows), kRowThreads, 0, stream>>>(static_cast<T*>(y.data_ptr()), rstd.data<float>(),
                                                                    static_cast<const T*>(x.data_ptr()),
                                                                    weight.data<float>(), eps, rows, dim);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

void rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dy, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, int64_t rows, int64_t dim) {
  if (rows == 0 || dim == 0) return;  // dweight is already zeros
  DAEDALUS_CUDA_CHECK(cudaSetDevice(x.device().index));
  const cudaStream_t stream = compute_stream(x.device().index);
  const int64_t blocks = std::min(rows, kRmsNormBlocks);
  const Tensor partial = double_scratch(blocks * dim, x.device());
  dispatch_float("rmsnorm_backward", x.dtype(), [&]<typename T>() {
    const T* px = static_cast<const T*>(x.data_ptr());
    const T* pdy = static_cast<const T*>(dy.data_ptr());
    rmsnorm_dx_kernel<T><<<row_blocks(rows), kRowThreads, 0, stream>>>(
        static_cast<T*>(dx.data_ptr()), pdy, px, weight.data<float>(), rstd.data<float>(), rows, dim);
    DAEDALUS_CUDA_CHECK_LAUNCH();
    const dim3 grid(unsigned((dim + kThreads - 1) / kThreads), unsigned(blocks));
    rmsnorm_dweight_partial_kernel<T>
        <<<grid, kThreads, 0, stream>>>(double_ptr(partial), pdy, px, rstd.data<float>(), rows, dim, blocks);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
  rmsnorm_dweight_sum_kernel<<<blocks_for(dim), kThreads, 0, stream>>>(dweight.data<float>(), double_ptr(partial), dim,
                                                                       blocks);
  DAEDALUS_CUDA_CHECK_LAUNCH();
}

}  // namespace daedalus::cuda
