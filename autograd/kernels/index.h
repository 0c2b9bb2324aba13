// Row gather and scatter-add by an index vector: the MoE permutation (tokens -> expert order) and
// its inverse (expert outputs -> tokens, weighted by the gates), and the index range check that
// embedding shares.
//
// Indices are int32 or int64, any strides. Negative indices are out of range (no Python-style
// wrap-around). Out-of-range indices are an InputError that names the op, the position, the value
// and the valid range. On the CPU it is thrown by the call and nothing is written. On CUDA the
// gather's check is deferred (autograd/device_checks.h): the call returns, the same InputError is
// thrown at the next synchronize() or device-to-host copy, and meanwhile the out-of-range rows of
// the gather's output are zeros and the scatter-add skips those sources (nothing is read or
// written out of bounds).
#pragma once

#include <string_view>

#include "autograd/tensor.h"

namespace daedalus::kernels {

// index (int32|int64, any shape) on the CPU: InputError unless every element lies in [0, limit):
//   "<op>: <name>[1, 4] = 70000 is out of range [0, 32000) (<context>)"
// The first offending element (in row-major order) is reported. A CUDA index is checked on the
// device and the call returns at once: the error surfaces at the next synchronize(device) or
// device-to-host copy (deferred; see autograd/device_checks.h).
void check_index_range(std::string_view op, const Tensor& index, std::string_view name, int64_t limit,
                       std::string_view context);

// x [N, D] (any dtype, any strides), index [M] (int32|int64, values in [0, N)) -> out [M, D],
// x's dtype, contiguous: out[i] = x[index[i]]. Rows may repeat or be left out. An exact copy (no
// arithmetic), so FP8 and integer rows gather too.
Tensor gather_rows(const Tensor& x, const Tensor& index);

// dst [N, D] (fp32|bf16, any non-expanded strides; updated in place), index [M] (int32|int64, values
// in [0, N)), src [M, D] (fp32|bf16, need not match dst's dtype): dst[index[i]] += src[i].
// Each touched destination row is accumulated in double, starting from its old value, over its
// sources in increasing i, then rounded once: repeated indices accumulate deterministically (same
// bits for any thread count). Rows that no index names are left bit-for-bit untouched. dst must not
// overlap src.
void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src);

// As above, weighted: weight [M] fp32, dst[index[i]] += weight[i] * src[i] (the MoE combine with the
// gate weights; the product of two fp32/bf16 values is exact in double).
void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src, const Tensor& weight);

}  // namespace daedalus::kernels
