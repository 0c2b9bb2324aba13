// Element-range reads and writes of HDF5 datasets: a ZeRO-1 rank's shard of a tensor is a few
// ranges of its row-major flattening (checkpoint_h5.h).
#include <algorithm>

#include "autograd/check.h"
#include "train/checkpoint_h5.h"

namespace daedalus::train::h5 {

namespace {

using Range = std::pair<int64_t, int64_t>;

// Adds to `space` (OR) the boxes covering flat elements [lo, hi) of the sub-array at `prefix` (the
// coordinates of dimensions < d fixed), shape[d:] being that sub-array's shape.
void select_range(hid_t space, const Shape& shape, std::vector<hsize_t>& prefix, size_t d, int64_t lo, int64_t hi) {
  if (lo >= hi) return;
  int64_t inner = 1;  // elements of one index of dimension d
  for (size_t k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  auto box = [&](int64_t first, int64_t count) {  // indices [first, first + count) of dimension d, inner whole
    std::vector<hsize_t> start(shape.size(), 0), size(shape.begin(), shape.end());
    for (size_t k = 0; k < d; ++k) {
      start[k] = prefix[k];
      size[k] = 1;
    }
    start[d] = hsize_t(first);
    size[d] = hsize_t(count);
    DAEDALUS_HDF5_CHECK(H5Sselect_hyperslab(space, H5S_SELECT_OR, start.data(), nullptr, size.data(), nullptr));
  };
  const int64_t first_whole = (lo + inner - 1) / inner, end_whole = hi / inner;
  if (first_whole > end_whole) {  // inside one index of dimension d
    prefix[d] = hsize_t(lo / inner);
    select_range(space, shape, prefix, d + 1, lo % inner, lo % inner + (hi - lo));
    return;
  }
  if (lo < first_whole * inner) {  // the tail of index first_whole - 1
    prefix[d] = hsize_t(first_whole - 1);
    select_range(space, shape, prefix, d + 1, lo - (first_whole - 1) * inner, inner);
  }
  if (end_whole > first_whole) box(first_whole, end_whole - first_whole);
  if (hi > end_whole * inner) {  // the head of index end_whole
    prefix[d] = hsize_t(end_whole);
    select_range(space, shape, prefix, d + 1, 0, hi - end_whole * inner);
  }
}

// `space` selecting exactly `ranges`; returns their element count.
int64_t select(hid_t space, const Shape& shape, const std::vector<Range>& ranges) {
  DAEDALUS_HDF5_CHECK(H5Sselect_none(space));
  const int64_t numel = shape_numel(shape);
  int64_t total = 0, last = 0;
  for (const auto& [b, e] : ranges) {
    DAEDALUS_CHECK(b >= last && b <= e && e <= numel, "element range [{}, {}) is out of order or outside {}", b, e,
                   shape_str(shape));
    std::vector<hsize_t> prefix(shape.size(), 0);
    select_range(space, shape, prefix, 0, b, e);
    total += e - b;
    last = e;
  }
  return total;
}

}  // namespace

void write_elements(hid_t dataset, hid_t xfer, const Shape& shape, const std::vector<Range>& ranges,
                    const float* data) {
  Handle file_space(H5Dget_space(dataset), H5Sclose);
  DAEDALUS_HDF5_CHECK(file_space.get());
  const int64_t count = select(file_space.get(), shape, ranges);
  const hsize_t dims[1] = {hsize_t(std::max<int64_t>(count, 1))};
  Handle mem(H5Screate_simple(1, dims, nullptr), H5Sclose);
  DAEDALUS_HDF5_CHECK(mem.get());
  static const float dummy = 0;  // H5Dwrite wants a buffer even when nothing is selected
  if (count == 0) {
    DAEDALUS_HDF5_CHECK(H5Sselect_none(mem.get()));
    data = &dummy;
  }
  if (H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem.get(), file_space.get(), xfer, data) < 0)
    throw Error("H5Dwrite (element ranges): " + take_error_stack());
}

bool read_elements(hid_t dataset, const Shape& shape, const std::vector<Range>& ranges, float* out,
                   std::string* error) {
  Handle file_space(H5Dget_space(dataset), H5Sclose);
  DAEDALUS_HDF5_CHECK(file_space.get());
  const int64_t count = select(file_space.get(), shape, ranges);
  if (count == 0) return true;
  const hsize_t dims[1] = {hsize_t(count)};
  Handle mem(H5Screate_simple(1, dims, nullptr), H5Sclose);
  DAEDALUS_HDF5_CHECK(mem.get());
  if (H5Dread(dataset, H5T_NATIVE_FLOAT, mem.get(), file_space.get(), H5P_DEFAULT, out) >= 0) return true;
  if (error != nullptr) *error = take_error_stack();
  return false;
}

std::vector<Range> zero_file_ranges(const model::Parameter& p, const std::vector<Range>& owned) {
  const int64_t shift = p.expert ? p.expert_offset * row_elems(p.global_shape()) : 0;
  std::vector<Range> out;
  for (const auto& [b, e] : owned) out.emplace_back(b + shift, e + shift);
  return out;
}

std::vector<std::vector<Range>> split_ranges(const std::vector<Range>& ranges, int64_t calls) {
  DAEDALUS_CHECK(calls >= 1, "split_ranges: {} calls", calls);
  int64_t total = 0;
  for (const auto& [b, e] : ranges) total += e - b;
  const int64_t per = std::max<int64_t>(1, (total + calls - 1) / calls);
  std::vector<std::vector<Range>> groups(static_cast<size_t>(calls));
  int64_t at = 0;  // memory position of the current range's start
  for (const auto& [b, e] : ranges) {
    for (int64_t x = b; x < e;) {
      const int64_t j = (at + (x - b)) / per;
      const int64_t end = std::min(e, x + (per * (j + 1) - (at + (x - b))));
      groups[size_t(j)].emplace_back(x, end);
      x = end;
    }
    at += e - b;
  }
  return groups;
}

}  // namespace daedalus::train::h5
