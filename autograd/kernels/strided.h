// CPU iteration over the elements of N same-shaped strided operands, row by row.
//
// The index space is split into tasks of up to kChunk consecutive elements along the last
// (coalesced) dimension; tasks run in parallel with OpenMP when there is enough work. Each task
// calls fn(offsets, n, inner_strides): element offsets of the task's first element in each
// operand (relative to that operand's data_ptr), the element count, and each operand's stride
// along the last dimension. Kernels write a tight loop for the all-unit-stride case.
#pragma once

#include <omp.h>

#include <array>
#include <cstdint>

#include "autograd/tensor.h"

namespace daedalus::cpu {

inline constexpr int64_t kChunk = 8192;
inline constexpr int64_t kParallelThreshold = 32768;  // elements; below this threads cost more than they save

template <size_t N, typename Fn>
void for_each_strided(const Shape& shape, const std::array<Shape, N>& strides, Fn&& fn) {
  // Coalesce dimensions that are contiguous with their successor in every operand, and drop size-1 dims.
  Shape dims;
  std::array<Shape, N> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !dims.empty();
    for (size_t k = 0; k < N && merge; ++k) merge = st[k].back() == strides[k][d] * shape[d];
    if (merge) {
      dims.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) st[k].back() = strides[k][d];
    } else {
      dims.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) st[k].push_back(strides[k][d]);
    }
  }
  const int64_t numel = shape_numel(shape);
  if (numel == 0) return;
  if (dims.empty()) {  // a single element
    dims.push_back(1);
    for (size_t k = 0; k < N; ++k) st[k].push_back(1);
  }
  const int nd = int(dims.size());
  const int64_t inner = dims.back();
  const int64_t chunks_per_row = (inner + kChunk - 1) / kChunk;
  const int64_t tasks = numel / inner * chunks_per_row;
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = st[k].back();

#pragma omp parallel for schedule(static) if (numel >= kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    int64_t row = task / chunks_per_row;
    const int64_t begin = (task % chunks_per_row) * kChunk;
    const int64_t n = std::min(kChunk, inner - begin);
    std::array<int64_t, N> offsets{};
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = row % dims[size_t(d)];
      row /= dims[size_t(d)];
      for (size_t k = 0; k < N; ++k) offsets[k] += i * st[k][size_t(d)];
    }
    for (size_t k = 0; k < N; ++k) offsets[k] += begin * inner_strides[k];
    fn(offsets, n, inner_strides);
  }
}

// Rows of a contiguous [rows, cols] problem, in parallel when rows * cols is large enough.
template <typename Fn>
void parallel_rows(int64_t rows, int64_t cols, Fn&& fn) {
#pragma omp parallel for schedule(static) if (rows > 1 && rows * cols >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) fn(r);
}

}  // namespace daedalus::cpu
