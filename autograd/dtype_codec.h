// Bit-exact element codecs for the narrow storage dtypes: BF16, FP8 E4M3 (e4m3fn), FP8 E5M2, and
// FP4 E2M1 (OCP MX v1.0's FP4, one code per byte in the low nibble: the emulation keeps it unpacked).
//
// Round-to-nearest-even everywhere, identical on host and device (the functions are
// __host__ __device__ under nvcc and use integer arithmetic only, so the result never depends
// on a rounding mode or a math library). cuda_fp8.h's host conversions are the oracle in tests.
// Format facts (bias, max finite, NaN/inf codes) are in shared/design/NUMERICS.md; fp8/ builds
// quantizers and scales on top of these codecs.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DAEDALUS_HD __host__ __device__ __forceinline__
#else
#define DAEDALUS_HD inline
#endif

namespace daedalus {

// Storage types: plain bit containers, so that tensors of them are trivially copyable.
struct bf16 {
  uint16_t bits;
};
struct fp8e4m3 {
  uint8_t bits;
};
struct fp8e5m2 {
  uint8_t bits;
};
struct fp4e2m1 {
  uint8_t bits;  // bit 3 sign, bits 2-1 exponent (bias 1), bit 0 mantissa; bits 7-4 zero
};

// What a cast does with values beyond the largest finite FP8 value (and with +-inf).
enum class Fp8Overflow {
  saturate,  // clamp to +-max finite (what training recipes use; TE's default)
  nonfinite  // E4M3 -> NaN (it has no inf), E5M2 -> +-inf (OCP / PyTorch .to() semantics)
};

namespace codec {

DAEDALUS_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

DAEDALUS_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// ---- BF16 -------------------------------------------------------------------------------

DAEDALUS_HD bf16 float_to_bf16(float x) {
  uint32_t u = float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bf16{uint16_t((u >> 16) | 0x0040u)};  // NaN stays a quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest, ties to even (inf stays inf)
  return bf16{uint16_t(u >> 16)};
}

DAEDALUS_HD float bf16_to_float(bf16 h) { return bits_float(uint32_t(h.bits) << 16); }

// ---- FP8 --------------------------------------------------------------------------------

// Encodes |x| (sign handled by the caller) into an 8-bit code with `kMant` mantissa bits and
// exponent bias `kBias`; returns codes above `kMaxCode` unclamped so the caller decides overflow.
// Branch-free (selects only), so that loops over it vectorize.
template <int kMant, int kBias>
DAEDALUS_HD uint32_t fp8_encode_magnitude(uint32_t abs_bits) {
  constexpr int kMinExp = 1 - kBias;  // exponent of the smallest normal
  const int biased = int(abs_bits >> 23);
  // Float subnormals have exponent -126 and no implicit bit.
  const int exp = biased == 0 ? -126 : biased - 127;
  const uint32_t sig = (abs_bits & 0x7FFFFFu) | (biased == 0 ? 0u : 0x800000u);
  // Value = sig * 2^(exp-23). Express it in units of 2^(e_eff - kMant), e_eff = max(exp, kMinExp);
  // below the normal range that unit is the smallest subnormal, and the code is the unit count.
  const int e_eff = exp > kMinExp ? exp : kMinExp;
  // A shift beyond 25 leaves less than half the smallest subnormal: with the shift capped at 26
  // (sig < 2^24 < half = 2^25) units and the rounding increment are both 0, and so is the code.
  const int raw_shift = 23 - kMant + (e_eff - exp);
  const int shift = raw_shift < 26 ? raw_shift : 26;
  const uint32_t units = sig >> shift;
  const uint32_t rem = sig & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  // (Written as selects: GCC 12 does not vectorize an OR of comparisons widened to uint32.)
  const uint32_t rounded = units + (rem > half ? 1u : 0u) + (rem == half ? (units & 1u) : 0u);
  // Normal: code = (e + bias) << M | mantissa = ((e + bias - 1) << M) + units, units in [2^M, 2^(M+1)];
  // subnormal (e_eff = kMinExp): the first term vanishes and the code is the unit count.
  return uint32_t(((e_eff + kBias - 1) << kMant) + int(rounded));
}

// The parts of an FP8 encode that do not depend on how the magnitude is rounded: sign, NaN, inf
// and overflow. `magnitude(abs_bits)` returns the unclamped code of |x| (fp8_encode_magnitude for
// round-to-nearest-even; fp8/format.h passes a stochastic one). Codes above kMaxCode overflow:
// saturate to kMaxCode, or become kOverflowCode (E4M3: NaN 0x7F; E5M2: inf 0x7C).
template <uint32_t kMaxCode, uint32_t kOverflowCode, typename Magnitude>
DAEDALUS_HD uint8_t fp8_encode(float x, Fp8Overflow overflow, Magnitude magnitude) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 24) & 0x80u;
  const uint32_t abs_bits = u & 0x7FFFFFFFu;
  const uint32_t overflow_code = overflow == Fp8Overflow::saturate ? kMaxCode : kOverflowCode;
  // Selects, not branches (vectorizable): inf encodes above kMaxCode and so takes the overflow code.
  const uint32_t code = magnitude(abs_bits < 0x7F800000u ? abs_bits : 0x7F000000u);
  const uint32_t finite = code > kMaxCode ? overflow_code : code;
  return uint8_t(sign | (abs_bits > 0x7F800000u ? 0x7Fu : finite));  // NaN: 0x7F
}

// The integer encoders: the reference on every host and device.
DAEDALUS_HD fp8e4m3 float_to_e4m3_integer(float x, Fp8Overflow overflow = Fp8Overflow::saturate) {
  return fp8e4m3{fp8_encode<0x7Eu, 0x7Fu>(x, overflow, [](uint32_t a) { return fp8_encode_magnitude<3, 7>(a); })};
}

DAEDALUS_HD fp8e5m2 float_to_e5m2_integer(float x, Fp8Overflow overflow = Fp8Overflow::saturate) {
  return fp8e5m2{fp8_encode<0x7Bu, 0x7Cu>(x, overflow, [](uint32_t a) { return fp8_encode_magnitude<2, 15>(a); })};
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
// Ada/Hopper convert in one instruction: cvt.rn.satfinite.{e4m3,e5m2}x2.f32 rounds to nearest
// even, saturates finite overflow and +-inf to +-max finite, and keeps subnormals — the integer
// encoders' saturate mode — except that a NaN becomes the canonical NaN 0x7F whatever its sign,
// where the integer encoders keep the sign (sign | 0x7F). That one case is patched, so both give
// the same byte for every float (tests/cuda_codec_check.cu compares them on all 2^32 inputs).
template <bool kE5m2>
__device__ __forceinline__ uint8_t fp8_encode_hw(float x) {
  uint16_t pair;  // cvt d, hi, lo: x goes to the low byte
  if constexpr (kE5m2) {
    asm("cvt.rn.satfinite.e5m2x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(0.0f), "f"(x));
  } else {
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(0.0f), "f"(x));
  }
  const uint32_t u = float_bits(x);
  return (u & 0x7FFFFFFFu) > 0x7F800000u ? uint8_t(((u >> 24) & 0x80u) | 0x7Fu) : uint8_t(pair);
}
#endif

// What every kernel calls: the hardware convert where one exists and gives the same bytes
// (device code for sm_89+, saturate mode), the integer encoder everywhere else.
DAEDALUS_HD fp8e4m3 float_to_e4m3(float x, Fp8Overflow overflow = Fp8Overflow::saturate) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if (overflow == Fp8Overflow::saturate) return fp8e4m3{fp8_encode_hw<false>(x)};
#endif
  return float_to_e4m3_integer(x, overflow);
}

DAEDALUS_HD fp8e5m2 float_to_e5m2(float x, Fp8Overflow overflow = Fp8Overflow::saturate) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if (overflow == Fp8Overflow::saturate) return fp8e5m2{fp8_encode_hw<true>(x)};
#endif
  return float_to_e5m2_integer(x, overflow);
}

template <int kMant, int kBias>
DAEDALUS_HD float fp8_decode_finite(uint32_t code) {
  const uint32_t sign = (code & 0x80u) << 24;
  const uint32_t exp = (code & 0x7Fu) >> kMant;
  const uint32_t mant = code & ((1u << kMant) - 1u);
  if (exp == 0) {
    // subnormal: mant * 2^(1 - bias - M), exact in float
    const float magnitude = float(mant) * bits_float(uint32_t(127 + 1 - kBias - kMant) << 23);
    return bits_float(float_bits(magnitude) | sign);
  }
  return bits_float(sign | ((exp - kBias + 127) << 23) | (mant << (23 - kMant)));
}

DAEDALUS_HD float e4m3_to_float(fp8e4m3 v) {
  if ((v.bits & 0x7Fu) == 0x7Fu) return bits_float(0x7FC00000u | (uint32_t(v.bits & 0x80u) << 24));
  return fp8_decode_finite<3, 7>(v.bits);
}

DAEDALUS_HD float e5m2_to_float(fp8e5m2 v) {
  const uint32_t sign = uint32_t(v.bits & 0x80u) << 24;
  if ((v.bits & 0x7Cu) == 0x7Cu) return bits_float(sign | ((v.bits & 0x03u) ? 0x7FC00000u : 0x7F800000u));
  return fp8_decode_finite<2, 15>(v.bits);
}

// ---- FP4 E2M1 ------------------------------------------------------------------------------
// Values 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives (codes 0-7, 8-15): 1 sign bit, 2 exponent
// bits with bias 1, 1 mantissa bit; exponent field 0 is the subnormal 0.5 * m. No inf, no NaN.
// Encoding rounds to nearest even and saturates: |x| > 6 (inf included) gives +-6, and NaN gives
// +6 (code 0x7) — what cuda_fp4.h's __nv_cvt_float_to_fp4 and Blackwell's cvt.rn.satfinite.e2m1x2
// do. A NaN stays visible through its block's scale (the amax of a block holding a NaN is NaN).

// The unclamped magnitude code of |x| (bits of |x|): fp8_encode_magnitude with 1 mantissa bit and
// bias 1 (E2M1's layout is FP8's with fewer bits; codes above 7 mean overflow).
DAEDALUS_HD uint32_t e2m1_encode_magnitude(uint32_t abs_bits) { return fp8_encode_magnitude<1, 1>(abs_bits); }

// Sign, saturation and NaN around a magnitude encoder (RNE: e2m1_encode_magnitude; fp8/format.h
// passes a stochastic one).
template <typename Magnitude>
DAEDALUS_HD fp4e2m1 e2m1_encode(float x, Magnitude magnitude) {
  const uint32_t u = float_bits(x);
  const uint32_t abs_bits = u & 0x7FFFFFFFu;
  const uint32_t code = magnitude(abs_bits < 0x7F800000u ? abs_bits : 0x7F000000u);  // inf: overflow
  const uint32_t sign = (u >> 28) & 0x8u;
  return fp4e2m1{uint8_t(abs_bits > 0x7F800000u ? 0x7u : (sign | (code > 0x7u ? 0x7u : code)))};
}

DAEDALUS_HD fp4e2m1 float_to_e2m1(float x) {
  return e2m1_encode(x, [](uint32_t a) { return e2m1_encode_magnitude(a); });
}

DAEDALUS_HD float e2m1_to_float(fp4e2m1 v) {
  // 2^(e - 1) * (1 + m / 2) for e > 0, 0.5 * m for e = 0: exact in float, built from the bits.
  const uint32_t sign = uint32_t(v.bits & 0x8u) << 28, e = (v.bits >> 1) & 0x3u, m = v.bits & 0x1u;
  const uint32_t magnitude = e == 0 ? (m ? 0x3F000000u : 0u) : (((e - 1 + 127) << 23) | (m << 22));
  return bits_float(sign | magnitude);
}

}  // namespace codec

// Element load/store used by every kernel: narrow types are computed in float.
DAEDALUS_HD float to_float(float x) { return x; }
DAEDALUS_HD float to_float(bf16 x) { return codec::bf16_to_float(x); }
DAEDALUS_HD float to_float(fp8e4m3 x) { return codec::e4m3_to_float(x); }
DAEDALUS_HD float to_float(fp8e5m2 x) { return codec::e5m2_to_float(x); }
DAEDALUS_HD float to_float(fp4e2m1 x) { return codec::e2m1_to_float(x); }

template <typename T>
DAEDALUS_HD T from_float(float x);
template <>
DAEDALUS_HD float from_float<float>(float x) {
  return x;
}
template <>
DAEDALUS_HD bf16 from_float<bf16>(float x) {
  return codec::float_to_bf16(x);
}
template <>
DAEDALUS_HD fp8e4m3 from_float<fp8e4m3>(float x) {
  return codec::float_to_e4m3(x);
}
template <>
DAEDALUS_HD fp8e5m2 from_float<fp8e5m2>(float x) {
  return codec::float_to_e5m2(x);
}
template <>
DAEDALUS_HD fp4e2m1 from_float<fp4e2m1>(float x) {
  return codec::float_to_e2m1(x);
}

}  // namespace daedalus
