// Torch-style printing: nested brackets, "..." past edge_items per dimension, then dtype, shape, device.
#include <ostream>

#include "autograd/tensor.h"

namespace daedalus {

namespace {

void print_dim(std::string& out, const std::vector<double>& values, const Shape& shape, const Shape& strides, size_t d,
               int64_t base, int edge_items, size_t indent) {
  out += '[';
  const int64_t n = shape[d];
  const bool summarize = n > 2 * edge_items;
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && i == edge_items) {
      out += d + 1 == shape.size() ? "..., " : "...,\n" + std::string(indent + d + 1, ' ');
      i = n - edge_items - 1;
      continue;
    }
    const int64_t offset = base + i * strides[d];
    if (d + 1 == shape.size()) {
      out += fmt::format("{:.6g}", values[size_t(offset)]);
    } else {
      print_dim(out, values, shape, strides, d + 1, offset, edge_items, indent);
    }
    if (i + 1 < n) out += d + 1 == shape.size() ? ", " : ",\n" + std::string(indent + d + 1, ' ');
  }
  out += ']';
}

}  // namespace

std::string to_string(const Tensor& t, int edge_items) {
  if (!t.defined()) return "tensor(undefined)";
  const std::vector<double> values = t.to_doubles();
  std::string body;
  if (t.dim() == 0) {
    body = fmt::format("{:.6g}", values[0]);
  } else {
    print_dim(body, values, t.shape(), contiguous_strides(t.shape()), 0, 0, edge_items, 7);
  }
  return fmt::format("tensor({}, dtype={}, shape={}, device={})", body, dtype_name(t.dtype()), shape_str(t.shape()),
                     t.device().str());
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << to_string(t); }

}  // namespace daedalus
