// CUDA twin of autograd/kernels/rope: rotary position embedding, forward and inverse (backward),
// interleaved and rotate-half layouts. The cos/sin table is the CPU's own (built on the host in
// double, rounded to float, uploaded by the dispatcher), and each output is the same float
// expression; __fmul_rn keeps nvcc from contracting a*c - b*s into an FMA, so results match the
// CPU bit for bit.
#include <cuda_runtime.h>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"

namespace daedalus::cuda {

namespace {

// x, y contiguous [rows = B*T*H, dim]; table [T, half] cos then [T, half] sin. One thread per pair:
// pair j of row r is (x[r, j * step], x[r, j * step + second]).
template <typename T>
__global__ void rope_kernel(T* y, const T* x, const float* table, int64_t pairs, int64_t seq, int64_t heads,
                            int64_t half, int64_t step, int64_t second, float sign) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = p / half, j = p % half;
    const int64_t t = (r / heads) % seq;
    const float c = table[t * half + j];
    const float sn = sign * table[(seq + t) * half + j];
    const int64_t i0 = r * 2 * half + j * step, i1 = i0 + second;
    const float a = to_float(x[i0]), b = to_float(x[i1]);
    y[i0] = from_float<T>(__fmul_rn(a, c) - __fmul_rn(b, sn));
    y[i1] = from_float<T>(__fmul_rn(a, sn) + __fmul_rn(b, c));
  }
}

}  // namespace

void rope(const Tensor& y, const Tensor& x, const Tensor& cos_sin, int64_t seq, int64_t heads, int64_t dim,
          kernels::RopeLayout layout, bool inverse) {
  const int64_t half = dim / 2;
  const int64_t pairs = x.numel() / 2;
  if (pairs == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(x.device().index));
  const cudaStream_t stream = compute_stream(x.device().index);
  const bool interleaved = layout == kernels::RopeLayout::interleaved;
  dispatch_float("rope", x.dtype(), [&]<typename T>() {
    rope_kernel<T>
        <<<blocks_for(pairs), kThreads, 0, stream>>>(static_cast<T*>(y.data_ptr()), static_cast<const T*>(x.data_ptr()),
                                                     cos_sin.data<float>(), pairs, seq, heads, half,
                                                     /*step=*/interleaved ? 2 : 1,
                                                     /*second=*/interleaved ? 1 : half, inverse ? -1.0f : 1.0f);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace daedalus::cuda
