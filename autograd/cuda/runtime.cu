// CUDA runtime entry points: device count, copies between devices, the device allocator.
// synchronize() and device-to-host copy_bytes() are where deferred device input checks surface
// (autograd/cuda/device_checks.h).
#include <cuda_runtime.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/check.h"
#include "autograd/cuda/device_checks.h"
#include "autograd/device.h"

namespace daedalus {

bool cuda_built() { return true; }

int cuda_device_count() {
  int count = 0;
  // No driver or no device is "zero devices", not an error: CPU-only machines run CUDA builds.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return count;
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n) {
  if (n == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, n);
    return;
  }
  // Unified addressing: the runtime infers the direction from the pointers.
  DAEDALUS_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDefault));
  // The host waited for the device anyway: raise what the deferred input checks found.
  if (dst_device.is_cpu()) cuda::raise_device_check_errors(src_device.index, /*all_done=*/false);
}

void synchronize(Device device) {
  if (device.is_cpu()) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  DAEDALUS_CUDA_CHECK(cudaDeviceSynchronize());
  cuda::raise_device_check_errors(device.index, /*all_done=*/true);
}

namespace {

// cudaMalloc/cudaFree behind the shared block cache (every size cached, no cap: a failed
// cudaMalloc releases the cache and retries). Cached blocks are not freed at exit: the CUDA
// context may already be gone during static destruction, and process exit releases them.
class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int index) : Allocator(Policy{0, SIZE_MAX}), index_(index) {}
  Device device() const override { return Device::cuda(index_); }

 protected:
  void* raw_allocate(size_t bytes) override {
    DAEDALUS_CUDA_CHECK(cudaSetDevice(index_));
    void* ptr = nullptr;
    if (cudaMalloc(&ptr, bytes) != cudaSuccess) {
      cudaGetLastError();  // out of memory is not sticky; clear it and let the caller retry
      return nullptr;
    }
    return ptr;
  }
  void raw_free(void* ptr) noexcept override { cudaFree(ptr); }

 private:
  int index_;
};

}  // namespace

Allocator& cuda_allocator(int index) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<CudaAllocator>> allocators;
  std::lock_guard lock(mutex);
  const int count = cuda_device_count();
  DAEDALUS_CHECK(index >= 0 && index < count, "cuda:{} requested but {} CUDA device(s) are visible", index, count);
  if (allocators.empty()) allocators.resize(size_t(count));
  if (!allocators[size_t(index)]) allocators[size_t(index)] = std::make_unique<CudaAllocator>(index);
  return *allocators[size_t(index)];
}

}  // namespace daedalus
