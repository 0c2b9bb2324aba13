// The shared cuBLASLt handle and workspace per device (autograd/cuda/cublaslt.h).
#include "autograd/cuda/cublaslt.h"

#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/check.h"

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

}  // namespace daedalus::cuda
