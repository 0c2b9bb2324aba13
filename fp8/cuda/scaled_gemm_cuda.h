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

#include "autograd/tensor.h"
#include "fp8/quantized.h"

namespace daedalus::fp8 {

// a [M, K], b [N, K]: FP8 data contiguous on one CUDA device, scale_inv on the same device.
Tensor cuda_scaled_gemm(const QuantizedTensor& a, const QuantizedTensor& b);

// The bf16 recipe's GEMM (and the FP8 benchmark's baseline): y [M, N] fp32 = a [M, K] · b [N, K]ᵀ,
// bf16 operands contiguous on one CUDA device, FP32 accumulation. Same shape rules as above
// (K % 8 == 0 here: 16-byte leading dimensions of bf16).
Tensor cuda_bf16_gemm_tn(const Tensor& a, const Tensor& b);

// x [rows, cols] fp32 or bf16 on a CUDA device (made contiguous) -> FP8 data and scale_inv in the
// CPU quantizer's layouts, bit-identical to fp8::quantize. Granularities: tensor, row, tile_1x128,
// block_128x128.
QuantizedTensor cuda_quantize(const Tensor& x, Granularity granularity, Format format,
                              const ScaleOptions& options = {});

}  // namespace daedalus::fp8
