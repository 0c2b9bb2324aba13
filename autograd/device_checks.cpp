// Deferred device checks, host half: the table of queued checks and the messages they produce.
#include "autograd/device_checks.h"

#include <fmt/format.h>

#include <utility>

#include "autograd/check.h"

namespace daedalus {

std::string position_str(const Shape& shape, int64_t i) {
  Shape pos(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    pos[d] = shape[d] > 0 ? i % shape[d] : 0;
    i = shape[d] > 0 ? i / shape[d] : 0;
  }
  return shape_str(pos);
}

std::string index_range_message(std::string_view op, std::string_view name, const Shape& shape, int64_t position,
                                int64_t value, int64_t limit, std::string_view context) {
  return fmt::format("{}: {}{} = {} is out of range [0, {}) ({})", op, name, position_str(shape, position), value,
                     limit, context);
}

std::string target_range_message(std::string_view op, int64_t row, int64_t value, int64_t vocab, int64_t ignore) {
  return fmt::format("{}: target {} at row {} is outside [0, V) with V = {} (ignore_index is {})", op, value, row,
                     vocab, ignore);
}

std::string device_check_message(const DeviceCheckDescription& check, int64_t position, std::optional<int64_t> value) {
  if (!value) {  // the position is known; the value was not recorded
    return check.kind == DeviceCheckKind::index_range
               ? fmt::format("{}: {}{} is out of range [0, {}) ({})", check.op, check.name,
                             position_str(check.shape, position), check.limit, check.context)
               : fmt::format("{}: the target at row {} is outside [0, V) with V = {} (ignore_index is {})", check.op,
                             position, check.limit, check.ignore);
  }
  return check.kind == DeviceCheckKind::index_range
             ? index_range_message(check.op, check.name, check.shape, position, *value, check.limit, check.context)
             : target_range_message(check.op, position, *value, check.limit, check.ignore);
}

uint32_t PendingDeviceChecks::add(DeviceCheckDescription check) {
  DAEDALUS_ASSERT(!full());
  checks_.push_back(std::move(check));
  return uint32_t(checks_.size() - 1);
}

const DeviceCheckDescription* PendingDeviceChecks::find(uint64_t slot) const {
  return slot < checks_.size() ? &checks_[size_t(slot)] : nullptr;
}

}  // namespace daedalus
