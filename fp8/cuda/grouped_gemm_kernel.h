// A grouped FP8 GEMM of our own for DeepSeek-V3's Fprop pair, in ONE launch over all groups:
//
//   y [R, N] fp32, rows [offsets[g], offsets[g+1]) = dequantize(a[g] [M_g, K]) · dequantize(b[g] [N, K])ᵀ
//   a[g]: tile_1x128 scales (one per row per 128 of K), b[g]: block_128x128 scales
//
// It is the alternative to cuda_grouped_scaled_gemm's one cuBLASLt call per group
// (fp8/cuda/scaled_gemm_cuda.h), chosen there with DAEDALUS_FP8_GROUPED_GEMM=kernel; the cuBLASLt
// loop stays the default until the two have been measured against each other (docs/gpu.md).
// STATUS: compiled for sm_90a, NEVER RUN on a GPU yet. Its tests (tests/test_fp8_grouped_kernel.cpp)
// and benchmarks (bench/bench_fp8_cuda.cpp, BM_Fp8GroupedGemm{Kernel,LtLoop}) wait for a device.
//
// Numerics: DeepSeek-V3's promotion, in the CPU reference's order (fp8/scaled_gemm.cpp,
// cpu_gemm_blocked): for each 128-wide K block kb, in K order,
//   partial[m, n] = Σ_{k in kb} qa[m, k] · qb[n, k]                   tensor cores, fp32 accumulator
//   y[m, n]      += partial[m, n] * (sa[m, kb] * sb[n / 128, kb])     fp32, rounded at each step
// Only the summation order inside a block's partial differs from the CPU's (and the tensor core's
// own accumulator precision; NUMERICS.md "Accumulation").
//
// Supported (anything else: grouped_gemm_1x128_128x128_unsupported says why, and
// cuda_grouped_scaled_gemm falls back to the cuBLASLt loop):
//   a tile_1x128 x b block_128x128; formats e4m3 x e4m3, e5m2 x e4m3, e4m3 x e5m2;
//   N and K multiples of 128 (N > 0, K > 0); any M_g >= 0 (row guards; empty groups skipped, their
//   a and b may be undefined or placeholders); at most kGroupedKernelMaxGroups non-empty groups;
//   data contiguous and 16-byte aligned, scale_inv fp32 of the CPU layouts (fp8/quantized.h).
#pragma once

#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "fp8/quantized.h"

namespace daedalus::fp8 {

// Non-empty groups one launch takes: their pointers travel in the kernel's parameters (about 13 KiB
// at 256 groups, under CUDA 12.1+'s 32 KiB parameter limit), so no host-to-device copy is needed.
inline constexpr int kGroupedKernelMaxGroups = 256;

// Why grouped_gemm_1x128_128x128 cannot take these operands, or "" when it can. Looks at shapes,
// granularities, formats, dtypes, contiguity and alignment only (no CUDA call, any device).
std::string grouped_gemm_1x128_128x128_unsupported(const std::vector<QuantizedTensor>& a,
                                                   const std::vector<QuantizedTensor>& b,
                                                   const std::vector<int64_t>& offsets);

// The kernel itself, on one CUDA device, queued on its compute stream (no host synchronization).
// InputError with the reason above when the operands are not supported.
Tensor grouped_gemm_1x128_128x128(const std::vector<QuantizedTensor>& a, const std::vector<QuantizedTensor>& b,
                                  const std::vector<int64_t>& offsets);

}  // namespace daedalus::fp8
