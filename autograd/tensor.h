// Tensor: a strided view (shape, strides, offset, dtype) of shared storage on one device.
//
// Views (reshape of contiguous data, transpose, permute, slice, select, expand) share storage
// and cost nothing; contiguous() and clone() copy. Strides and offsets count elements.
// All allocation goes through allocator_for(device). Kernels live in autograd/kernels/.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/check.h"
#include "autograd/device.h"
#include "autograd/dtype.h"
#include "autograd/small_vector.h"

namespace daedalus {

// Sizes or strides of a tensor; up to six dims live inline (no heap allocation per view or copy).
using Shape = SmallVector<int64_t, 6>;

std::string shape_str(const Shape& shape);  // "[3, 4]"
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

// Owns one allocation; freed through its allocator when the last tensor using it goes away.
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

class Generator;

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // ---- creation --------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor arange(int64_t n, DType dtype = DType::i64, Device device = Device::cpu());  // 0..n-1
  // Host values converted to `dtype` (round-to-nearest-even; FP8 saturates).
  static Tensor from_values(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32,
                            Device device = Device::cpu());
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
  // Seeded, machine-independent random tensors (see generator.h).
  static Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32, Device device = Device::cpu(),
                      double mean = 0.0, double std = 1.0);
  static Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::f32, Device device = Device::cpu(),
                     double low = 0.0, double high = 1.0);
  static Tensor empty_like(const Tensor& t);
  static Tensor zeros_like(const Tensor& t);

  // ---- metadata --------------------------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int dim() const { return int(shape_.size()); }
  int64_t size(int d) const;  // negative d counts from the end
  int64_t stride(int d) const;
  int64_t numel() const { return shape_numel(shape_); }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  size_t element_size() const { return dtype_size(dtype_); }
  size_t nbytes() const { return size_t(numel()) * element_size(); }
  bool is_contiguous() const;
  bool shares_storage(const Tensor& other) const { return storage_ && storage_ == other.storage_; }
  std::string describe() const;  // "fp32[3, 4] on cpu"

  // ---- raw access ------------------------------------------------------------------------
  void* data_ptr() const;  // storage base + offset
  template <typename T>
  T* data() const {
    DAEDALUS_CHECK(dtype_of<T>() == dtype_, "Tensor::data: tensor is {} but {} was requested", dtype_name(dtype_),
                   dtype_name(dtype_of<T>()));
    return static_cast<T*>(data_ptr());
  }
  // Copies to host and converts every element (any dtype), in logical (row-major) order.
  std::vector<double> to_doubles() const;
  template <typename T>
  std::vector<T> to_vector() const;  // dtype must match T
  double item() const;               // one-element tensors

  // ---- views (share storage) -------------------------------------------------------------
  Tensor view(const Shape& shape) const;     // one -1 allowed; needs compatible strides
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a contiguous copy
  Tensor transpose(int d0, int d1) const;
  Tensor t() const { return transpose(-2, -1); }
  Tensor permute(const std::vector<int>& order) const;
  Tensor slice(int d, int64_t start, int64_t end, int64_t step = 1) const;  // [start, end), python-style negatives
  Tensor select(int d, int64_t index) const;                                // drops dimension d
  Tensor unsqueeze(int d) const;
  Tensor squeeze(int d) const;
  Tensor expand(const Shape& shape) const;  // broadcast size-1 dims with stride 0

  // ---- copies ----------------------------------------------------------------------------
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;
  Tensor to(Device device) const;  // itself when already there
  Tensor to(DType dtype) const;    // cast (round-to-nearest-even; FP8 saturates); itself when equal
  void copy_(const Tensor& src);   // same shape; any dtype (cast) and device
  void fill_(double value);
  void zero_() { fill_(0.0); }

 private:
  Tensor(std::shared_ptr<Storage> storage, Shape shape, Shape strides, int64_t offset, DType dtype);
  Tensor with_layout(Shape shape, Shape strides, int64_t offset) const;
  int wrap_dim(int d, const char* op) const;

  std::shared_ptr<Storage> storage_;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);
std::string to_string(const Tensor& t, int edge_items = 3);  // torch-style, "..." beyond edge_items

// ---- template definitions ----------------------------------------------------------------

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  DAEDALUS_CHECK(int64_t(values.size()) == shape_numel(shape), "Tensor::from_vector: {} values for shape {}",
                 values.size(), shape_str(shape));
  Tensor host = empty(shape, dtype_of<T>(), Device::cpu());
  if (!values.empty()) std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  return host.to(device);
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  DAEDALUS_CHECK(dtype_of<T>() == dtype_, "Tensor::to_vector: tensor is {} but {} was requested", dtype_name(dtype_),
                 dtype_name(dtype_of<T>()));
  Tensor host = to(Device::cpu()).contiguous();
  std::vector<T> out(static_cast<size_t>(numel()));
  if (!out.empty()) std::memcpy(out.data(), host.data_ptr(), out.size() * sizeof(T));
  return out;
}

}  // namespace daedalus
