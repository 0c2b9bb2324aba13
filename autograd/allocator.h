// The one allocator interface every tensor allocation goes through: a cache of freed blocks in
// front of the device's raw allocation, and memory statistics.
//
// Freed blocks are kept by size class and handed out again to requests of the same class, so a
// training loop that allocates the same shapes every step stops paying for malloc/first-touch
// page faults (CPU) or cudaMalloc/cudaFree synchronizations (CUDA) after its first step. When a
// raw allocation fails, the cache is released and the allocation retried once.
// CPU: 64-byte aligned host memory, blocks of 1 MiB and more cached (smaller ones are malloc's
// business), at most a quarter of physical memory held. CUDA: every block cached; blocks are
// reused in stream order on the device's one compute stream (autograd/cuda/stream.h: kernels,
// copies and NCCL collectives alike), so reuse needs no event.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "autograd/device.h"

namespace daedalus {

struct MemoryStats {
  int64_t current_bytes = 0;  // bytes held by live tensors (requested sizes)
  int64_t peak_bytes = 0;     // high-water mark of current_bytes since the last reset_peak()
  int64_t cached_bytes = 0;   // freed blocks held for reuse (not counted in current_bytes)
  int64_t allocations = 0;    // allocate() calls
  int64_t cache_hits = 0;     // allocate() calls served from the cache
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  void* allocate(size_t bytes);  // null for 0 bytes; throws Error when memory runs out
  void deallocate(void* ptr, size_t bytes) noexcept;
  virtual Device device() const = 0;

  MemoryStats stats() const;
  void reset_peak();
  void empty_cache();  // returns every cached block to the system

 protected:
  struct Policy {
    size_t min_cached;  // blocks below this size bypass the cache
    size_t max_cached;  // the cache never holds more than this many bytes
  };
  explicit Allocator(Policy policy) : policy_(policy) {}
  virtual void* raw_allocate(size_t bytes) = 0;  // null on failure
  virtual void raw_free(void* ptr) noexcept = 0;

 private:
  size_t size_class(size_t bytes) const;

  Policy policy_;
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // size class -> cached blocks
  MemoryStats stats_;
};

// The allocator that owns memory on `device` (one per device, alive for the whole process).
Allocator& allocator_for(Device device);

// Implemented in autograd/cuda/ (or as a stub that throws when built without CUDA).
Allocator& cuda_allocator(int index);

}  // namespace daedalus
