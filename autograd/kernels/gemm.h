// Matrix products in FP32 and BF16: c = alpha * a·b + beta * c, batched, on strided views.
//
// The CPU kernel is oneDNN's matmul (AVX512-BF16 where the CPU has it: BF16 operands multiply
// with FP32 accumulation at about twice the FP32 rate); the CUDA one is cuBLASLt (fp32 without
// TF32, see autograd/cuda/gemm.cu). FP8
// operands are not taken here: they need per-block scales and go through fp8/'s scaled GEMM.
#pragma once

#include "autograd/tensor.h"

namespace daedalus::kernels {

// a [..., M, K] · b [..., K, N] -> c [..., M, N]:  c = alpha * a·b + beta * c.
//   Batch: a and b are each either 2-d (one matrix shared by every batch entry) or carry exactly
//   c's leading batch dims; c has the rank of the larger operand (2-d when both are).
//   Layout: any strided views. Transposed (x.t()) or sliced operands whose last two dims have one
//   unit stride are read in place; others are copied to contiguous first. c is written in place
//   (through a contiguous temporary when its last dim is not unit-stride). c must not overlap a, b.
//   Dtypes: a and b both fp32 or both bf16 (bf16 products accumulate in fp32); c fp32 or bf16,
//   rounded once on store.
//   beta == 0 never reads c, so c may hold garbage or NaN.
void gemm(const Tensor& a, const Tensor& b, const Tensor& c, double alpha = 1.0, double beta = 0.0);

// a [..., M, K] · b [..., K, N] -> a new contiguous [..., M, N] tensor of dtype `out`
// (batch dims from whichever operand has them; the same rules as gemm).
Tensor matmul(const Tensor& a, const Tensor& b, DType out = DType::f32);

// Whether oneDNN has a BF16 matmul on this CPU (it needs AVX512; AVX2-only CPUs have none). Without
// one, the CPU gemm widens BF16 operands to FP32 first: the same products (exact in FP32) and FP32
// sums, at the cost of a copy of each operand.
bool cpu_has_bf16_matmul();

}  // namespace daedalus::kernels
