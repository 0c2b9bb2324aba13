// Allocator statistics and the CPU allocator.
#include "autograd/allocator.h"

#include <cstdlib>
#include <new>

#include "autograd/check.h"

namespace daedalus {

MemoryStats Allocator::stats() const { return {current_.load(), peak_.load(), allocations_.load()}; }

void Allocator::reset_peak() { peak_.store(current_.load()); }

void Allocator::record_allocate(size_t bytes) {
  const int64_t now = current_.fetch_add(int64_t(bytes)) + int64_t(bytes);
  allocations_.fetch_add(1);
  int64_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
}

void Allocator::record_deallocate(size_t bytes) { current_.fetch_sub(int64_t(bytes)); }

namespace {

class CpuAllocator final : public Allocator {
 public:
  static constexpr size_t kAlignment = 64;  // a cache line; AVX-512 loads never straddle one

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    void* ptr = std::aligned_alloc(kAlignment, rounded);
    if (ptr == nullptr)
      throw Error(fmt::format("cpu allocator: out of memory allocating {} bytes", bytes));
    record_allocate(bytes);
    return ptr;
  }
  void deallocate(void* ptr, size_t bytes) noexcept override {
    if (ptr == nullptr) return;
    std::free(ptr);
    record_deallocate(bytes);
  }
  Device device() const override { return Device::cpu(); }
};

}  // namespace

Allocator& allocator_for(Device device) {
  static CpuAllocator cpu;
  if (device.is_cpu()) return cpu;
  return cuda_allocator(device.index);
}

}  // namespace daedalus
