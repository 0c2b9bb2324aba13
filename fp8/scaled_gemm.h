// Scaled FP8 GEMM: y = dequantize(a) · dequantize(b)ᵀ, both operands quantized along K.
//
// TN like cuBLASLt's FP8 GEMMs: a [M, K] and b [N, K], both K-major, y [M, N] fp32. The scale
// granularities allowed are the ones Hopper's cuBLASLt takes (NUMERICS.md): tensor × tensor,
// row × row, tile_1x128 × block_128x128, block_128x128 × tile_1x128, tile_1x128 × tile_1x128, and
// mx_1x32 × mx_1x32 (CPU emulation only on Hopper). Anything else is an InputError naming both.
//
// CPU: exact emulation. FP8 values are exact in BF16, so each K block is a BF16 GEMM with FP32
// accumulation (oneDNN, AVX512-BF16) whose partial sums are scaled by the blocks' scale_invs and
// added in FP32 — DeepSeek-V3's promotion scheme itself. Per-tensor and per-row scales fold into
// one GEMM. CUDA: cuBLASLt with the matching scale modes (autograd/cuda is not involved).
#pragma once

#include <vector>

#include "fp8/quantized.h"

namespace daedalus::fp8 {

// The tensor-core accumulator to emulate: `mantissa_bits` = 0 is exact FP32 accumulation;
// otherwise the running sum keeps that many mantissa bits (Hopper FP8 MMA: ~14, DeepSeek-V3 §3.3.2)
// and, with promote_every > 0, is added into an FP32 accumulator every promote_every products
// along K (DeepSeek: 128). `chunk` products are summed exactly before each truncation of the
// running sum (1: truncate after every addition; the MMA adds a few products per step, wgmma's
// instruction K is 32 for FP8). Only the CPU emulates it; cuBLASLt's choice is
// CUBLASLT_MATMUL_DESC_FAST_ACCUM.
struct Accumulator {
  int mantissa_bits = 0;
  int promote_every = 0;
  int chunk = 1;
};

// Any shapes on both devices (CUDA pads to cuBLASLt's alignment internally).
Tensor scaled_gemm(const QuantizedTensor& a, const QuantizedTensor& b, const Accumulator& accumulator = {});

// Grouped (MoE experts): y [R, N] fp32 whose rows [offsets[g], offsets[g+1]) are
// scaled_gemm(a[g], b[g]) — a[g] [M_g, K] the group's rows, b[g] [N, K] its weight, each with its own
// scales. Empty groups are skipped (a[g] may be undefined). CPU: one scaled_gemm per group (the
// reference). CUDA: fp8/cuda's cuda_grouped_scaled_gemm, which writes each group's rows in place —
// one cuBLASLt call per non-empty group: cuBLASLt 13 has no variable-M grouped GEMM, and cuBLAS's
// grouped call (cublasGemmGroupedBatchedEx) takes no FP8 operands or scales; with
// DAEDALUS_FP8_GROUPED_GEMM=kernel, DeepSeek-V3's pair (1x128 x 128x128, N and K multiples of 128)
// runs in one launch of a kernel of our own instead (fp8/cuda/grouped_gemm_kernel.h; unmeasured,
// docs/gpu.md). The fp32 and bf16 recipes' grouped Linear is one call per pass
// (autograd/kernels/grouped_gemm.h).
Tensor grouped_scaled_gemm(const std::vector<QuantizedTensor>& a, const std::vector<QuantizedTensor>& b,
                           const std::vector<int64_t>& offsets, const Accumulator& accumulator = {});

// FP8 codes (fp8e4m3|fp8e5m2, CPU, any shape and strides) -> their values in BF16, contiguous:
// exact, NaN and inf included (every FP8 value is a BF16 value). The CPU GEMM's operand
// conversion: FP8 x FP8 products are BF16 GEMMs with FP32 accumulation.
Tensor fp8_to_bf16(const Tensor& q);

// b[g] for a group without rows, whose shape is all grouped_scaled_gemm reads: [rows, cols] as a
// zero-stride view of one FP8 byte (nothing of that size is allocated), tensor scale 1.
QuantizedTensor empty_group_operand(int64_t rows, int64_t cols, Device device);

}  // namespace daedalus::fp8
