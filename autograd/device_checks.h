// Deferred input checks on a device: what the host remembers about each check it has queued.
//
// On CUDA, the index range checks (gather_rows, embedding) and cross-entropy's backward target
// check run as kernels that record the first violation in a small per-device error record instead
// of copying a verdict to the host on every call (autograd/cuda/device_checks.h). The host keeps a
// description of every check queued since it last looked, keyed by a slot number that the device
// records with the position; at the next point where the host waits for the device anyway (every
// synchronize(), every device-to-host copy_bytes(), so also the end of each trainer step) it reads
// the record and throws the InputError the CPU check gives for the same input.
//
// This file is the host half, with no CUDA in it: the table and the messages. The CPU checks build
// their messages here too, so the two devices cannot drift apart in wording.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace daedalus {

enum class DeviceCheckKind : uint8_t {
  index_range,   // every value in [0, limit)                      (kernels::check_index_range)
  target_range,  // every value in [0, limit) or == ignore_index   (cross-entropy targets)
};

// One queued check, as the message will need it (the checked tensor itself may be gone by then).
struct DeviceCheckDescription {
  DeviceCheckKind kind = DeviceCheckKind::index_range;
  std::string op;       // "gather_rows"
  std::string name;     // "index", "ids" (index_range)
  Shape shape;          // of the checked tensor: the position is printed in it
  int64_t limit = 0;    // valid values are [0, limit)
  int64_t ignore = 0;   // target_range: the ignore_index
  std::string context;  // "x [10, 4]" (index_range)
};

// "[1, 4]": the row-major position of flat element i of `shape`.
std::string position_str(const Shape& shape, int64_t i);

// The CPU checks' messages (without the " (file:line)" that DAEDALUS_FAIL appends):
//   index_range:  "<op>: <name>[1, 4] = 70000 is out of range [0, 32000) (<context>)"
//   target_range: "<op>: target 10 at row 1 is outside [0, V) with V = 10 (ignore_index is -100)"
std::string index_range_message(std::string_view op, std::string_view name, const Shape& shape, int64_t position,
                                int64_t value, int64_t limit, std::string_view context);
std::string target_range_message(std::string_view op, int64_t row, int64_t value, int64_t vocab, int64_t ignore);

// The message for a violation at flat `position` of the checked tensor; `value` is nullopt when the
// device could not record it (the message then says so instead of printing a number).
std::string device_check_message(const DeviceCheckDescription& check, int64_t position, std::optional<int64_t> value);

// The checks queued on one device since the host last inspected its error record, slot 0, 1, ...
// in queue order. Bounded: when it is full the caller inspects (synchronizing) before queuing more,
// so the slots a device can record always have a description here.
class PendingDeviceChecks {
 public:
  static constexpr uint32_t kCapacity = 1024;

  bool empty() const { return checks_.empty(); }
  bool full() const { return checks_.size() >= kCapacity; }
  size_t size() const { return checks_.size(); }
  // Returns the new check's slot; not to be called when full().
  uint32_t add(DeviceCheckDescription check);
  // nullptr for a slot that holds no check (a device record that does not belong to this table).
  const DeviceCheckDescription* find(uint64_t slot) const;
  void clear() { checks_.clear(); }

 private:
  std::vector<DeviceCheckDescription> checks_;
};

}  // namespace daedalus
