// The one allocator interface every tensor allocation goes through, with memory statistics.
//
// CPU: 64-byte aligned host memory. CUDA: device memory (plain cudaMalloc for now; a caching
// allocator can replace it behind this interface without touching callers).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "autograd/device.h"

namespace daedalus {

struct MemoryStats {
  int64_t current_bytes = 0;  // live allocations
  int64_t peak_bytes = 0;     // high-water mark since the last reset_peak()
  int64_t allocations = 0;    // number of allocate() calls
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;  // bytes may be 0; never returns null for bytes > 0
  virtual void deallocate(void* ptr, size_t bytes) noexcept = 0;
  virtual Device device() const = 0;

  MemoryStats stats() const;
  void reset_peak();

 protected:
  void record_allocate(size_t bytes);
  void record_deallocate(size_t bytes);

 private:
  std::atomic<int64_t> current_{0};
  std::atomic<int64_t> peak_{0};
  std::atomic<int64_t> allocations_{0};
};

// The allocator that owns memory on `device` (one per device, alive for the whole process).
Allocator& allocator_for(Device device);

// Implemented in autograd/cuda/ (or as a stub that throws when built without CUDA).
Allocator& cuda_allocator(int index);

}  // namespace daedalus
