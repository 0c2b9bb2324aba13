// Deferred input checks on a CUDA device (the host half is autograd/device_checks.h).
//
// Each device has one error record in device memory: {key, value, value_key}. A check queued by
// enqueue_range_check gets the next slot of the device's PendingDeviceChecks table and runs two
// kernels on the device, without the host waiting for either:
//   1. every element that breaks the rule does atomicMin(key, slot << 48 | flat position): the
//      smallest key is the earliest check (in queue order) that failed, at its first offending
//      element in row-major order, whatever the thread schedule;
//   2. one thread: if the key now names this check's slot, it stores the element's value (the
//      tensor is still alive: stream order) and copies the key into value_key.
// raise_device_check_errors reads the record at points where the host waits for the device anyway
// (synchronize(), device-to-host copy_bytes()) and, if a check failed, throws the InputError the
// CPU check gives for the same input, after resetting the record and the table so that later
// calls succeed. Without a violation the record is never written: a check costs two small kernel
// launches and no host synchronization. The ops that consume checked indices skip out-of-range
// elements on the device, so nothing is read or written out of bounds before the error surfaces.
#pragma once

#include <cstdint>
#include <optional>

#include "autograd/device_checks.h"
#include "autograd/tensor.h"

namespace daedalus::cuda {

// values int32|int64, any shape and strides, on a CUDA device: queues the check "every element in
// [0, limit), or == *ignore when ignore is set". The description's shape is set from `values`.
// When the device's table is full, it first synchronizes the device (raising any error found).
void enqueue_range_check(const Tensor& values, int64_t limit, std::optional<int64_t> ignore,
                         DeviceCheckDescription check);

// Reads device `index`'s error record if checks are pending — on the compute stream, after every
// check queued there (all of them are) — and throws InputError for a violation. Either way the
// pending table is emptied: a clean record means every pending check passed.
void raise_device_check_errors(int index);

}  // namespace daedalus::cuda
