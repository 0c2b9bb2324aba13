// CUDA runtime entry points: device count, the compute stream of each device, copies between
// devices, synchronization, event timing, the device allocator. synchronize() and device-to-host
// copy_bytes() are where deferred device input checks surface (autograd/cuda/device_checks.h).
#include <cuda_runtime.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/check.h"
#include "autograd/cuda/device_checks.h"
#include "autograd/cuda/stream.h"
#include "autograd/device.h"
#include "autograd/host_sync.h"

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

namespace cuda {

namespace {

// Device `index`'s entry of `streams`, created with `flags` on first use (the caller holds `mutex`).
cudaStream_t stream_of(std::vector<cudaStream_t>& streams, int index, unsigned flags) {
  if (streams.size() <= size_t(index)) streams.resize(size_t(index) + 1, nullptr);
  cudaStream_t& s = streams[size_t(index)];
  if (s == nullptr) {
    // A stream belongs to the device current at its creation: make it `index`, then restore.
    int current = 0;
    DAEDALUS_CUDA_CHECK(cudaGetDevice(&current));
    DAEDALUS_CUDA_CHECK(cudaSetDevice(index));
    DAEDALUS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, flags));
    DAEDALUS_CUDA_CHECK(cudaSetDevice(current));
  }
  return s;
}

}  // namespace

cudaStream_t compute_stream(int index) {
  static std::mutex mutex;
  static std::vector<cudaStream_t> streams;
  std::lock_guard lock(mutex);
  return stream_of(streams, index, cudaStreamDefault);  // blocking: orders with stream 0
}

cudaStream_t comm_stream(int index) {
  static std::mutex mutex;
  static std::vector<cudaStream_t> streams;
  std::lock_guard lock(mutex);
  return stream_of(streams, index, cudaStreamNonBlocking);  // orders only by events
}

}  // namespace cuda

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n) {
  if (n == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, n);
    return;
  }
  // Unified addressing: the runtime infers the direction from the pointers.
  if (dst_device.is_cuda() && src_device.is_cuda()) {
    if (dst_device == src_device) {  // queued in order on the device's stream; the caller need not wait
      DAEDALUS_CUDA_CHECK(cudaSetDevice(dst_device.index));
      DAEDALUS_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, cuda::compute_stream(dst_device.index)));
      return;
    }
    // Between two devices: after the source's queued work, and complete on return (the source
    // device's allocator may reuse `src` as soon as its owner releases it).
    count_host_sync("copy_bytes device-to-device (two devices)");
    DAEDALUS_CUDA_CHECK(cudaStreamSynchronize(cuda::compute_stream(src_device.index)));
  }
  // With the host (or between devices, the source's work done): on the CUDA side's stream, then wait.
  const int index = dst_device.is_cuda() ? dst_device.index : src_device.index;
  const cudaStream_t stream = cuda::compute_stream(index);
  DAEDALUS_CUDA_CHECK(cudaSetDevice(index));
  DAEDALUS_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, stream));
  count_host_sync(dst_device.is_cpu() ? "copy_bytes device-to-host" : "copy_bytes host-to-device");
  DAEDALUS_CUDA_CHECK(cudaStreamSynchronize(stream));
  // The host waited for the compute stream anyway, and every deferred input check runs on it: raise
  // what they found.
  if (dst_device.is_cpu()) cuda::raise_device_check_errors(src_device.index);
}

// The whole device, not only its compute stream: NCCL's internal streams and anything on the
// legacy default stream are waited for too (at the same cost when the compute stream is all there is).
void synchronize(Device device) {
  if (device.is_cpu()) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  count_host_sync("synchronize");
  DAEDALUS_CUDA_CHECK(cudaDeviceSynchronize());
  cuda::raise_device_check_errors(device.index);
}

DeviceTimer::DeviceTimer(Device device) : device_(device) {
  DAEDALUS_CHECK(device.is_cuda(), "DeviceTimer: times a CUDA device's stream, got {}", device.str());
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  DAEDALUS_CUDA_CHECK(cudaEventCreate(&start_));
  const cudaError_t created = cudaEventCreate(&stop_);
  if (created != cudaSuccess) cudaEventDestroy(start_);  // no destructor runs after a throwing constructor
  DAEDALUS_CUDA_CHECK(created);
}

DeviceTimer::~DeviceTimer() {
  // Best effort: an event still pending is released by the runtime once it completes.
  if (start_ != nullptr) cudaEventDestroy(start_);
  if (stop_ != nullptr) cudaEventDestroy(stop_);
}

void DeviceTimer::start() {
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device_.index));
  DAEDALUS_CUDA_CHECK(cudaEventRecord(start_, cuda::compute_stream(device_.index)));
}

void DeviceTimer::stop() {
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device_.index));
  DAEDALUS_CUDA_CHECK(cudaEventRecord(stop_, cuda::compute_stream(device_.index)));
}

double DeviceTimer::elapsed_ms() {
  count_host_sync("DeviceTimer::elapsed_ms");
  DAEDALUS_CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0.0f;
  DAEDALUS_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return double(ms);
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
  void raw_free(void* ptr) noexcept override {
    count_host_sync("cudaFree");  // cudaFree synchronizes the device before it returns
    cudaFree(ptr);
  }

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
