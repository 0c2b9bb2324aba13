// Reductions: sum, mean, max and amax (max |x|, for FP8 scaling) along one dimension or over the
// whole tensor, and sum_to_shape (the backward of broadcasting).
//
// Data: fp32 or bf16, any strides. Sums and means accumulate in double and round once on store, so
// the CPU path is the numerical reference. Accumulation order is fixed by the shape alone (blocks of
// 4096 elements along the reduced extent, summed in index order, block sums added in index order):
// results are bit-identical for any OpenMP thread count.
//
// NaN: sum and mean follow IEEE arithmetic (a NaN in the reduced range gives NaN). max, amax and
// amax_all PROPAGATE NaN: one NaN in the reduced range makes that result NaN (an amax that skipped
// NaN would hide a diverged tensor behind a finite FP8 scale). +-inf are ordinary values.
#pragma once

#include <cmath>
#include <cstdint>

#include "autograd/tensor.h"

namespace daedalus::kernels {

// What a reduction computes (the CPU and CUDA kernels share this enum).
enum class ReduceKind : uint8_t { sum, mean, max, amax };

// x [d0, ..., dn-1] (fp32|bf16) -> y, x's dtype, shape of x without `dim` (keepdim: with `dim` of
// size 1). dim may be negative (counts from the end). y = sum over dim, accumulated in double.
Tensor sum(const Tensor& x, int dim, bool keepdim = false);

// As sum, divided by the size of `dim` (in double, then rounded once). Empty dim gives NaN.
Tensor mean(const Tensor& x, int dim, bool keepdim = false);

// As sum, the largest value along `dim` (exact); NaN if any element is NaN. The dim must be non-empty.
Tensor max(const Tensor& x, int dim, bool keepdim = false);

// As sum, max |x| along `dim` (exact, x's dtype); NaN if any element is NaN; 0 for an empty dim.
Tensor amax(const Tensor& x, int dim, bool keepdim = false);

// x [...] (fp32|bf16) -> fp32 scalar, shape []: the sum of every element (double accumulation,
// one rounding to fp32). 0 for an empty tensor.
Tensor sum_all(const Tensor& x);

// x [...] (fp32|bf16) -> fp32 scalar, shape []: max |x| over every element (exact); NaN if any
// element is NaN; 0 for an empty tensor.
Tensor amax_all(const Tensor& x);

// x [..., broadcast shape] (fp32|bf16) -> y [shape], x's dtype: sums the leading dims x has beyond
// `shape` and every dim where shape has 1 and x does not (the gradient of broadcasting `shape` up to
// x's shape). `shape` must broadcast to x's shape. All reduced dims are summed together in double and
// rounded once.
Tensor sum_to_shape(const Tensor& x, const Shape& shape);  // x itself when the shapes are equal

}  // namespace daedalus::kernels
