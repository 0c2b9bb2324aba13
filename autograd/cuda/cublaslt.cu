// The shared cuBLASLt and cuBLAS handles and workspaces per device (autograd/cuda/cublaslt.h).
#include "autograd/cuda/cublaslt.h"

#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/check.h"
#include "autograd/cuda/stream.h"

namespace daedalus::cuda {

CublasLt& cublaslt(int index) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<CublasLt>> states;  // stable addresses while the vector grows
  std::lock_guard lock(mutex);
  if (states.size() <= size_t(index)) states.resize(size_t(index) + 1);
  if (!states[size_t(index)]) states[size_t(index)] = std::make_unique<CublasLt>();
  CublasLt& s = *states[size_t(index)];
  if (s.handle == nullptr) {
    DAEDALUS_CUDA_CHECK(cudaSetDevice(index));
    DAEDALUS_CUBLAS_CHECK(cublasLtCreate(&s.handle));
    s.workspace = cuda_allocator(index).allocate(kCublasLtWorkspaceBytes);
  }
  return s;
}

Cublas& cublas(int index) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<Cublas>> states;  // stable addresses while the vector grows
  std::lock_guard lock(mutex);
  if (states.size() <= size_t(index)) states.resize(size_t(index) + 1);
  if (!states[size_t(index)]) states[size_t(index)] = std::make_unique<Cublas>();
  Cublas& s = *states[size_t(index)];
  if (s.handle == nullptr) {
    DAEDALUS_CUDA_CHECK(cudaSetDevice(index));
    cublasHandle_t handle = nullptr;
    DAEDALUS_CUBLAS_CHECK(cublasCreate(&handle));
    DAEDALUS_CUBLAS_CHECK(cublasSetStream(handle, compute_stream(index)));  // where every GEMM of the device runs
    DAEDALUS_CUBLAS_CHECK(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST));
    DAEDALUS_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    s.workspace = cuda_allocator(index).allocate(kCublasWorkspaceBytes);
    // After cublasSetStream, which resets the workspace to cuBLAS's own pool.
    DAEDALUS_CUBLAS_CHECK(cublasSetWorkspace(handle, s.workspace, kCublasWorkspaceBytes));
    s.handle = handle;  // published only once fully set up
  }
  return s;
}

}  // namespace daedalus::cuda
