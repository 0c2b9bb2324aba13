// The random Hadamard transform (RHT) of NVIDIA's NVFP4 recipe: Wgrad's two operands are multiplied
// along the token axis by the same orthogonal 16x16 matrix before they are quantized, which spreads
// an outlier over 16 values (smaller block amaxes) and cancels in the product:
//   a = dYᵀ [N, M], b = Xᵀ [K, M], dW = a bᵀ;  with each row's 16-chunks r -> H r (a -> a Hᵀ):
//   (a Hᵀ)(b Hᵀ)ᵀ = a Hᵀ H bᵀ = a bᵀ   (block-diagonal H over the M axis, orthogonal).
// H = Had16 · diag(s) / 4: Had16 the Sylvester Hadamard matrix (Had[i][j] = (-1)^popcount(i & j)),
// s 16 random signs drawn from `seed` (bit 31 of Philox words 0..15, fp8/format.h stochastic_word),
// so HᵀH = diag(s) Had16² diag(s) / 16 = I. It acts on each row's consecutive 16-column chunks.
#pragma once

#include <array>
#include <cstdint>

#include "autograd/tensor.h"

namespace daedalus::fp8 {

// The 16 signs (+1 / -1) of the transform keyed by `seed`.
std::array<float, 16> hadamard_signs(uint64_t seed);

// x [rows, cols] (fp32 or bf16, any strides, CPU) -> y [rows, round_up(cols, 16)] fp32, each chunk
// of 16 columns y_c = H x_c (columns past `cols` read as zero). Computed in FP32 as diag(s), a fast
// Walsh-Hadamard transform (4 butterfly stages: every output a sum of 16 signed inputs, the same
// order everywhere) and a multiplication by 1/4 (exact).
Tensor random_hadamard_16(const Tensor& x, uint64_t seed);

// The inverse, Hᵀ per chunk: y [rows, 16 n] -> x [rows, cols] (cols <= 16 n; the padding dropped).
Tensor inverse_random_hadamard_16(const Tensor& y, uint64_t seed, int64_t cols);

}  // namespace daedalus::fp8
