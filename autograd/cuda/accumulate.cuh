// Device helpers for kernels that accumulate: rounding a double accumulator to the storage type
// exactly once (the device twin of round_from_double in autograd/dtype.h), and a fixed-order warp
// tree, so results never depend on scheduling.
#pragma once

#include <cuda_runtime.h>

#include "autograd/dtype.h"

namespace daedalus::cuda {

// double -> T, one rounding to nearest even. For bf16 the same trick as the host version: round
// toward zero to float, make it odd when inexact (the sticky bit survives), then round to bf16.
// Bit-identical to round_from_double<T> on the host, overflow included (both give bf16 inf).
template <typename T>
__device__ __forceinline__ T round_from_double_device(double v) {
  if constexpr (std::is_same_v<T, float>) {
    return __double2float_rn(v);
  } else {
    float f = __double2float_rz(v);
    if (!isnan(v) && double(f) != v && !isinf(f)) f = __uint_as_float(__float_as_uint(f) | 1u);
    return from_float<T>(f);
  }
}

// Folds the 32 lanes' values with a fixed tree (lane 0 ends with the result): offsets 16, 8, 4, 2, 1.
// Combine(a, b) folds b into a. The shape of the tree depends on nothing but the lane numbers.
template <typename Acc, typename Combine>
__device__ __forceinline__ Acc warp_tree(Acc a, Combine combine) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) combine(a, __shfl_down_sync(0xFFFFFFFFu, a, offset));
  return a;
}

}  // namespace daedalus::cuda
