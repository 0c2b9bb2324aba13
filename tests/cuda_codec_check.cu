// The exhaustive comparison behind Fp8CudaCodec.HardwareConvertEqualsIntegerEncoderForEveryFloat.
#include <cuda_runtime.h>

#include "autograd/check.h"
#include "autograd/dtype_codec.h"
#include "tests/cuda_codec_check.h"

namespace daedalus::testing {

namespace {

// Grid-stride over all 2^32 inputs; per thread a local count, then one atomic per thread.
template <bool kE5m2>
__global__ void compare_encoders_kernel(unsigned long long* mismatches, unsigned int* first) {
  unsigned long long local = 0;
  unsigned int local_first = 0xFFFFFFFFu;
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < (uint64_t(1) << 32); i += stride) {
    const float x = codec::bits_float(uint32_t(i));
    const uint8_t hw = kE5m2 ? codec::float_to_e5m2(x).bits : codec::float_to_e4m3(x).bits;
    const uint8_t ref = kE5m2 ? codec::float_to_e5m2_integer(x).bits : codec::float_to_e4m3_integer(x).bits;
    if (hw != ref) {
      ++local;
      local_first = min(local_first, uint32_t(i));
    }
  }
  if (local != 0) {
    atomicAdd(mismatches, local);
    atomicMin(first, local_first);
  }
}

// Both bytes of one input: out[0] the hardware convert's, out[1] the integer encoder's.
template <bool kE5m2>
__global__ void encode_one_kernel(const unsigned int* bits, uint8_t* out) {
  const float x = codec::bits_float(*bits);
  out[0] = kE5m2 ? codec::float_to_e5m2(x).bits : codec::float_to_e4m3(x).bits;
  out[1] = kE5m2 ? codec::float_to_e5m2_integer(x).bits : codec::float_to_e4m3_integer(x).bits;
}

}  // namespace

Fp8EncoderComparison compare_fp8_encoders_on_device(bool e5m2) {
  unsigned long long* count = nullptr;
  unsigned int* first = nullptr;
  uint8_t* bytes = nullptr;
  DAEDALUS_CUDA_CHECK(cudaMalloc(&count, sizeof *count));
  DAEDALUS_CUDA_CHECK(cudaMalloc(&first, sizeof *first));
  DAEDALUS_CUDA_CHECK(cudaMalloc(&bytes, 2));
  DAEDALUS_CUDA_CHECK(cudaMemset(count, 0, sizeof *count));
  DAEDALUS_CUDA_CHECK(cudaMemset(first, 0xFF, sizeof *first));
  if (e5m2) {
    compare_encoders_kernel<true><<<4096, 256>>>(count, first);
    encode_one_kernel<true><<<1, 1>>>(first, bytes);
  } else {
    compare_encoders_kernel<false><<<4096, 256>>>(count, first);
    encode_one_kernel<false><<<1, 1>>>(first, bytes);
  }
  DAEDALUS_CUDA_CHECK_LAUNCH();
  Fp8EncoderComparison out;
  unsigned long long n = 0;
  uint8_t both[2] = {0, 0};
  DAEDALUS_CUDA_CHECK(cudaMemcpy(&n, count, sizeof n, cudaMemcpyDeviceToHost));
  DAEDALUS_CUDA_CHECK(cudaMemcpy(&out.first, first, sizeof out.first, cudaMemcpyDeviceToHost));
  DAEDALUS_CUDA_CHECK(cudaMemcpy(both, bytes, 2, cudaMemcpyDeviceToHost));
  cudaFree(count);
  cudaFree(first);
  cudaFree(bytes);
  out.mismatches = n;
  out.hardware = both[0];
  out.integer = both[1];
  return out;
}

}  // namespace daedalus::testing
