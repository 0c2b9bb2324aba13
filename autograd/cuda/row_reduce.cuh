// Device helpers shared by the row-wise CUDA kernels (rmsnorm, softmax, cross_entropy): block-wide
// reductions of one row, the device twin of round_from_double, and double scratch buffers.
//
// Row kernels run one block of kRowThreads threads per row. The reductions combine per-thread
// partials in a fixed tree (shuffles within a warp, then warp 0 over the warps), so a row's
// result is deterministic: it depends on the row's length, never on timing. The order differs from
// the CPU's left-to-right loop, so sums in double may differ from the CPU in their last bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "autograd/cuda/strided.cuh"
#include "autograd/dtype.h"

namespace daedalus::cuda {

inline constexpr int kRowThreads = 256;
static_assert(kRowThreads % 32 == 0 && kRowThreads <= 1024, "row kernels reduce over whole warps");

// Grid size for one block per row with a grid-stride loop over the rest.
inline unsigned row_blocks(int64_t rows) { return unsigned(rows < 65535 * 16 ? rows : 65535 * 16); }

// Maximum as the CPU kernels take it, std::max(m, x) = m < x ? x : m: a NaN x is never taken (the
// NaN then reaches the result through exp(NaN - m)), and the maximum of the non-NaN values does not
// depend on the order.
__device__ __forceinline__ float max_keep(float m, float x) { return m < x ? x : m; }

// Sum of v over the block (every thread passes its partial and receives the total). `smem` holds
// kRowThreads / 32 doubles; the call ends with a barrier, so it may be reused at once.
__device__ __forceinline__ double block_sum(double v, double* smem) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kRowThreads / 32 ? smem[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) smem[0] = v;
  }
  __syncthreads();
  const double total = smem[0];
  __syncthreads();
  return total;
}

// Maximum (max_keep) of m over the block; `smem` holds kRowThreads / 32 floats.
__device__ __forceinline__ float block_max(float m, float* smem) {
  for (int o = 16; o > 0; o >>= 1) m = max_keep(m, __shfl_down_sync(0xffffffffu, m, o));
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  if (lane == 0) smem[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < kRowThreads / 32 ? smem[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) m = max_keep(m, __shfl_down_sync(0xffffffffu, m, o));
    if (lane == 0) smem[0] = m;
  }
  __syncthreads();
  const float result = smem[0];
  __syncthreads();
  return result;
}

// The softmax statistics of one row x[0, cols), read through to_float: its max m (NaN-keeping) and
// Σ exp(x - m) summed in double; every thread of the block gets both. smax / ssum as for
// block_max / block_sum.
template <typename T>
__device__ __forceinline__ void row_max_sumexp(const T* x, int64_t cols, float* smax, double* ssum, float& m,
                                               double& sum) {
  m = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += kRowThreads) m = max_keep(m, to_float(x[c]));
  m = block_max(m, smax);
  sum = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += kRowThreads) sum += double(expf(to_float(x[c]) - m));
  sum = block_sum(sum, ssum);
}

// Device twin of round_from_double (autograd/dtype.h): a double rounded once to the storage type.
// For bf16, a float rounded to odd keeps the sticky bit, so the final nearest-even step is exact-once.
template <typename T>
__device__ __forceinline__ T round_once(double v);

template <>
__device__ __forceinline__ float round_once<float>(double v) {
  return __double2float_rn(v);
}

template <>
__device__ __forceinline__ bf16 round_once<bf16>(double v) {
  float f = __double2float_rn(v);
  if (isfinite(f) && double(f) != v) {
    if (fabs(double(f)) > fabs(v)) f = nextafterf(f, 0.0f);  // truncate toward zero
    f = codec::bits_float(codec::float_bits(f) | 1u);        // inexact: make it odd
  }
  return from_float<bf16>(f);
}

// Device scratch of n doubles (Tensor has no fp64 dtype: int64 storage of the same width, through
// the device's caching allocator; freed when the returned tensor goes).
inline Tensor double_scratch(int64_t n, Device device) { return Tensor::empty({n}, DType::i64, device); }
inline double* double_ptr(const Tensor& scratch) { return static_cast<double*>(scratch.data_ptr()); }

}  // namespace daedalus::cuda
