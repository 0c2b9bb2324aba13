// Where a tensor's storage lives: the host (cpu) or one CUDA device.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

struct CUevent_st;  // cudaEvent_t is CUevent_st* (cuda_runtime.h stays out of this header)

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
// All work of a CUDA device runs in order on its one compute stream (autograd/cuda/stream.h).
bool cuda_built();
int cuda_device_count();
// Copies n bytes between any two devices (host<->device, device<->device, host<->host), in order
// after the work already queued on the devices involved. When a host or a second device takes part,
// the bytes are there when it returns; a copy within one CUDA device is only queued on its stream
// (later work on the device sees it).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n);
// Blocks until all work queued on the device is done (a no-op on the CPU).
void synchronize(Device device);

// GPU time of the work a CUDA device runs between start() and stop(): two CUDA events recorded on
// its compute stream, so the host does not wait at start() or stop(). elapsed_ms() waits for the
// stop event and returns the time between the events (resolution about 0.5 us): the span of the
// stream from the first to the last piece of work queued in between, including any time the GPU sat
// idle waiting for the host, but not the host's time before the first launch or after the last.
class DeviceTimer {
 public:
  explicit DeviceTimer(Device device);  // a CUDA device; throws "built without CUDA" in a CPU build
  ~DeviceTimer();
  DeviceTimer(const DeviceTimer&) = delete;
  DeviceTimer& operator=(const DeviceTimer&) = delete;

  void start();
  void stop();
  double elapsed_ms();  // after start() and stop()

 private:
  Device device_;
  CUevent_st* start_ = nullptr;
  CUevent_st* stop_ = nullptr;
};

}  // namespace daedalus
