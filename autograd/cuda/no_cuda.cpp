// CUDA entry points for a build without CUDA: report it clearly instead of failing to link.
#include "autograd/allocator.h"
#include "autograd/check.h"
#include "autograd/device.h"

#include <cstring>

namespace daedalus {

namespace {
[[noreturn]] void built_without_cuda(const char* what) {
  throw Error(fmt::format("{}: built without CUDA (rebuild with the CUDA toolkit on the PATH)", what));
}
}  // namespace

bool cuda_built() { return false; }
int cuda_device_count() { return 0; }

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n) {
  if (!dst_device.is_cpu() || !src_device.is_cpu()) built_without_cuda("copy_bytes");
  if (n > 0) std::memcpy(dst, src, n);
}

void synchronize(Device device) {
  if (device.is_cuda()) built_without_cuda("synchronize");
}

DeviceTimer::DeviceTimer(Device device) : device_(device) { built_without_cuda("DeviceTimer"); }
DeviceTimer::~DeviceTimer() = default;
void DeviceTimer::start() { built_without_cuda("DeviceTimer::start"); }
void DeviceTimer::stop() { built_without_cuda("DeviceTimer::stop"); }
double DeviceTimer::elapsed_ms() { built_without_cuda("DeviceTimer::elapsed_ms"); }

Allocator& cuda_allocator(int) { built_without_cuda("cuda_allocator"); }

}  // namespace daedalus
