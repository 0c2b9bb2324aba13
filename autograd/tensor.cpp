// Tensor construction, views and copies.
#include "autograd/tensor.h"

#include <algorithm>
#include <numeric>

#include "autograd/generator.h"
#include "autograd/kernels/copy.h"

namespace daedalus {

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

int64_t shape_numel(const Shape& shape) {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device), allocator_(&allocator_for(device)) {
  data_ = allocator_->allocate(nbytes);
}

Storage::~Storage() { allocator_->deallocate(data_, nbytes_); }

Tensor::Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype)
    : storage_(std::move(storage)),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      offset_(offset),
      dtype_(dtype) {}

// ---- creation ------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t s : shape) DAEDALUS_CHECK(s >= 0, "Tensor::empty: negative dimension in shape {}", shape_str(shape));
  auto storage = std::make_shared<Storage>(size_t(shape_numel(shape)) * dtype_size(dtype), device);
  return Tensor(std::move(storage), shape, contiguous_strides(shape), 0, dtype);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  std::vector<double> values(size_t(std::max<int64_t>(n, 0)));
  std::iota(values.begin(), values.end(), 0.0);
  return from_values(values, {int64_t(values.size())}, dtype, device);
}

Tensor Tensor::from_values(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  DAEDALUS_CHECK(int64_t(values.size()) == shape_numel(shape), "Tensor::from_values: {} values for shape {}",
                 values.size(), shape_str(shape));
  Tensor host = empty(shape, dtype, Device::cpu());
  dispatch_all("Tensor::from_values", dtype, [&]<typename T>() {
    T* out = static_cast<T*>(host.data_ptr());
    for (size_t i = 0; i < values.size(); ++i) out[i] = element_from_double<T>(values[i]);
  });
  return host.to(device);
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype, Device device, double mean, double std) {
  std::vector<float> values(size_t(shape_numel(shape)));
  gen.fill_normal(values.data(), int64_t(values.size()), mean, std);
  return from_vector(values, shape).to(dtype).to(device);
}

Tensor Tensor::rand(const Shape& shape, Generator& gen, DType dtype, Device device, double low, double high) {
  std::vector<float> values(size_t(shape_numel(shape)));
  gen.fill_uniform(values.data(), int64_t(values.size()), low, high);
  return from_vector(values, shape).to(dtype).to(device);
}

Tensor Tensor::empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
Tensor Tensor::zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }

// ---- metadata ------------------------------------------------------------------------------

int Tensor::wrap_dim(int d, const char* op) const {
  const int n = dim();
  DAEDALUS_CHECK(d >= -n && d < n, "{}: dimension {} out of range for a tensor of shape {}", op, d, shape_str(shape_));
  return d < 0 ? d + n : d;
}

int64_t Tensor::size(int d) const { return shape_[size_t(wrap_dim(d, "Tensor::size"))]; }
int64_t Tensor::stride(int d) const { return strides_[size_t(wrap_dim(d, "Tensor::stride"))]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return fmt::format("{}{} on {}", dtype_name(dtype_), shape_str(shape_), device().str());
}

void* Tensor::data_ptr() const {
  DAEDALUS_CHECK(defined(), "Tensor::data_ptr: undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * int64_t(element_size());
}

std::vector<double> Tensor::to_doubles() const {
  Tensor host = to(Device::cpu()).contiguous();
  std::vector<double> out(static_cast<size_t>(numel()));
  dispatch_all("Tensor::to_doubles", dtype_, [&]<typename T>() {
    const T* in = static_cast<const T*>(host.data_ptr());
    for (size_t i = 0; i < out.size(); ++i) out[i] = element_to_double(in[i]);
  });
  return out;
}

double Tensor::item() const {
  DAEDALUS_CHECK(numel() == 1, "Tensor::item: needs exactly one element, tensor is {}", describe());
  return to_doubles()[0];
}

// ---- views ---------------------------------------------------------------------------------

Tensor Tensor::with_layout(Shape shape, Shape strides, int64_t offset) const {
  return Tensor(storage_, std::move(shape), std::move(strides), offset, dtype_);
}

namespace {
// Resolves one -1 and checks the element count.
Shape infer_shape(const Shape& requested, int64_t numel, const char* op, const Shape& from) {
  Shape shape = requested;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      DAEDALUS_CHECK(infer < 0, "{}: more than one -1 in shape {}", op, shape_str(requested));
      infer = int(i);
    } else {
      DAEDALUS_CHECK(shape[i] >= 0, "{}: invalid shape {}", op, shape_str(requested));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    DAEDALUS_CHECK(known > 0 && numel % known == 0, "{}: cannot reshape {} into {}", op, shape_str(from),
                   shape_str(requested));
    shape[size_t(infer)] = numel / known;
  }
  DAEDALUS_CHECK(shape_numel(shape) == numel, "{}: cannot reshape {} ({} elements) into {}", op, shape_str(from), numel,
                 shape_str(requested));
  return shape;
}

// Strides for viewing (shape, strides) as new_shape without copying, or empty if impossible.
// Walks groups of old dims that are contiguous among themselves and matches them to new dims.
Shape view_strides(const Shape& shape, const Shape& strides, const Shape& new_shape) {
  Shape out(new_shape.size());
  if (shape_numel(shape) == 0) return contiguous_strides(new_shape);
  size_t oi = 0, ni = 0;
  while (ni < new_shape.size() || oi < shape.size()) {
    // Skip size-1 dims on both sides (their stride is arbitrary).
    if (ni < new_shape.size() && new_shape[ni] == 1) {
      out[ni] = 1;
      ++ni;
      continue;
    }
    if (oi < shape.size() && shape[oi] == 1) {
      ++oi;
      continue;
    }
    if (oi >= shape.size() || ni >= new_shape.size()) return {};
    // Take a chunk of old dims [oi, oj) that is contiguous in memory, and new dims [ni, nj) with equal size.
    int64_t old_size = shape[oi], new_size = new_shape[ni];
    size_t oj = oi + 1, nj = ni + 1;
    while (old_size != new_size) {
      if (old_size < new_size) {
        if (oj >= shape.size()) return {};
        old_size *= shape[oj];
        ++oj;
      } else {
        if (nj >= new_shape.size()) return {};
        new_size *= new_shape[nj];
        ++nj;
      }
    }
    // The old chunk must be contiguous with itself (ignoring size-1 dims).
    int64_t last_stride = -1, last_size = 1;
    for (size_t k = oj; k-- > oi;) {
      if (shape[k] == 1) continue;
      if (last_stride >= 0 && strides[k] != last_stride * last_size) return {};
      last_stride = strides[k];
      last_size = shape[k];
    }
    int64_t inner = 1;
    for (size_t k = oj; k-- > oi;)
      if (shape[k] != 1) {
        inner = strides[k];
        break;
      }
    for (size_t k = nj; k-- > ni;) {
      out[k] = inner;
      inner *= new_shape[k];
    }
    oi = oj;
    ni = nj;
  }
  return out;
}
}  // namespace

Tensor Tensor::view(const Shape& shape) const {
  Shape resolved = infer_shape(shape, numel(), "Tensor::view", shape_);
  Shape strides = view_strides(shape_, strides_, resolved);
  DAEDALUS_CHECK(!strides.empty() || resolved.empty(),
                 "Tensor::view: a tensor of shape {} with strides {} cannot be viewed as {} (use reshape)",
                 shape_str(shape_), shape_str(strides_), shape_str(resolved));
  return with_layout(resolved, strides, offset_);
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape resolved = infer_shape(shape, numel(), "Tensor::reshape", shape_);
  Shape strides = view_strides(shape_, strides_, resolved);
  if (!strides.empty() || resolved.empty()) return with_layout(resolved, strides, offset_);
  return contiguous().view(resolved);
}

Tensor Tensor::transpose(int d0, int d1) const {
  d0 = wrap_dim(d0, "Tensor::transpose");
  d1 = wrap_dim(d1, "Tensor::transpose");
  Shape shape = shape_, strides = strides_;
  std::swap(shape[size_t(d0)], shape[size_t(d1)]);
  std::swap(strides[size_t(d0)], strides[size_t(d1)]);
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::permute(const std::vector<int>& order) const {
  DAEDALUS_CHECK(int(order.size()) == dim(), "Tensor::permute: order has {} entries for a tensor of shape {}",
                 order.size(), shape_str(shape_));
  Shape shape(order.size()), strides(order.size());
  std::vector<bool> seen(order.size(), false);
  for (size_t i = 0; i < order.size(); ++i) {
    const int d = wrap_dim(order[i], "Tensor::permute");
    DAEDALUS_CHECK(!seen[size_t(d)], "Tensor::permute: dimension {} repeated in order", d);
    seen[size_t(d)] = true;
    shape[i] = shape_[size_t(d)];
    strides[i] = strides_[size_t(d)];
  }
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::slice(int d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d, "Tensor::slice");
  DAEDALUS_CHECK(step > 0, "Tensor::slice: step must be positive, got {}", step);
  const int64_t n = shape_[size_t(d)];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = shape_, strides = strides_;
  shape[size_t(d)] = (end - start + step - 1) / step;
  strides[size_t(d)] *= step;
  return with_layout(shape, strides, offset_ + start * strides_[size_t(d)]);
}

Tensor Tensor::select(int d, int64_t index) const {
  d = wrap_dim(d, "Tensor::select");
  const int64_t n = shape_[size_t(d)];
  DAEDALUS_CHECK(index >= -n && index < n, "Tensor::select: index {} out of range for dimension {} of shape {}", index,
                 d, shape_str(shape_));
  if (index < 0) index += n;
  Shape shape = shape_, strides = strides_;
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return with_layout(shape, strides, offset_ + index * strides_[size_t(d)]);
}

Tensor Tensor::unsqueeze(int d) const {
  DAEDALUS_CHECK(d >= -dim() - 1 && d <= dim(), "Tensor::unsqueeze: dimension {} out of range for shape {}", d,
                 shape_str(shape_));
  if (d < 0) d += dim() + 1;
  Shape shape = shape_, strides = strides_;
  const int64_t stride = d < dim() ? strides_[size_t(d)] * shape_[size_t(d)] : 1;
  shape.insert(shape.begin() + d, 1);
  strides.insert(strides.begin() + d, stride);
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::squeeze(int d) const {
  d = wrap_dim(d, "Tensor::squeeze");
  DAEDALUS_CHECK(shape_[size_t(d)] == 1, "Tensor::squeeze: dimension {} of shape {} is not 1", d, shape_str(shape_));
  Shape shape = shape_, strides = strides_;
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return with_layout(shape, strides, offset_);
}

Tensor Tensor::expand(const Shape& shape) const {
  DAEDALUS_CHECK(shape.size() >= shape_.size(), "Tensor::expand: cannot expand {} to fewer dimensions {}",
                 shape_str(shape_), shape_str(shape));
  const size_t lead = shape.size() - shape_.size();
  Shape strides(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) continue;
    const int64_t have = shape_[i - lead];
    if (have == shape[i]) {
      strides[i] = strides_[i - lead];
    } else {
      DAEDALUS_CHECK(have == 1, "Tensor::expand: cannot expand {} to {}", shape_str(shape_), shape_str(shape));
    }
  }
  return with_layout(shape, strides, offset_);
}

// ---- copies --------------------------------------------------------------------------------

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape_, dtype_, device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor out = empty(shape_, dtype_, device);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor out = empty(shape_, dtype, device());
  out.copy_(*this);
  return out;
}

void Tensor::copy_(const Tensor& src) {
  DAEDALUS_CHECK(defined() && src.defined(), "Tensor::copy_: undefined tensor");
  DAEDALUS_CHECK(shape_ == src.shape_, "Tensor::copy_: destination {} and source {} differ in shape", describe(),
                 src.describe());
  if (device() == src.device()) {
    kernels::copy(*this, src);
    return;
  }
  // Across devices: move bytes of a contiguous, same-dtype staging copy, then convert on the destination.
  Tensor staged = src.contiguous();
  if (dtype_ == src.dtype_ && is_contiguous()) {
    copy_bytes(data_ptr(), device(), staged.data_ptr(), staged.device(), nbytes());
    return;
  }
  Tensor landed = empty(shape_, src.dtype_, device());
  copy_bytes(landed.data_ptr(), landed.device(), staged.data_ptr(), staged.device(), staged.nbytes());
  kernels::copy(*this, landed);
}

void Tensor::fill_(double value) { kernels::fill(*this, value); }

}  // namespace daedalus
