// CUDA twins of autograd/kernels/copy: strided copy with dtype conversion, fill.
#include <cuda_runtime.h>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"

namespace daedalus::cuda {

namespace {

template <typename D, typename S>
__global__ void copy_kernel(D* dst, Layout dl, const S* src, Layout sl, int64_t n, Fp8Overflow overflow) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[element_offset(dl, i)] = convert_element<D>(src[element_offset(sl, i)], overflow);
}

// Contiguous, aligned operands: N elements per thread with vector accesses, N = 16 bytes of the
// wider type; then a scalar tail.
template <typename D, typename S>
__global__ void copy_packed_kernel(D* dst, const S* src, int64_t n, Fp8Overflow overflow) {
  constexpr int N = 16 / int(sizeof(D) > sizeof(S) ? sizeof(D) : sizeof(S));
  const int64_t packs = n / N, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t p = first; p < packs; p += stride) {
    const Pack<S, N> in = reinterpret_cast<const Pack<S, N>*>(src)[p];
    Pack<D, N> out;
#pragma unroll
    for (int k = 0; k < N; ++k) out.v[k] = convert_element<D>(in.v[k], overflow);
    reinterpret_cast<Pack<D, N>*>(dst)[p] = out;
  }
  for (int64_t i = packs * N + first; i < n; i += stride) dst[i] = convert_element<D>(src[i], overflow);
}

template <typename T>
__global__ void fill_kernel(T* dst, Layout dl, int64_t n, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[element_offset(dl, i)] = value;
}

}  // namespace

void copy(const Tensor& dst, const Tensor& src, Fp8Overflow overflow) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(dst.device().index));
  const cudaStream_t stream = compute_stream(dst.device().index);
  dispatch_all("copy", dst.dtype(), [&]<typename D>() {
    dispatch_all("copy", src.dtype(), [&]<typename S>() {
      constexpr int64_t N = 16 / int64_t(sizeof(D) > sizeof(S) ? sizeof(D) : sizeof(S));
      D* out = static_cast<D*>(dst.data_ptr());
      const S* in = static_cast<const S*>(src.data_ptr());
      if (packable({&dst}, N * sizeof(D)) && packable({&src}, N * sizeof(S))) {
        copy_packed_kernel<D, S><<<blocks_for(n / N + 1), kThreads, 0, stream>>>(out, in, n, overflow);
      } else {
        copy_kernel<D, S><<<blocks_for(n), kThreads, 0, stream>>>(out, layout_of(dst), in, layout_of(src), n, overflow);
      }
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

void fill(const Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(dst.device().index));
  const cudaStream_t stream = compute_stream(dst.device().index);
  dispatch_all("fill", dst.dtype(), [&]<typename T>() {
    fill_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<T*>(dst.data_ptr()), layout_of(dst), n,
                                                           element_from_double<T>(value));
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace daedalus::cuda
