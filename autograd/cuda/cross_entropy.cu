// CUDA twins of autograd/kernels/cross_entropy: fused log-softmax + NLL with ignore_index.
//
// Forward: one block per row computes the row maximum, sum_v exp(x - m) in double (fixed-tree
// block reduction), lse and the row's loss (double, 0 for ignored rows) into a scratch buffer; a
// second one-block kernel adds the row losses in a fixed order (each thread a strided subset in
// increasing row order, then the block tree) and divides by `valid`. Deterministic, but not the
// CPU's left-to-right order: the double total may differ in its last bits before the fp32 rounding.
// Backward: elementwise over [rows, vocab], the CPU's expression rounded once from double.
#include <cuda_runtime.h>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/row_reduce.cuh"
#include "autograd/cuda/stream.h"

namespace daedalus::cuda {

namespace {

// logits [rows, vocab] contiguous; targets [rows]; lse fp32 [rows]; row_loss double [rows].
template <typename T, typename I>
__global__ void cross_entropy_rows_kernel(float* lse, double* row_loss, const T* logits, const I* targets,
                                          int64_t ignore_index, int64_t rows, int64_t vocab) {
  __shared__ float smax[kRowThreads / 32];
  __shared__ double ssum[kRowThreads / 32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = logits + r * vocab;
    float m;
    double sum;
    row_max_sumexp(xr, vocab, smax, ssum, m, sum);
    if (threadIdx.x == 0) {
      const double row_lse = double(m) + log(sum);
      lse[r] = float(row_lse);
      const int64_t t = int64_t(targets[r]);
      row_loss[r] = t != ignore_index ? row_lse - double(to_float(xr[t])) : 0.0;
    }
  }
}

// loss = sum_r row_loss[r] / valid (0 when valid == 0); launched as one block of kRowThreads.
__global__ void cross_entropy_total_kernel(float* loss, const double* row_loss, int64_t rows, int64_t valid) {
  __shared__ double ssum[kRowThreads / 32];
  double acc = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += kRowThreads) acc += row_loss[r];
  acc = block_sum(acc, ssum);
  if (threadIdx.x == 0) *loss = valid > 0 ? float(acc / double(valid)) : 0.0f;
}

// dlogits[r, v] = scale (exp(x - lse[r]) - [v == t]), zero for ignored rows (or when scale is 0
// because valid == 0).
template <typename T, typename I>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* logits, const I* targets, const float* lse,
                                              double scale, bool all_zero, int64_t ignore_index, int64_t rows,
                                              int64_t vocab) {
  const int64_t n = rows * vocab;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / vocab, v = k % vocab;
    const int64_t t = int64_t(targets[r]);
    if (all_zero || t == ignore_index) {
      dlogits[k] = from_float<T>(0.0f);
      continue;
    }
    const double p = double(expf(to_float(logits[k]) - lse[r]));
    dlogits[k] = round_once<T>(scale * (v == t ? p - 1.0 : p));
  }
}

}  // namespace

void cross_entropy(const Tensor& loss, const Tensor& lse, const Tensor& logits, const Tensor& targets,
                   int64_t ignore_index, int64_t valid, int64_t rows, int64_t vocab) {
  DAEDALUS_CUDA_CHECK(cudaSetDevice(logits.device().index));
  const cudaStream_t stream = compute_stream(logits.device().index);
  const Tensor row_loss = double_scratch(rows, logits.device());
  if (rows > 0) {
    dispatch_float("cross_entropy", logits.dtype(), [&]<typename T>() {
      dispatch_index("cross_entropy", targets.dtype(), [&]<typename I>() {
        cross_entropy_rows_kernel<T, I><<<row_blocks(rows), kRowThreads, 0, stream>>>(
            lse.data<float>(), double_ptr(row_loss), static_cast<const T*>(logits.data_ptr()),
            static_cast<const I*>(targets.data_ptr()), ignore_index, rows, vocab);
        DAEDALUS_CUDA_CHECK_LAUNCH();
      });
    });
  }
  // Also for rows == 0: the loss is then 0.
  cross_entropy_total_kernel<<<1, kRowThreads, 0, stream>>>(loss.data<float>(), double_ptr(row_loss), rows, valid);
  DAEDALUS_CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            double dloss, int64_t ignore_index, int64_t valid, int64_t rows, int64_t vocab) {
  const int64_t n = rows * vocab;
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(logits.device().index));
  const cudaStream_t stream = compute_stream(logits.device().index);
  const double scale = valid > 0 ? dloss / double(valid) : 0.0;
  dispatch_float("cross_entropy_backward", logits.dtype(), [&]<typename T>() {
    dispatch_index("cross_entropy_backward", targets.dtype(), [&]<typename I>() {
      cross_entropy_backward_kernel<T, I><<<blocks_for(n), kThreads, 0, stream>>>(
          static_cast<T*>(dlogits.data_ptr()), static_cast<const T*>(logits.data_ptr()),
          static_cast<const I*>(targets.data_ptr()), lse.data<float>(), scale,
          /*all_zero=*/valid == 0, ignore_index, rows, vocab);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace daedalus::cuda
