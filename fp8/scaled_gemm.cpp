// Scaled FP8 GEMM: operand checks, the device dispatch, and the CPU emulation.
//
//   y [M, N] fp32 = dequantize(a [M, K]) · dequantize(b [N, K])ᵀ
//
// CPU, exact accumulator (the default). FP8 values are exact in BF16 (E4M3/E5M2 significands fit
// BF16's 8 bits, their exponents its range), so each operand's data is cast to BF16 once and the
// products run through oneDNN's BF16 GEMM with FP32 accumulation:
//   - tensor × tensor, row × row: the scales do not vary along K, so one GEMM over all of K, then
//     y[m, n] *= scale_inv_a[m] * scale_inv_b[n] (tensor: a scalar, folded into the GEMM's alpha);
//   - 1x128 / 128x128 / 1x32 pairs: one GEMM per K block kb (a slice of both operands, read in
//     place), partial[m, n] = Σ_{k in kb} qa[m, k] qb[n, k] — every product exact in FP32, the
//     ≤ 128-term sum rounded in FP32 like the tensor core's output after DeepSeek's promotion —
//     then y[m, n] += partial[m, n] * (sa[m, kb] * sb[n, kb]), blocks in K order (deterministic).
//     The last block is short when K is not a multiple of the block width.
//   Rows are processed in panels that bound the partial's memory; panels are large because
//   oneDNN's K = 128 GEMMs lose efficiency on few rows (measured: 128-row panels ran at 190
//   GFLOP/s, whole 2048-row panels at 280, against 420 for one BF16 GEMM over all of K).
//
// CPU, limited accumulator (Accumulator::mantissa_bits > 0, for ablations; plain loops, OpenMP
// over rows). Within each group of promote_every products along K (all of K when 0) the running
// sum is kept in a float truncated toward zero to mantissa_bits explicit mantissa bits after every
// addition: s = trunc(s + p), the addition itself exact (done in double). Truncation, not
// rounding: the Hopper FP8 MMA aligns the addends to the largest exponent and drops the bits
// shifted out (DeepSeek-V3 §3.3.2 "retains around 14 bits"; the analyses of Hopper's fp8 MMA agree
// it truncates), so the error is biased toward zero and grows with K — what promotion cures. Each
// group's sum is then added into an exact FP32 accumulator: times sa * sb when the group lies in
// one scale block (DeepSeek's promotion: the scales are applied on the CUDA cores); when a group
// spans several scale blocks (promote_every = 0 or larger than the block with block scales) there
// is no single scale to apply at promotion, so each product is dequantized (qa qb · sa sb, in FP32)
// before it enters the limited accumulator.
//
// CPU, FP4 operands (the nvfp4 / mxfp4 / fp4_experts recipes; exact accumulation only). Each FP4
// operand becomes its values times their block scales in BF16, exactly (fp4_scaled_values_bf16:
// 6 significant bits at most), so two FP4 operands are ONE BF16 GEMM over all of K with FP32
// accumulation, times NVFP4's tensor scales (y *= tensor_scale_inv_a * tensor_scale_inv_b, cuBLASLt's
// alpha): the products the block-scaled tensor core forms, summed in another order. An FP8 1x128
// operand against an MXFP4 weight (fp4_experts' Fprop) runs the blocked path below with the FP4
// operand's scales folded in (its scale_inv 1 per 128-block).
//
// CUDA: cuBLASLt (fp8/cuda/), exact accumulation only; operands zero-padded to cuBLASLt's
// alignment when needed (pad_quantized), mx_1x32 emulated in fp32 (no Hopper GEMM takes it).
#include "fp8/scaled_gemm.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/kernels/copy.h"
#include "autograd/kernels/cpu_clones.h"
#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/gemm.h"
#include "autograd/kernels/strided.h"

#if DAEDALUS_WITH_CUDA
#include "fp8/cuda/scaled_gemm_cuda.h"
#endif

namespace daedalus::fp8 {

namespace {

constexpr const char* kOp = "scaled_gemm";

// Rows per panel of the blocked exact path: its fp32 partial [panel, N] takes at most kPanelBytes
// (more rows when N is so wide that fewer than kMinPanelRows would fit).
constexpr int64_t kPanelBytes = int64_t(16) << 20;
constexpr int64_t kMinPanelRows = 256;

bool is_supported_pair(const QuantizedTensor& qa, const QuantizedTensor& qb) {
  using G = Granularity;
  const G a = qa.granularity, b = qb.granularity;
  const bool fp4_a = qa.format == Format::e2m1, fp4_b = qb.format == Format::e2m1;
  if (fp4_a || fp4_b) {  // NVFP4 x NVFP4 (never 16x16 x 16x16), MXFP4 x MXFP4, FP8 1x128 x MXFP4 weights
    if (is_nvfp4(a) && is_nvfp4(b)) return !(a == G::nv_16x16 && b == G::nv_16x16);
    if (a == G::mx_1x32 && b == G::mx_1x32) return fp4_a && fp4_b;
    return a == G::tile_1x128 && !fp4_a && b == G::mx_1x32;
  }
  if (a == G::tensor || a == G::row || a == G::mx_1x32) return a == b;
  if (a == G::tile_1x128) return b == G::tile_1x128 || b == G::block_128x128;
  return b == G::tile_1x128;  // a is block_128x128
}

std::string pair_name(const QuantizedTensor& a, const QuantizedTensor& b) {
  return fmt::format("a {} {} × b {} {}", granularity_name(a.granularity), format_name(a.format),
                     granularity_name(b.granularity), format_name(b.format));
}

// The expected scale_inv shape of an operand (fp8/quantized.h).
Shape scale_shape(const QuantizedTensor& q) {
  const int64_t r = q.rows(), c = q.cols();
  const auto ceil_div = [](int64_t x, int64_t d) { return (x + d - 1) / d; };
  switch (q.granularity) {
    case Granularity::tensor: return {1};
    case Granularity::row: return {r};
    case Granularity::tile_1x128: return {r, ceil_div(c, 128)};
    case Granularity::block_128x128: return {ceil_div(r, 128), ceil_div(c, 128)};
    case Granularity::mx_1x32: return {r, ceil_div(c, 32)};
    case Granularity::nv_1x16: return {r, ceil_div(c, 16)};
    case Granularity::nv_16x16: return {ceil_div(r, 16), ceil_div(c, 16)};
  }
  return {};
}

void check_operand(const QuantizedTensor& q, std::string_view name) {
  DAEDALUS_CHECK(q.data.defined() && q.scale_inv.defined(), "{}: {} is not quantized (undefined data or scale_inv)",
                 kOp, name);
  DAEDALUS_CHECK(q.data.dim() == 2, "{}: {} must be 2-d [rows, K], got {}", kOp, name, shape_str(q.data.shape()));
  DAEDALUS_CHECK(q.data.dtype() == dtype_of(q.format), "{}: {} data is {} but its format says {}", kOp, name,
                 dtype_name(q.data.dtype()), format_name(q.format));
  kernels::check_dtype(kOp, q.scale_inv, std::string(name) + ".scale_inv", DType::f32);
}

void check_operands(const QuantizedTensor& a, const QuantizedTensor& b, const Accumulator& acc) {
  check_operand(a, "a");
  check_operand(b, "b");
  kernels::common_device(kOp, {&a.data, &b.data, &a.scale_inv, &b.scale_inv});
  DAEDALUS_CHECK(a.cols() == b.cols(), "{}: a {} and b {} must share K (y = a·bᵀ, both [rows, K])", kOp,
                 shape_str(a.data.shape()), shape_str(b.data.shape()));
  DAEDALUS_CHECK(is_supported_pair(a, b),
                 "{}: unsupported scale granularities {}: the pairs are tensor × tensor, row × row, "
                 "tile_1x128 × block_128x128, block_128x128 × tile_1x128, tile_1x128 × tile_1x128 and "
                 "mx_1x32 × mx_1x32 (never block_128x128 × block_128x128; no mixed per-tensor / per-row); FP4: "
                 "nv_1x16 × nv_1x16 / nv_16x16 (either way), mx_1x32 e2m1 × mx_1x32 e2m1, tile_1x128 × mx_1x32 e2m1",
                 kOp, pair_name(a, b));
  DAEDALUS_CHECK(acc.mantissa_bits == 0 || (a.format != Format::e2m1 && b.format != Format::e2m1),
                 "{}: {}: FP4 GEMMs emulate exact FP32 accumulation only (accumulator mantissa_bits {})", kOp,
                 pair_name(a, b), acc.mantissa_bits);
  DAEDALUS_CHECK(!(a.format == Format::e5m2 && b.format == Format::e5m2),
                 "{}: {}: E5M2 × E5M2 is rejected (cuBLASLt FP8 GEMMs need at least one E4M3 operand)", kOp,
                 pair_name(a, b));
  DAEDALUS_CHECK(acc.mantissa_bits >= 0 && acc.mantissa_bits <= 23,
                 "{}: accumulator mantissa_bits must be in [0, 23] (0 = exact fp32), got {}", kOp, acc.mantissa_bits);
  DAEDALUS_CHECK(acc.promote_every >= 0, "{}: accumulator promote_every must be >= 0 (0 = never), got {}", kOp,
                 acc.promote_every);
  DAEDALUS_CHECK(acc.chunk >= 1, "{}: accumulator chunk must be >= 1, got {}", kOp, acc.chunk);
}

// An operand's scale_invs on the host, indexed by (row, K block).
struct Scales {
  std::vector<float> values;
  Granularity granularity;
  int64_t row_block = 1;  // rows per scale
  int64_t k_blocks = 1;   // scale columns

  Scales(const QuantizedTensor& q, std::string_view name) : granularity(q.granularity) {
    DAEDALUS_CHECK(q.scale_inv.shape() == scale_shape(q), "{}: {} ({} {}) needs scale_inv {}, got {}", kOp, name,
                   granularity_name(q.granularity), shape_str(q.data.shape()), shape_str(scale_shape(q)),
                   shape_str(q.scale_inv.shape()));
    values = q.scale_inv.to_vector<float>();
    row_block = granularity == Granularity::block_128x128 ? 128 : (granularity == Granularity::nv_16x16 ? 16 : 1);
    k_blocks = q.scale_inv.dim() == 2 ? q.scale_inv.size(1) : 1;
  }

  // The scale_inv of row `r` in K block `kb` (K blocks of this operand's width).
  float at(int64_t r, int64_t kb) const {
    switch (granularity) {
      case Granularity::tensor: return values[0];
      case Granularity::row: return values[static_cast<size_t>(r)];
      default: return values[static_cast<size_t>((r / row_block) * k_blocks + kb)];
    }
  }
};

// Width along K of one scale block (tensor and row: all of K).
int64_t k_block_width(Granularity g, int64_t K) {
  switch (g) {
    case Granularity::mx_1x32: return 32;
    case Granularity::nv_1x16:
    case Granularity::nv_16x16: return 16;
    case Granularity::tile_1x128:
    case Granularity::block_128x128: return 128;
    default: return std::max<int64_t>(K, 1);
  }
}

// ---- exact accumulation -------------------------------------------------------------------------

// tensor × tensor and row × row: one GEMM over all of K, the scales applied to its fp32 result.
void cpu_gemm_folded(const Tensor& a16, const Tensor& b16, const Scales& sa, const Scales& sb, const Tensor& y) {
  if (sa.granularity == Granularity::tensor) {
    kernels::gemm(a16, b16.t(), y, /*alpha=*/double(sa.values[0] * sb.values[0]));
    return;
  }
  kernels::gemm(a16, b16.t(), y);
  const int64_t M = y.size(0), N = y.size(1);
  float* py = y.data<float>();
  const float* fa = sa.values.data();
  const float* fb = sb.values.data();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    float* row = py + m * N;
    for (int64_t n = 0; n < N; ++n) row[n] *= fa[m] * fb[n];
  }
}

// Block scales: one GEMM per (row panel, K block), its partial scaled and added in K order.
void cpu_gemm_blocked(const Tensor& a16, const Tensor& b16, const Scales& sa, const Scales& sb, const Tensor& y) {
  const int64_t M = a16.size(0), N = b16.size(0), K = a16.size(1);
  const int64_t kw = k_block_width(sa.granularity, K);  // equal for both operands of a supported pair
  const int64_t n_kb = (K + kw - 1) / kw;
  const int64_t panel = std::min(M, std::max(kMinPanelRows, kPanelBytes / (4 * std::max<int64_t>(N, 1))));
  float* py = y.data<float>();
  std::fill(py, py + M * N, 0.0f);
  Tensor partial = Tensor::empty({panel, N});
  std::vector<float> fb(static_cast<size_t>(N));
  for (int64_t m0 = 0; m0 < M; m0 += panel) {
    const int64_t rows = std::min(panel, M - m0);
    const Tensor part = partial.slice(0, 0, rows);
    const Tensor a_rows = a16.slice(0, m0, m0 + rows);
    for (int64_t kb = 0; kb < n_kb; ++kb) {
      const int64_t k0 = kb * kw, k1 = std::min(K, k0 + kw);
      kernels::gemm(a_rows.slice(1, k0, k1), b16.slice(1, k0, k1).t(), part);
      for (int64_t n = 0; n < N; ++n) fb[static_cast<size_t>(n)] = sb.at(n, kb);
      const float* pp = part.data<float>();
      const float* pfb = fb.data();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < rows; ++i) {
        const float fa = sa.at(m0 + i, kb);
        const float* src = pp + i * N;
        float* dst = py + (m0 + i) * N;
        for (int64_t n = 0; n < N; ++n) dst[n] += src[n] * (fa * pfb[n]);
      }
    }
  }
}

// ---- limited-precision accumulator (ablation) ---------------------------------------------------

// x truncated toward zero to `bits` explicit mantissa bits (clears the low 52 - bits bits of the double).
double truncate_mantissa(double x, int bits) {
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  u &= ~((uint64_t(1) << (52 - bits)) - 1);
  std::memcpy(&x, &u, sizeof x);
  return x;
}

void cpu_gemm_limited(const Tensor& a, const Tensor& b, const Scales& sa, const Scales& sb, const Accumulator& acc,
                      const Tensor& y) {
  const int64_t M = a.size(0), N = b.size(0), K = a.size(1);
  const int64_t kw = k_block_width(sa.granularity, K);
  const int64_t group = acc.promote_every > 0 ? std::min<int64_t>(acc.promote_every, K) : K;
  // Every group inside one scale block (always so for per-tensor and per-row scales)?
  const bool scale_at_promotion =
      sa.granularity == Granularity::tensor || sa.granularity == Granularity::row || (group <= kw && kw % group == 0);
  const int bits = acc.mantissa_bits;
  const Tensor af = kernels::cast(a, DType::f32), bf = kernels::cast(b, DType::f32);
  const float* pa = af.data<float>();
  const float* pb = bf.data<float>();
  float* py = y.data<float>();
#pragma omp parallel for schedule(dynamic)
  for (int64_t m = 0; m < M; ++m) {
    const float* ar = pa + m * K;
    for (int64_t n = 0; n < N; ++n) {
      const float* br = pb + n * K;
      float total = 0.0f;  // the exact FP32 accumulator
      for (int64_t g0 = 0; g0 < K; g0 += group) {
        const int64_t g1 = std::min(K, g0 + group);
        float s = 0.0f;  // the tensor core's running sum
        for (int64_t c0 = g0; c0 < g1; c0 += acc.chunk) {
          // `chunk` products summed exactly (FP8 significands have at most 4 bits: each product fits
          // a float, a few of them a double), then one truncating addition to the running sum.
          double c = 0;
          for (int64_t k = c0; k < std::min(g1, c0 + acc.chunk); ++k) {
            float p = ar[k] * br[k];
            if (!scale_at_promotion) p *= sa.at(m, k / kw) * sb.at(n, k / kw);
            c += double(p);
          }
          s = float(truncate_mantissa(double(s) + c, bits));
        }
        const float scale = scale_at_promotion ? sa.at(m, g0 / kw) * sb.at(n, g0 / kw) : 1.0f;
        total += s * scale;
      }
      py[m * N + n] = total;
    }
  }
}

// One FP8 code -> the BF16 bits of its value, exactly what codec::float_to_bf16 of the codec's
// decode gives (every FP8 value is a BF16 value: at most 3 mantissa bits, exponents inside BF16's
// range), with integer operations and selects only, so that loops over it vectorize. kMant
// mantissa bits, exponent bias kBias; kInf: the all-ones exponent holds inf (mantissa 0) and NaNs
// (E5M2), else only the all-ones code is NaN (E4M3).
template <int kMant, int kBias, bool kInf>
[[gnu::always_inline]] inline uint16_t fp8_bf16_bits(uint8_t code) {
  const uint32_t sign = uint32_t(code & 0x80u) << 8, mag = code & 0x7Fu;
  // Normal: the exponent and mantissa fields move up into BF16's and the bias changes.
  const uint32_t normal = (mag << (7 - kMant)) + (uint32_t(127 - kBias) << 7);
  // Subnormal (exponent field 0, mantissa m = mag): m * 2^(1 - bias - kMant), normalized by m's
  // highest set bit p: exponent 1 - bias - kMant + p, mantissa (m - 2^p) shifted up. The selects
  // run p upwards, so the last one taken is m's highest bit; m = 0 stays 0.
  uint32_t subnormal = 0;
  for (int p = 0; p < kMant; ++p)
    subnormal =
        (mag >> p) != 0 ? (uint32_t(127 + 1 - kBias - kMant + p) << 7) | ((mag - (1u << p)) << (7 - p)) : subnormal;
  uint32_t bits = mag < (1u << kMant) ? subnormal : normal;
  if constexpr (kInf) {
    const uint32_t top = 0x7Fu & ~((1u << kMant) - 1u);  // exponent all ones, mantissa 0
    bits = mag == top ? 0x7F80u : bits;
    bits = mag > top ? 0x7FC0u : bits;
  } else {
    bits = mag == 0x7Fu ? 0x7FC0u : bits;
  }
  return uint16_t(sign | bits);
}

DAEDALUS_CPU_CLONES void e4m3_to_bf16_span(const uint8_t* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp8_bf16_bits<3, 7, false>(in[i]);
}
DAEDALUS_CPU_CLONES void e5m2_to_bf16_span(const uint8_t* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp8_bf16_bits<2, 15, true>(in[i]);
}

}  // namespace

Tensor fp8_to_bf16(const Tensor& q) {
  DAEDALUS_CHECK(q.device().is_cpu() && (q.dtype() == DType::f8e4m3 || q.dtype() == DType::f8e5m2),
                 "fp8_to_bf16: expected FP8 codes on the CPU, got {}", q.describe());
  const Tensor src = q.contiguous();
  Tensor out = Tensor::empty(q.shape(), DType::bf16);
  const uint8_t* in = static_cast<const uint8_t*>(src.data_ptr());
  uint16_t* o = static_cast<uint16_t*>(out.data_ptr());
  const auto span = q.dtype() == DType::f8e4m3 ? e4m3_to_bf16_span : e5m2_to_bf16_span;
  constexpr int64_t kChunk = int64_t(1) << 16;
  const int64_t n = src.numel(), chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= cpu::kParallelThreshold)
  for (int64_t c = 0; c < chunks; ++c) span(in + c * kChunk, o + c * kChunk, std::min(kChunk, n - c * kChunk));
  return out;
}

namespace {

// An FP4 operand's scales, once folded into its BF16 values: scale_inv 1 per 128-wide K block, so
// that the blocked path applies only the other operand's 1x128 scales.
QuantizedTensor folded_scales(const QuantizedTensor& q) {
  QuantizedTensor f = q;
  f.granularity = Granularity::tile_1x128;
  f.scale_inv = Tensor::ones({q.rows(), (q.cols() + 127) / 128}, DType::f32);
  return f;
}

Tensor cpu_scaled_gemm(const QuantizedTensor& a, const QuantizedTensor& b, const Accumulator& acc) {
  const Scales sa(a, "a"), sb(b, "b");
  const int64_t M = a.rows(), N = b.rows(), K = a.cols();
  Tensor y = Tensor::empty({M, N});
  if (M == 0 || N == 0) return y;
  if (K == 0) {
    y.zero_();
    return y;
  }
  if (b.format == Format::e2m1) {
    const Tensor b16 = fp4_scaled_values_bf16(b);
    if (a.format == Format::e2m1) {  // one GEMM over all of K; NVFP4's tensor scales as alpha
      kernels::gemm(fp4_scaled_values_bf16(a), b16.t(), y, double(a.tensor_scale_inv * b.tensor_scale_inv));
    } else {  // FP8 1x128 activations x MXFP4 weights (fp4_experts)
      cpu_gemm_blocked(fp8_to_bf16(a.data), b16, sa, Scales(folded_scales(b), "b"), y);
    }
    return y;
  }
  if (acc.mantissa_bits > 0) {
    cpu_gemm_limited(a.data, b.data, sa, sb, acc, y);
    return y;
  }
  const Tensor a16 = fp8_to_bf16(a.data), b16 = fp8_to_bf16(b.data);
  if (a.granularity == Granularity::tensor || a.granularity == Granularity::row) {
    cpu_gemm_folded(a16, b16, sa, sb, y);
  } else {
    cpu_gemm_blocked(a16, b16, sa, sb, y);
  }
  return y;
}

#if DAEDALUS_WITH_CUDA
int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The K alignment cuBLASLt needs for a pair: 128 with block scales (one scale per 128 of K), else
// 16 (16-byte leading dimensions of FP8).
int64_t k_alignment(Granularity g) {
  return g == Granularity::tile_1x128 || g == Granularity::block_128x128 ? 128 : 16;
}

// scaled_gemm on CUDA for any shapes: operands zero-padded to cuBLASLt's alignment (pad_quantized:
// the same codes and scales, zeros add nothing to any dot product), the result cut back to [M, N].
// mx_1x32 has no Hopper GEMM (VEC32_UE8M0 is Blackwell's): emulated by dequantizing both operands
// (exact in fp32: an FP8 value times a power of two) and one fp32 cuBLASLt GEMM (no TF32); only the
// summation order differs from the CPU's per-32-block sums.
Tensor cuda_scaled_gemm_any_shape(const QuantizedTensor& a, const QuantizedTensor& b) {
  DAEDALUS_CHECK(a.format != Format::e2m1 && b.format != Format::e2m1,
                 "{}: FP4 operands are emulated on the CPU only (docs/gpu.md)", kOp);
  if (a.granularity == Granularity::mx_1x32) return kernels::matmul(a.dequantize(), b.dequantize().t());
  const int64_t M = a.rows(), N = b.rows(), K = a.cols();
  const int64_t Mp = round_up(M, 8), Np = round_up(N, 8), Kp = round_up(K, k_alignment(a.granularity));
  if (Mp == M && Np == N && Kp == K) return cuda_scaled_gemm(a, b);
  const Tensor y = cuda_scaled_gemm(pad_quantized(a, Mp, Kp), pad_quantized(b, Np, Kp));
  return Mp == M && Np == N ? y : y.slice(0, 0, M).slice(1, 0, N).contiguous();
}
#endif

}  // namespace

Tensor grouped_scaled_gemm(const std::vector<QuantizedTensor>& a, const std::vector<QuantizedTensor>& b,
                           const std::vector<int64_t>& offsets, const Accumulator& accumulator) {
  constexpr const char* op = "grouped_scaled_gemm";
  const size_t groups = b.size();
  DAEDALUS_CHECK(groups >= 1 && a.size() == groups && offsets.size() == groups + 1 && offsets.front() == 0,
                 "{}: {} a operands, {} b operands and {} offsets: expected G >= 1, G and G + 1 offsets from 0", op,
                 a.size(), groups, offsets.size());
  const int64_t rows = offsets.back(), N = b[0].rows();
  const Device device = b[0].data.device();
  bool plain_loop = device.is_cpu();
  for (size_t g = 0; g < groups; ++g) {
    DAEDALUS_CHECK(offsets[g] <= offsets[g + 1], "{}: offsets decrease at group {}", op, g);
    DAEDALUS_CHECK(b[g].rows() == N && b[g].data.device() == device,
                   "{}: b[{}] {} must have N = {} rows on {} like b[0]", op, g, b[g].data.describe(), N, device.str());
    if (offsets[g] == offsets[g + 1]) continue;
    DAEDALUS_CHECK(a[g].data.defined() && a[g].rows() == offsets[g + 1] - offsets[g],
                   "{}: a[{}] must hold the group's {} rows", op, g, offsets[g + 1] - offsets[g]);
    check_operands(a[g], b[g], accumulator);
    plain_loop = plain_loop || a[g].granularity == Granularity::mx_1x32;
  }
  if (plain_loop) {  // the CPU reference (and CUDA mx_1x32): one scaled_gemm per non-empty group
    Tensor y = Tensor::zeros({rows, N}, DType::f32, device);
    for (size_t g = 0; g < groups; ++g)
      if (offsets[g] < offsets[g + 1])
        y.slice(0, offsets[g], offsets[g + 1]).copy_(scaled_gemm(a[g], b[g], accumulator));
    return y;
  }
  DAEDALUS_CHECK(accumulator.mantissa_bits == 0,
                 "{}: the limited-precision accumulator (mantissa_bits {}) is emulated on the CPU only; "
                 "on CUDA, cuBLASLt accumulates exactly",
                 op, accumulator.mantissa_bits);
#if DAEDALUS_WITH_CUDA
  // cuBLASLt's K and N alignment, by zero padding (M is the grouped kernel's to handle).
  std::vector<QuantizedTensor> ap(groups), bp(groups);
  const int64_t Np = round_up(N, 8);
  for (size_t g = 0; g < groups; ++g) {
    const int64_t Kp = round_up(b[g].cols(), k_alignment(b[g].granularity));
    if (offsets[g] == offsets[g + 1]) {
      bp[g] = empty_group_operand(Np, Kp, device);
      continue;
    }
    bp[g] = pad_quantized(b[g], Np, Kp);
    ap[g] = pad_quantized(a[g], a[g].rows(), Kp);
  }
  const Tensor y = cuda_grouped_scaled_gemm(ap, bp, offsets);
  return Np == N ? y : y.slice(1, 0, N).contiguous();
#else
  kernels::throw_built_without_cuda(op);
#endif
}

QuantizedTensor empty_group_operand(int64_t rows, int64_t cols, Device device) {
  QuantizedTensor q;
  q.data = Tensor::empty({1, 1}, DType::f8e4m3, device).expand({rows, cols});
  q.scale_inv = Tensor::ones({1}, DType::f32, device);
  return q;
}

Tensor scaled_gemm(const QuantizedTensor& a, const QuantizedTensor& b, const Accumulator& accumulator) {
  check_operands(a, b, accumulator);
  switch (a.data.device().type) {
    case DeviceType::cpu: return cpu_scaled_gemm(a, b, accumulator);
    case DeviceType::cuda:
      DAEDALUS_CHECK(accumulator.mantissa_bits == 0,
                     "{}: the limited-precision accumulator (mantissa_bits {}) is emulated on the CPU only; "
                     "on CUDA, cuBLASLt accumulates exactly",
                     kOp, accumulator.mantissa_bits);
#if DAEDALUS_WITH_CUDA
      return cuda_scaled_gemm_any_shape(a, b);
#else
      kernels::throw_built_without_cuda(kOp);
#endif
  }
  kernels::throw_not_on_device(kOp, a.data.device());
}

}  // namespace daedalus::fp8
