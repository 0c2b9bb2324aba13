// FP8 and FP4 numerics shared by the CPU quantizer, its CUDA twin and the tests: the scale arithmetic
// behind scale_from_amax / mx_scale_inv_from_amax, NVFP4's two-level scales and OCP MX's FP4 scale
// rule, the E8M0 scale codec (OCP MX), and stochastic rounding to E4M3 / E5M2 / E2M1 / BF16.
//
// Everything here is integer or IEEE double arithmetic (no libm, no rounding-mode dependence), so the
// functions are __host__ __device__ under nvcc and give the same bits on both. The facts (E8M0 bias
// 127, 0xFF = NaN, no zero) are in shared/design/NUMERICS.md; element codecs are dtype_codec.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "autograd/dtype_codec.h"

namespace daedalus::fp8 {

// ---- scale arithmetic ----------------------------------------------------------------------------

DAEDALUS_HD bool is_finite_float(float x) { return (codec::float_bits(x) & 0x7F800000u) != 0x7F800000u; }

DAEDALUS_HD uint64_t double_bits(double x) {
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
DAEDALUS_HD double bits_double(uint64_t u) {
  double x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// scale = max_finite / amax / 2^margin, computed in double and rounded once to float; with
// power_of_two the double is rounded DOWN to a power of two first (so amax * scale <= max_finite).
// amax = 0, negative or non-finite gives 1. The result is clamped to [2^-126, FLT_MAX] (2^127 for
// power_of_two) so that neither scale nor 1/scale is 0 or inf (a subnormal amax would overflow).
// |margin| must stay below ~900 (it is a few binades in practice).
DAEDALUS_HD float compute_scale(float amax, float max_finite, int margin, bool power_of_two) {
  if (!(amax > 0.0f) || !is_finite_float(amax)) return 1.0f;
  double s = double(max_finite) / double(amax);                               // in [1e-35, 1e50]: a normal double
  s *= bits_double(uint64_t(1023 - margin) << 52);                            // exact: times 2^-margin
  if (power_of_two) s = bits_double(double_bits(s) & 0xFFF0000000000000ull);  // floor to 2^k
  const double hi = power_of_two ? 1.7014118346046923e38 /* 2^127 */ : 3.4028234663852886e38 /* FLT_MAX */;
  const double lo = 1.1754943508222875e-38;  // 2^-126
  s = s > hi ? hi : (s < lo ? lo : s);
  return float(s);
}

// MX inverse scale: the smallest power of two 2^e with amax <= max_finite * 2^e (rounded UP, so no
// element saturates), e clamped to E8M0's range [-127, 127]. amax = 0 or non-finite gives 1.
DAEDALUS_HD float compute_mx_scale_inv(float amax, float max_finite) {
  if (!(amax > 0.0f) || !is_finite_float(amax)) return 1.0f;
  const uint64_t q = double_bits(double(amax) / double(max_finite));  // a normal double
  int e = int((q >> 52) & 0x7FF) - 1023;
  if (q & 0x000FFFFFFFFFFFFFull) e += 1;  // not a power of two: round up
  e = e < -127 ? -127 : (e > 127 ? 127 : e);
  // 2^-127 is a float subnormal (bit 22 of the mantissa); everything else is a normal.
  return e == -127 ? codec::bits_float(0x00400000u) : codec::bits_float(uint32_t(e + 127) << 23);
}

// OCP MX v1.0 (§6.3) inverse scale of a block: X = 2^(floor(log2 amax) - emax_elem), emax_elem the
// exponent of the element format's largest normal (E2M1: 6 = 1.5 * 2^2, emax_elem 2). Rounded DOWN,
// so the block's largest elements may saturate (E2M1: scaled magnitudes in [4, 8) round to at most
// 6). floor(log2 amax) is read off amax's bits (subnormals included); the result is clamped to
// E8M0's range [2^-127, 2^127]. amax = 0 gives 1; +inf is taken as FLT_MAX (2^127 before the
// clamp); NaN gives NaN (E8M0's 0xFF), so that a NaN in a block is never hidden behind a finite
// scale (FP4 codes cannot hold a NaN).
DAEDALUS_HD float compute_mx_scale_inv_floor(float amax, int emax_elem) {
  const uint32_t a = codec::float_bits(amax) & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return codec::bits_float(0x7FC00000u);
  if (a == 0) return 1.0f;
  int e;
  if (a >= 0x7F800000u) {
    e = 127;
  } else if ((a >> 23) != 0) {
    e = int(a >> 23) - 127;
  } else {  // subnormal: 2^-149 times the mantissa, whose highest set bit gives the floor
    e = -150;
    for (uint32_t m = a; m != 0; m >>= 1) ++e;
  }
  e -= emax_elem;
  e = e < -127 ? -127 : (e > 127 ? 127 : e);
  return e == -127 ? codec::bits_float(0x00400000u) : codec::bits_float(uint32_t(e + 127) << 23);
}

// ---- NVFP4 two-level scales ----------------------------------------------------------------------
// NVIDIA's NVFP4 (the NVFP4 pretraining paper, arXiv 2509.25149, and Transformer Engine's
// NVFP4BlockScaling): E2M1 values in 16-element blocks, each block with an E4M3 decode scale, the
// whole tensor with an FP32 scale that maps the tensor's amax onto 6 * 448 (the largest value
// block scale times element can reach). With S the tensor encode scale:
//   S        = 448 * 6 / amax(tensor)                       (FP32; 1 for amax 0, inf or NaN)
//   s_b      = e4m3( amax(block) * (S * (1/6)) )            (the stored block decode scale, RNE, saturating)
//   encode   = min(1 / (float(s_b) * (1 / S)), FLT_MAX)     (per block; FLT_MAX when s_b is 0)
//   q        = e2m1( x * encode )                           (RNE or stochastic, saturating)
//   x       ~= q * float(s_b) * (1 / S)                     (the GEMM applies 1 / S as its alpha)
// Every step is one FP32 operation in this order (Transformer Engine's, so that an emulation matches
// Blackwell's kernels bit for bit). A block whose decode scale underflows to 0 quantizes to zeros.

inline constexpr float kNvfp4TensorMax = 6.0f * 448.0f;  // E2M1 max times E4M3 max

DAEDALUS_HD float nvfp4_tensor_scale(float amax) { return compute_scale(amax, kNvfp4TensorMax, 0, false); }

DAEDALUS_HD fp8e4m3 nvfp4_block_scale(float block_amax, float tensor_scale) {
  return codec::float_to_e4m3(block_amax * (tensor_scale * (1.0f / 6.0f)));
}

DAEDALUS_HD float nvfp4_encode_scale(float block_scale, float tensor_scale) {
  const float r = 1.0f / (block_scale * (1.0f / tensor_scale));
  return r < 3.4028234663852886e38f ? r : 3.4028234663852886e38f;  // inf (s_b = 0) and NaN: FLT_MAX
}

// ---- E8M0 (OCP MX scale format) ------------------------------------------------------------------
// 8 exponent bits, bias 127, no sign, no mantissa, no zero: code c is 2^(c - 127); 0xFF is NaN.

enum class E8m0Rounding : uint8_t { down, up };  // toward zero / toward +inf, to a power of two

DAEDALUS_HD float e8m0_to_float(uint8_t code) {
  if (code == 0xFFu) return codec::bits_float(0x7FC00000u);
  if (code == 0u) return codec::bits_float(0x00400000u);  // 2^-127, a float subnormal
  return codec::bits_float(uint32_t(code) << 23);
}

// |x| rounded to a power of two in the given direction (the sign is ignored). Results below 2^-127
// (zero included) clip to 2^-127 (code 0); above 2^127 they clamp to 2^127 (0xFE) when saturating,
// else become NaN (0xFF), as +-inf do; NaN gives 0xFF. Matches cuda_fp8.h's __nv_cvt_float_to_e8m0.
DAEDALUS_HD uint8_t float_to_e8m0(float x, E8m0Rounding rounding, Fp8Overflow overflow = Fp8Overflow::saturate) {
  const uint32_t a = codec::float_bits(x) & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0xFFu;
  if (a == 0x7F800000u) return overflow == Fp8Overflow::saturate ? 0xFEu : 0xFFu;
  uint32_t code = a >> 23;
  const uint32_t mant = a & 0x7FFFFFu;
  if (code == 0) {
    // float subnormal (or zero), below 2^-126: rounds to 2^-127 except above 2^-127 rounding up.
    code = (rounding == E8m0Rounding::up && mant > 0x400000u) ? 1u : 0u;
  } else if (rounding == E8m0Rounding::up && mant != 0) {
    code += 1;
  }
  if (code == 0xFFu) code = overflow == Fp8Overflow::saturate ? 0xFEu : 0xFFu;
  return uint8_t(code);
}

// ---- stochastic rounding -------------------------------------------------------------------------
// Rounds to one of the two neighbouring representable values, up (away from zero) with probability
// equal to the fractional distance from the lower neighbour, so E[round(x)] = x (unbiased). `random`
// is one uniform 32-bit word (see stochastic_word); a value's distance is resolved to 2^-32 of its
// unit in the last place. NaN stays NaN; overflow follows `overflow` as in the nearest-even casts.

// Magnitude code like codec::fp8_encode_magnitude, rounding up with probability rem / 2^shift.
template <int kMant, int kBias>
DAEDALUS_HD uint32_t fp8_encode_magnitude_stochastic(uint32_t abs_bits, uint32_t random) {
  constexpr int kMinExp = 1 - kBias;
  int exp = int(abs_bits >> 23) - 127;
  uint32_t sig = abs_bits & 0x7FFFFFu;
  if (exp == -127) {
    exp = -126;
  } else {
    sig |= 0x800000u;
  }
  const int e_eff = exp > kMinExp ? exp : kMinExp;
  const int shift = 23 - kMant + (e_eff - exp);  // >= 23 - kMant >= 20
  const uint32_t units = shift >= 32 ? 0u : sig >> shift;
  const uint32_t rem = shift >= 32 ? sig : sig & ((1u << shift) - 1u);
  // Round up iff random < rem * 2^(32 - shift): probability rem / 2^shift (truncated beyond 32 bits).
  uint64_t threshold = 0;
  if (shift <= 32) {
    threshold = uint64_t(rem) << (32 - shift);
  } else if (shift < 64) {
    threshold = uint64_t(rem) >> (shift - 32);
  }
  const uint32_t rounded = units + (uint64_t(random) < threshold ? 1u : 0u);
  return uint32_t(((e_eff + kBias - 1) << kMant) + int(rounded));
}

DAEDALUS_HD fp8e4m3 float_to_e4m3_stochastic(float x, uint32_t random, Fp8Overflow overflow = Fp8Overflow::saturate) {
  return fp8e4m3{codec::fp8_encode<0x7Eu, 0x7Fu>(
      x, overflow, [random](uint32_t a) { return fp8_encode_magnitude_stochastic<3, 7>(a, random); })};
}

DAEDALUS_HD fp8e5m2 float_to_e5m2_stochastic(float x, uint32_t random, Fp8Overflow overflow = Fp8Overflow::saturate) {
  return fp8e5m2{codec::fp8_encode<0x7Bu, 0x7Cu>(
      x, overflow, [random](uint32_t a) { return fp8_encode_magnitude_stochastic<2, 15>(a, random); })};
}

// E2M1 (saturating; NaN gives +6 as in the nearest-even codec).
DAEDALUS_HD fp4e2m1 float_to_e2m1_stochastic(float x, uint32_t random) {
  return codec::e2m1_encode(x, [random](uint32_t a) { return fp8_encode_magnitude_stochastic<1, 1>(a, random); });
}

// BF16: add 16 random bits below the kept half and truncate (carries into the exponent are right:
// the largest finite BF16 may round up to inf, as IEEE overflow does).
DAEDALUS_HD bf16 float_to_bf16_stochastic(float x, uint32_t random) {
  const uint32_t u = codec::float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bf16{uint16_t((u >> 16) | 0x0040u)};
  if ((u & 0x7FFFFFFFu) == 0x7F800000u) return bf16{uint16_t(u >> 16)};
  return bf16{uint16_t((u + (random >> 16)) >> 16)};
}

}  // namespace daedalus::fp8

namespace daedalus::fp8 {

// The same word, computable on the device: Philox4x32-10 (autograd/generator.cpp's philox4x32 with
// counter (index / 4, 0) and key `seed`), lane index % 4. The CUDA quantizer's stochastic rounding
// uses it; a CPU test checks it against stochastic_word.
DAEDALUS_HD uint32_t stochastic_word_hd(uint64_t seed, uint64_t index) {
  const uint64_t counter = index / 4;
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0u, c3 = 0u;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
    const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
    const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0, n1 = uint32_t(p1);
    const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1, n3 = uint32_t(p0);
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  switch (index % 4) {
    case 0: return c0;
    case 1: return c1;
    case 2: return c2;
    default: return c3;
  }
}

// The random word for element `index` of a stochastic rounding keyed by `seed`: lane index % 4 of
// Philox4x32-10 block (counter index / 4, key seed) — the Generator's stream layout, so any element
// is computed independently and the result does not depend on the thread count (host only; a CUDA
// twin evaluates the same Philox block on the device).
uint32_t stochastic_word(uint64_t seed, uint64_t index);

}  // namespace daedalus::fp8
