// The cuBLASLt state every CUDA GEMM shares: one handle and one workspace per device, created on
// first use and kept for the process (the CUDA context may be gone during static destruction, so
// they are never destroyed). All GEMMs of a device run on its one compute stream
// (autograd/cuda/stream.h), which serializes their use of the one workspace.
#pragma once

#include <cublasLt.h>

#include <cstddef>

namespace daedalus::cuda {

inline constexpr size_t kCublasLtWorkspaceBytes = size_t(32) << 20;

struct CublasLt {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;  // kCublasLtWorkspaceBytes of device memory
};

// The state of CUDA device `index` (thread-safe).
CublasLt& cublaslt(int index);

}  // namespace daedalus::cuda
