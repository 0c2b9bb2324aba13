// FP8 and FP4 quantization: formats, scale from amax, quantized operands at every granularity the
// recipes use. The facts (formats, block shapes, which GEMM quantizes what along which axis) are in
// shared/design/NUMERICS.md; the element codecs are autograd/dtype_codec.h.
//
// Convention: a quantized operand is 2-d [rows, cols] with cols the GEMM's reduction axis K, the
// way cuBLASLt's TN FP8 GEMMs want both operands (K-major). Quantization blocks of the 1xN kinds
// run along cols. Quantizing along the other axis ("1x128 becomes 128x1" for Wgrad) is the same
// call on a transposed view: quantize(x.t(), ...).
//   q = cast(x * scale), scale_inv = 1 / scale stored per block; dequantize: x ≈ q * scale_inv.
#pragma once

#include <cstdint>
#include <deque>
#include <string_view>

#include "autograd/tensor.h"

namespace daedalus::fp8 {

enum class Format : uint8_t { e4m3, e5m2, e2m1 };
DType dtype_of(Format f);     // fp8e4m3 / fp8e5m2 / fp4e2m1
double max_finite(Format f);  // 448 / 57344 / 6
std::string_view format_name(Format f);

enum class Granularity : uint8_t {
  tensor,         // one scale                                      scale_inv [1]
  row,            // one scale per row (token / output channel)     scale_inv [rows]
  tile_1x128,     // 1x128 tiles along cols                         scale_inv [rows, ceil(cols/128)]
  block_128x128,  // 128x128 blocks                                 scale_inv [ceil(rows/128), ceil(cols/128)]
  mx_1x32,        // OCP MX: 1x32 blocks, E8M0 (power-of-two) scales scale_inv [rows, ceil(cols/32)]
  nv_1x16,        // NVFP4: 1x16 blocks, E4M3 block scales x an FP32 tensor scale
                  //                                                scale_inv [rows, ceil(cols/16)]
  nv_16x16,       // NVFP4 weights: 16x16 blocks, same two levels    scale_inv [ceil(rows/16), ceil(cols/16)]
};
// FP4 (E2M1) goes with mx_1x32 (MXFP4), nv_1x16 and nv_16x16 (NVFP4), and the NVFP4 granularities
// only with E2M1. mx_1x32 scales follow the element format: E4M3 (MXFP8) rounds them UP, as
// Transformer Engine does; E2M1 (MXFP4) uses OCP MX v1.0's rule, rounded DOWN (format.h).
bool is_nvfp4(Granularity g);
std::string_view granularity_name(Granularity g);
int64_t block_rows(Granularity g, int64_t rows);  // rows covered by one scale (tensor: all rows)
int64_t block_cols(Granularity g, int64_t cols);  // cols covered by one scale

struct ScaleOptions {
  int margin = 0;             // scale divided by 2^margin (headroom)
  bool power_of_two = false;  // round the scale DOWN to a power of two (mx_1x32 always does)
  // Gradients may round stochastically (fp8/format.h) instead of to nearest even: element (r, c)
  // draws stochastic_word(seed, r * cols + c), so the result is deterministic for a seed and does
  // not depend on the thread count. Scales are unaffected.
  bool stochastic_rounding = false;
  uint64_t seed = 0;
};

// The one function that turns an amax into a scale, for every kernel and every test reference:
// scale = max_finite(format) / amax / 2^margin, rounded down to a power of two when asked;
// amax = 0 gives 1; a non-finite amax gives 1 too (the NaN/inf is counted by the statistics and
// propagates through the cast, never hidden behind a finite scale).
float scale_from_amax(float amax, Format format, const ScaleOptions& options = {});

// MX (E8M0) inverse scale of a 1x32 block. FP8 formats: rounded UP to a power of two (NUMERICS.md,
// as TE's MXFP8 and cuBLASLt's VEC32_UE8M0 do): 2^ceil(log2(amax / max_finite)), so no element
// saturates. E2M1: OCP MX v1.0's 2^(floor(log2 amax) - 2), which may saturate the top binade
// (fp8/format.h compute_mx_scale_inv_floor). amax = 0 gives 1; the result is clamped to E8M0's
// range [2^-127, 2^127].
float mx_scale_inv_from_amax(float amax, Format format);

struct QuantizedTensor {
  Tensor data;       // [rows, cols] FP8, or FP4 codes one per byte (contiguous)
  Tensor scale_inv;  // fp32, shape per Granularity above, contiguous row-major (block (i, j) at i * nbc + j);
                     // cuBLASLt's layouts (1x128 M-fastest, 128x128 padded) are the GEMM's to make.
                     // NVFP4: the E4M3 block decode scales' values; MX: the E8M0 scales' values
  Granularity granularity = Granularity::tensor;
  Format format = Format::e4m3;
  float tensor_scale_inv = 1.0f;  // NVFP4's second level, 1 / S (format.h); 1 for every other granularity

  int64_t rows() const { return data.size(0); }
  int64_t cols() const { return data.size(1); }
  Tensor dequantize() const;  // fp32 [rows, cols]: q * scale_inv of its block (NVFP4: then * tensor_scale_inv)
};

// x [rows, cols] fp32 or bf16, any strides. With `scale_inv` given (delayed scaling: a tensor
// scale from the amax history), granularity must be tensor and that scale is used as is.
QuantizedTensor quantize(const Tensor& x, Granularity granularity, Format format, const ScaleOptions& options = {});
QuantizedTensor quantize_with_scale(const Tensor& x, float scale, Format format);

// Zero-pads an operand to [rows, cols] (each >= its own; any device) for GEMMs with alignment rules
// (cuBLASLt: M, N multiples of 8, K of 16 or 128): the FP8 data gets zero rows/columns (code 0x00
// is +0 in both formats), new scale blocks get scale_inv 1. This equals quantizing the zero-padded
// high-precision tensor: zeros change no block's amax, so every existing code and scale stays.
QuantizedTensor pad_quantized(const QuantizedTensor& q, int64_t rows, int64_t cols);

// q(xᵀ) from q = quantize(x, ...) alone, for the granularities where quantizing the transpose gives
// exactly the transposed codes and scales (transposes_exactly): tensor (one amax over the same
// elements) and block_128x128 (block (i, j) of xᵀ holds the elements of block (j, i) of x, so the
// same amax, scale and codes; scale_inv is transposed too). Row, 1x128 and 1x32 blocks run along
// rows and do not transpose. Stochastic rounding does not either (its random words follow the
// element index r * cols + c): the caller rules it out. Any device.
bool transposes_exactly(Granularity g);
QuantizedTensor transpose_quantized(const QuantizedTensor& q);

// quantize(q.dequantize().t(), granularity, format, options): the Wgrad operand q(Xqᵀ) made from
// the q(X) that Fprop used (its cached FP8 copy, or X quantized again). With 1x128 tiles on both
// sides it is fused — on CUDA one kernel, on the CPU one pass per 128x128 block (stochastic
// rounding excepted) — reading the FP8 codes and forming the dequantized values on the fly, with
// no fp32 copy of X written and read back; every other case runs the composition. The result is
// the same bits either way.
QuantizedTensor requantize_transposed(const QuantizedTensor& q, Granularity granularity, Format format,
                                      const ScaleOptions& options = {});

// quantize(kernels::swiglu(gate, up), tile_1x128, format, options): the down projection's Fprop
// operand straight from the SwiGLU's inputs (gate, up [rows, cols], one float dtype). On CUDA one
// kernel reads gate and up and writes only the FP8 codes and scales (h is never stored); on the
// CPU the composition. The same bits either way.
QuantizedTensor swiglu_quantize(const Tensor& gate, const Tensor& up, Format format, const ScaleOptions& options = {});

// dequantize() in BF16, for the FP4 GEMM emulation: every FP4 value times its block scale is exact
// in BF16 (at most 2 + 4 significant bits, and within BF16's exponent range: E4M3 scales in [2^-9,
// 448], E8M0 scales from the OCP rule at most 2^125), so this is q * scale_inv of each element
// exactly, before NVFP4's tensor_scale_inv (which the GEMM applies to its FP32 result). FP4 only.
Tensor fp4_scaled_values_bf16(const QuantizedTensor& q);

// Delayed scaling (TE DelayedScaling): the scale for step t comes from the max of the amaxes of
// the last `length` steps, and this step's amax is recorded after quantizing.
class AmaxHistory {
 public:
  explicit AmaxHistory(int length = 16) : length_(length) {}
  void push(float amax);
  float amax() const;  // max over the history (0 when empty)
  const std::deque<float>& values() const { return values_; }

 private:
  int length_;
  std::deque<float> values_;
};

}  // namespace daedalus::fp8
