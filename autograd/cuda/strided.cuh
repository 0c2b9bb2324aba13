// Device-side strided indexing: a tensor's layout passed by value to a kernel, and the offset
// of logical element i (row-major over the shape). Up to kMaxDims dimensions.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "autograd/tensor.h"

namespace daedalus::cuda {

inline constexpr int kMaxDims = 8;

struct Layout {
  int dims = 0;
  bool contiguous = true;  // offset(i) == i: skips the index arithmetic (a warp-uniform branch)
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];
};

inline Layout layout_of(const Tensor& t) {
  DAEDALUS_CHECK(t.dim() <= kMaxDims, "cuda: tensors of more than {} dimensions are not supported, got {}", kMaxDims,
                 t.describe());
  Layout l;
  l.dims = t.dim();
  l.contiguous = t.is_contiguous();
  for (int d = 0; d < t.dim(); ++d) {
    l.shape[d] = t.shape()[size_t(d)];
    l.strides[d] = t.strides()[size_t(d)];
  }
  return l;
}

__device__ __forceinline__ int64_t element_offset(const Layout& l, int64_t i) {
  if (l.contiguous) return i;
  int64_t off = 0;
  for (int d = l.dims - 1; d >= 0; --d) {
    const int64_t n = l.shape[d];
    off += (i % n) * l.strides[d];
    i /= n;
  }
  return off;
}

inline constexpr int kThreads = 256;

// N elements of T moved by one aligned vector load or store (16 bytes at most).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Contiguous tensors whose data pointers are aligned for `pack_bytes`-byte accesses take the
// packed kernels; anything else (views with offsets, strides, broadcasts) the indexed ones.
inline bool packable(std::initializer_list<const Tensor*> tensors, size_t pack_bytes) {
  for (const Tensor* t : tensors)
    if (!t->is_contiguous() || reinterpret_cast<uintptr_t>(t->data_ptr()) % pack_bytes != 0) return false;
  return true;
}

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < 65535 * 16 ? b : 65535 * 16);  // grid-stride loops cover the rest
}

}  // namespace daedalus::cuda
