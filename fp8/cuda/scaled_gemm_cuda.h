// CUDA twins of the FP8 quantizer and scaled GEMM (fp8/quantized.h, fp8/scaled_gemm.h): same
// operands, same layouts, same contract. Called through the dispatchers in fp8/ for CUDA tensors.
//
// cuda_scaled_gemm: cuBLASLt FP8 GEMM on Hopper, y [M, N] fp32 = dequantize(a [M, K]) ·
// dequantize(b [N, K])ᵀ, FP32 promotion (CUBLASLT_MATMUL_DESC_FAST_ACCUM = 0). Scale pairs (a × b):
// tensor × tensor, row × row, tile_1x128 × block_128x128, block_128x128 × tile_1x128,
// tile_1x128 × tile_1x128 (NUMERICS.md "cuBLASLt on Hopper"); e5m2 × e5m2 is rejected.
// Shapes: K % 16 == 0 (16-byte leading dimensions), M % 8 == 0 and N % 8 == 0; the 1x128 and
// 128x128 modes also need K % 128 == 0. Anything else is an InputError naming the dimension.
#pragma once

#include <vector>

#include "autograd/tensor.h"
#include "fp8/quantized.h"

namespace daedalus::fp8 {

// a [M, K], b [N, K]: FP8 data contiguous on one CUDA device, scale_inv on the same device.
Tensor cuda_scaled_gemm(const QuantizedTensor& a, const QuantizedTensor& b);

// The bf16 recipe's GEMM (and the FP8 benchmark's baseline): y [M, N] fp32 = a [M, K] · b [N, K]ᵀ,
// bf16 operands contiguous on one CUDA device, FP32 accumulation. Same shape rules as above
// (K % 8 == 0 here: 16-byte leading dimensions of bf16).
Tensor cuda_bf16_gemm_tn(const Tensor& a, const Tensor& b);

// x [rows, cols] fp32 or bf16 on a CUDA device, any strides -> FP8 data and scale_inv in the CPU
// quantizer's layouts, bit-identical to fp8::quantize, stochastic rounding included. Every
// granularity (mx_1x32 too, though no Hopper GEMM consumes it). Transposed views (unit row stride)
// are read in place for tile_1x128 and block_128x128: no transpose copy for the Wgrad / Dgrad
// operands.
QuantizedTensor cuda_quantize(const Tensor& x, Granularity granularity, Format format,
                              const ScaleOptions& options = {});

// fp8::quantize_with_scale's twin (delayed scaling): tensor granularity with the given scale
// (positive and finite with a finite inverse; checked by the caller); scale_inv = 1 / scale.
QuantizedTensor cuda_quantize_with_scale(const Tensor& x, float scale, Format format);

// fp8::swiglu_quantize's CUDA path: q(swiglu(gate, up)) in 1x128 tiles from gate and up [rows, cols]
// (fp32 or bf16, one dtype) in one kernel that never writes h: each h value is the activation
// kernel's (autograd/cuda/swiglu.cuh) rounded to the operands' dtype, so the result is
// cuda_quantize(kernels::swiglu(gate, up), tile_1x128, ...) bit for bit. Operands that are not
// row-major with 4-aligned rows take that composition.
QuantizedTensor cuda_swiglu_quantize(const Tensor& gate, const Tensor& up, Format format,
                                     const ScaleOptions& options = {});

// fp8::requantize_transposed's fused CUDA path: q(Xᵀ) in 1x128 tiles (along X's rows) straight from
// q = 1x128-tiled q(X), the dequantized values formed on the fly: one read of the FP8 codes instead
// of an fp32 copy of X written and read back. Bit-identical to quantize(q.dequantize().t(), ...).
QuantizedTensor cuda_requantize_transposed(const QuantizedTensor& q, Format format, const ScaleOptions& options);

// QuantizedTensor::dequantize's twin: fp32 [rows, cols] = q * scale_inv of its block, the block of
// (r, c) being scale_inv[(r / block_rows) * blocks_per_row + c / block_cols] (shape checked by the
// caller).
Tensor cuda_dequantize(const QuantizedTensor& q, int64_t block_rows, int64_t block_cols, int64_t blocks_per_row);

// One projection per group over rows sorted by group: y [R, N] fp32, rows [offsets[g],
// offsets[g+1]) = a[g] · b[g]ᵀ, with a[g] [M_g, K] and b[g] [N, K] quantized operands on one CUDA
// device (any pair cuda_scaled_gemm takes; empty groups are skipped and may hold undefined
// tensors). cuBLASLt 13 has no grouped (variable-M) FP8 GEMM with block scales — its pointer-array
// batch mode needs one m, n, k for the whole batch, and cublasGemmGroupedBatchedEx (which the fp32
// and bf16 recipes' grouped Linear uses: autograd/cuda/grouped_gemm.cu) takes only fp16, bf16, fp32
// and fp64 operands, no FP8 and no scale modes — so this issues ONE cuBLASLt call per non-empty
// group, writing straight into y's rows when M_g is a multiple of 8 (else through a padded
// temporary).
//
// GroupedGemmBackend::kernel instead runs fp8/cuda/grouped_gemm_kernel.h's kernel of our own: the
// whole grouped GEMM in ONE launch, for DeepSeek-V3's pair (a tile_1x128 x b block_128x128, N and K
// multiples of 128; e4m3 x e4m3, e5m2 x e4m3 or e4m3 x e5m2); any other operands take the cuBLASLt
// loop anyway. The default backend comes from the environment (grouped_gemm_backend below).
enum class GroupedGemmBackend { cublaslt_per_group, kernel };

// DAEDALUS_FP8_GROUPED_GEMM, read at the first call and kept for the process: unset, "" or
// "cublaslt" -> cublaslt_per_group (the default: the kernel has not been measured yet); "kernel" ->
// kernel. Anything else is an InputError naming the variable and its values.
GroupedGemmBackend grouped_gemm_backend();
GroupedGemmBackend parse_grouped_gemm_backend(const char* value);  // the parser (nullptr = unset)

Tensor cuda_grouped_scaled_gemm(const std::vector<QuantizedTensor>& a, const std::vector<QuantizedTensor>& b,
                                const std::vector<int64_t>& offsets,
                                GroupedGemmBackend backend = grouped_gemm_backend());

}  // namespace daedalus::fp8
