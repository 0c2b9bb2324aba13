// Grouped matrix products (MoE experts): rows sorted by group, one product per group with its own
// row count, every group sharing the other two dims. A grouped Linear's forward, input gradient and
// weight gradient are each ONE call here, whatever the number of groups.
//
// The CPU kernel is a loop of kernels::gemm over the non-empty groups (the reference); the CUDA one
// is a single cublasGemmGroupedBatchedEx call (autograd/cuda/grouped_gemm.cu). Numerics as
// kernels::gemm: fp32 accumulation, c rounded once on store; fp32 operands multiply in full fp32
// (no TF32). FP8 operands are not taken (fp8/scaled_gemm.h has the grouped scaled GEMM).
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/tensor.h"

namespace daedalus::kernels {

// What group g computes. a_g / b_g / c_g: rows [offsets[g], offsets[g+1]) of a row-grouped
// operand [R, .]; w_g: matrix g of a per-group operand [G, ., .]. G = offsets.size() - 1.
enum class GroupedProduct {
  a_bt,  // a [R, K], b [G, N, K] -> c [R, N]:     c_g = a_g · w_gᵀ  (a Linear's forward, y = x·Wᵀ)
  a_b,   // a [R, N], b [G, N, K] -> c [R, K]:     c_g = a_g · w_g   (its input gradient, dx = dy·W)
  at_b,  // a [R, N], b [R, K]    -> c [G, N, K]:  c_g = a_gᵀ · b_g  (its weight gradient, dW = dyᵀ·x)
};

// A new contiguous c of dtype `out` (fp32 or bf16) on the operands' device, per `product`.
//   offsets: G + 1 of them, non-decreasing from 0 to R (the rows of a, and of b for at_b).
//   Dtypes: a and b both fp32 or both bf16 (bf16 products accumulate in fp32).
//   Layout: any strides (operands that are not contiguous are copied first).
//   Empty groups: a_bt / a_b have no rows to write; at_b gives c_g = 0 (an empty sum).
Tensor grouped_matmul(GroupedProduct product, const Tensor& a, const Tensor& b, const std::vector<int64_t>& offsets,
                      DType out = DType::f32);

// The same products as one kernels::gemm per non-empty group, written into c's rows or matrices
// (c allocated, and zeroed for at_b; operands checked): the CPU kernel, and the CUDA path's
// fallback for operands the grouped cuBLAS call cannot take. Any device.
void grouped_matmul_per_group(GroupedProduct product, const Tensor& c, const Tensor& a, const Tensor& b,
                              const std::vector<int64_t>& offsets);

}  // namespace daedalus::kernels
