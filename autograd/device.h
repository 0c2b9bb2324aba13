// Where a tensor's storage lives: the host (cpu) or one CUDA device.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace daedalus {

enum class DeviceType : uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;

  static Device cpu() { return {DeviceType::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::cuda, index}; }
  bool is_cpu() const { return type == DeviceType::cpu; }
  bool is_cuda() const { return type == DeviceType::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

Device parse_device(std::string_view name);  // "cpu", "cuda", "cuda:N"; InputError otherwise

// CUDA runtime entry points. Without CUDA at build time, cuda_built() is false,
// cuda_device_count() is 0 and everything else throws "built without CUDA".
bool cuda_built();
int cuda_device_count();
// Copies n bytes between any two devices (host<->device, device<->device, host<->host).
// A device-to-host copy also raises (InputError) what the deferred device input checks have
// found so far (autograd/device_checks.h).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n);
// Blocks until all work queued on the device is done (a no-op on the CPU); then raises
// (InputError) any violation the deferred device input checks recorded.
void synchronize(Device device);

}  // namespace daedalus
