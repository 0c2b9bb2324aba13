// The cuBLAS state every CUDA GEMM shares: per device, one cuBLASLt handle (every single and
// batched GEMM, autograd/cuda/gemm.cu and fp8/cuda) and one cuBLAS handle (the grouped GEMM,
// cublasGemmGroupedBatchedEx, which only the cuBLAS API has: autograd/cuda/grouped_gemm.cu), each
// with its own workspace, created on first use and kept for the process (the CUDA context may be
// gone during static destruction, so they are never destroyed). All GEMMs of a device run on its
// one compute stream (autograd/cuda/stream.h), which serializes their use of each workspace.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstddef>

namespace daedalus::cuda {

inline constexpr size_t kCublasLtWorkspaceBytes = size_t(32) << 20;

struct CublasLt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;  // kCublasLtWorkspaceBytes of device memory
};

// The state of CUDA device `index` (thread-safe).
CublasLt& cublaslt(int index);

inline constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;  // cuBLAS's recommendation for Hopper

// A cuBLAS handle on the device's compute stream, host pointer mode (alpha and beta arrays on the
// host), CUBLAS_DEFAULT_MATH (no TF32 unless a call's compute type asks for it), with
// kCublasWorkspaceBytes of workspace from the caching allocator.
struct Cublas {
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// The cuBLAS handle of CUDA device `index` (thread-safe).
Cublas& cublas(int index);

}  // namespace daedalus::cuda
