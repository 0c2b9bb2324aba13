// Device names; host-side copies.
#include "autograd/device.h"

#include <charconv>
#include <cstring>

#include "autograd/check.h"

namespace daedalus {

std::string Device::str() const { return is_cpu() ? "cpu" : fmt::format("cuda:{}", index); }

Device parse_device(std::string_view name) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") return Device::cuda(0);
  if (name.starts_with("cuda:")) {
    int index = -1;
    auto digits = name.substr(5);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (ec == std::errc() && end == digits.data() + digits.size() && index >= 0) return Device::cuda(index);
  }
  DAEDALUS_FAIL("unknown device \"{}\" (expected cpu, cuda or cuda:N)", name);
}

}  // namespace daedalus
