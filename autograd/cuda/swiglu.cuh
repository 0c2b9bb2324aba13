// SwiGLU's forward formula on the device, shared by the activation kernel (autograd/cuda/
// activation.cu) and the fused SwiGLU -> FP8 quantizer (fp8/cuda/quantize_cuda.cu), so that the
// two give the same h bit for bit. The CPU's float formula; expf may differ from the CPU's by an
// ulp or two.
#pragma once

#include <cuda_runtime.h>

namespace daedalus::cuda {

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }  // expf overflow -> 0

// silu(gate) * up = gate * sigmoid(gate) * up (products only: nothing to contract into an FMA).
__device__ __forceinline__ float swiglu_value(float gate, float up) { return gate * sigmoid(gate) * up; }

}  // namespace daedalus::cuda
