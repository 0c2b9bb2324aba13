// The block cache and statistics shared by all allocators, and the CPU allocator.
#include "autograd/allocator.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "autograd/check.h"

namespace daedalus {

namespace {
constexpr size_t kSmallAlign = 512;      // size classes below 1 MiB
constexpr size_t kLargeAlign = 1 << 20;  // size classes from 1 MiB: at most 1 MiB of slack per block
size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }
}  // namespace

size_t Allocator::size_class(size_t bytes) const {
  return bytes < kLargeAlign ? round_up(bytes, kSmallAlign) : round_up(bytes, kLargeAlign);
}

void* Allocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t cls = size_class(bytes);
  void* ptr = nullptr;
  {
    std::lock_guard lock(mutex_);
    ++stats_.allocations;
    if (auto it = free_blocks_.find(cls); it != free_blocks_.end() && !it->second.empty()) {
      ptr = it->second.back();
      it->second.pop_back();
      stats_.cached_bytes -= int64_t(cls);
      ++stats_.cache_hits;
    }
  }
  if (ptr == nullptr) ptr = raw_allocate(cls);
  if (ptr == nullptr) {  // out of memory: give back what the cache holds and try once more
    empty_cache();
    ptr = raw_allocate(cls);
  }
  if (ptr == nullptr) {
    const MemoryStats s = stats();
    throw Error(fmt::format("{} allocator: out of memory allocating {} bytes ({} bytes in live tensors)",
                            device().str(), bytes, s.current_bytes));
  }
  std::lock_guard lock(mutex_);
  stats_.current_bytes += int64_t(bytes);
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
  return ptr;
}

void Allocator::deallocate(void* ptr, size_t bytes) noexcept {
  if (ptr == nullptr) return;
  const size_t cls = size_class(bytes);
  {
    std::lock_guard lock(mutex_);
    stats_.current_bytes -= int64_t(bytes);
    if (cls >= policy_.min_cached && size_t(stats_.cached_bytes) + cls <= policy_.max_cached) {
      free_blocks_[cls].push_back(ptr);
      stats_.cached_bytes += int64_t(cls);
      return;
    }
  }
  raw_free(ptr);
}

MemoryStats Allocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Allocator::reset_peak() {
  std::lock_guard lock(mutex_);
  stats_.peak_bytes = stats_.current_bytes;
}

void Allocator::empty_cache() {
  std::unordered_map<size_t, std::vector<void*>> blocks;
  {
    std::lock_guard lock(mutex_);
    blocks.swap(free_blocks_);
    stats_.cached_bytes = 0;
  }
  for (auto& [cls, list] : blocks)
    for (void* p : list) raw_free(p);
}

namespace {

class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;  // a cache line; AVX-512 loads never straddle one

  CpuAllocator() : Allocator(Policy{kLargeAlign, physical_memory() / 4}) {}
  ~CpuAllocator() override { empty_cache(); }
  Device device() const override { return Device::cpu(); }

 protected:
  void* raw_allocate(size_t bytes) override { return std::aligned_alloc(kAlignment, round_up(bytes, kAlignment)); }
  void raw_free(void* ptr) noexcept override { std::free(ptr); }

 private:
  static size_t physical_memory() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(1) << 32;
  }
};

}  // namespace

Allocator& allocator_for(Device device) {
  static CpuAllocator cpu;
  if (device.is_cpu()) return cpu;
  return cuda_allocator(device.index);
}

}  // namespace daedalus
