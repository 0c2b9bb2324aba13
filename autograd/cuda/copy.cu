// CUDA twins of autograd/kernels/copy: strided copy with dtype conversion, fill.
#include <cuda_runtime.h>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/strided.cuh"

namespace daedalus::cuda {

namespace {

template <typename D, typename S>
__global__ void copy_kernel(D* dst, Layout dl, const S* src, Layout sl, int64_t n, Fp8Overflow overflow) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[element_offset(dl, i)] = convert_element<D>(src[element_offset(sl, i)], overflow);
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
  dispatch_all("copy", dst.dtype(), [&]<typename D>() {
    dispatch_all("copy", src.dtype(), [&]<typename S>() {
      copy_kernel<D, S><<<blocks_for(n), kThreads>>>(static_cast<D*>(dst.data_ptr()), layout_of(dst),
                                                      static_cast<const S*>(src.data_ptr()), layout_of(src), n,
                                                      overflow);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

void fill(const Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(dst.device().index));
  dispatch_all("fill", dst.dtype(), [&]<typename T>() {
    fill_kernel<T><<<blocks_for(n), kThreads>>>(static_cast<T*>(dst.data_ptr()), layout_of(dst), n,
                                                 element_from_double<T>(value));
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace daedalus::cuda
