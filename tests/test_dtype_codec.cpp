// The BF16 / FP8 element codecs against NVIDIA's own host conversions in cuda_fp8.h and
// cuda_bf16.h (an independent implementation): every FP8 code decoded, and encodes checked at
// every rounding tie between neighbouring FP8 values, one float ulp either side of each tie,
// and a million random bit patterns, in both overflow modes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "autograd/dtype_codec.h"
#include "autograd/kernels/copy.h"
#include "autograd/tensor.h"
#include "tests/testing.h"

#if DAEDALUS_HAVE_CUDA_FP8_ORACLE
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#endif

namespace daedalus {
namespace {

using codec::bits_float;
using codec::float_bits;

TEST(DtypeCodec, FormatFactsFromNumericsCard) {
  // shared/design/NUMERICS.md: max finite, min normal, min subnormal, special codes.
  EXPECT_EQ(codec::e4m3_to_float({0x7E}), 448.0f);
  EXPECT_EQ(codec::e4m3_to_float({0x08}), std::ldexp(1.0f, -6));
  EXPECT_EQ(codec::e4m3_to_float({0x01}), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(codec::e4m3_to_float({0x7F})));
  EXPECT_TRUE(std::isnan(codec::e4m3_to_float({0xFF})));
  EXPECT_EQ(codec::e5m2_to_float({0x7B}), 57344.0f);
  EXPECT_EQ(codec::e5m2_to_float({0x04}), std::ldexp(1.0f, -14));
  EXPECT_EQ(codec::e5m2_to_float({0x01}), std::ldexp(1.0f, -16));
  EXPECT_EQ(codec::e5m2_to_float({0x7C}), INFINITY);
  EXPECT_EQ(codec::e5m2_to_float({0xFC}), -INFINITY);
  EXPECT_TRUE(std::isnan(codec::e5m2_to_float({0x7D})));
  // Saturation: +-inf and overflow clamp to +-max finite; nonfinite mode gives NaN / inf.
  EXPECT_EQ(codec::float_to_e4m3(1e6f).bits, 0x7E);
  EXPECT_EQ(codec::float_to_e4m3(-INFINITY).bits, 0xFE);
  EXPECT_EQ(codec::float_to_e4m3(1e6f, Fp8Overflow::nonfinite).bits, 0x7F);
  EXPECT_EQ(codec::float_to_e5m2(1e6f, Fp8Overflow::nonfinite).bits, 0x7C);
  // Ties go to even: 464 lies halfway between 448 (mantissa 110) and 480 (would be 111) -> 448.
  EXPECT_EQ(codec::float_to_e4m3(464.0f, Fp8Overflow::nonfinite).bits, 0x7E);
  EXPECT_EQ(codec::float_to_e4m3(464.5f, Fp8Overflow::nonfinite).bits, 0x7F);
  // Half the smallest subnormal rounds to zero (even), anything above it to the smallest subnormal.
  EXPECT_EQ(codec::float_to_e4m3(std::ldexp(1.0f, -10)).bits, 0x00);
  EXPECT_EQ(codec::float_to_e4m3(std::nextafter(std::ldexp(1.0f, -10), 1.0f)).bits, 0x01);
  // BF16: round to nearest even at the tie 1 + 2^-8 (between 1 and 1 + 2^-7).
  EXPECT_EQ(codec::float_to_bf16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3F80);
  EXPECT_EQ(codec::float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3F82);
}

TEST(DtypeCodec, DecodeRoundTripsEveryFiniteCode) {
  for (uint32_t c = 0; c < 256; ++c) {
    const float a = codec::e4m3_to_float({uint8_t(c)});
    if (!std::isnan(a)) {
      EXPECT_EQ(codec::float_to_e4m3(a, Fp8Overflow::nonfinite).bits & 0x7F, c & 0x7F) << c;
    }
    const float b = codec::e5m2_to_float({uint8_t(c)});
    if (!std::isnan(b)) {
      EXPECT_EQ(codec::float_to_e5m2(b, Fp8Overflow::nonfinite).bits & 0x7F, c & 0x7F) << c;
    }
  }
}

#if DAEDALUS_HAVE_CUDA_FP8_ORACLE

uint8_t oracle_fp8(float x, bool e4m3, Fp8Overflow overflow) {
  return __nv_cvt_float_to_fp8(x, overflow == Fp8Overflow::saturate ? __NV_SATFINITE : __NV_NOSAT,
                               e4m3 ? __NV_E4M3 : __NV_E5M2);
}

float oracle_decode(uint8_t code, bool e4m3) {
  if (e4m3) {
    __nv_fp8_e4m3 v;
    v.__x = code;
    return float(v);
  }
  __nv_fp8_e5m2 v;
  v.__x = code;
  return float(v);
}

uint8_t ours_fp8(float x, bool e4m3, Fp8Overflow overflow) {
  return e4m3 ? codec::float_to_e4m3(x, overflow).bits : codec::float_to_e5m2(x, overflow).bits;
}

// Compares one input in all four (format, overflow) combinations; NaN codes compare as "is NaN".
void expect_encode_matches(float x) {
  for (bool e4m3 : {true, false}) {
    for (Fp8Overflow ov : {Fp8Overflow::saturate, Fp8Overflow::nonfinite}) {
      const uint8_t want = oracle_fp8(x, e4m3, ov), got = ours_fp8(x, e4m3, ov);
      const bool want_nan = std::isnan(oracle_decode(want, e4m3));
      if (want_nan) {
        ASSERT_TRUE(std::isnan(oracle_decode(got, e4m3)))
            << "x=" << x << " (bits " << std::hex << float_bits(x) << ") " << (e4m3 ? "e4m3" : "e5m2");
      } else {
        ASSERT_EQ(int(got), int(want)) << "x=" << x << " (bits " << std::hex << float_bits(x) << ") "
                                       << (e4m3 ? "e4m3" : "e5m2")
                                       << (ov == Fp8Overflow::saturate ? " saturating" : " non-saturating");
      }
    }
  }
}

TEST(DtypeCodec, DecodeMatchesCudaFp8ForAll256Codes) {
  for (int c = 0; c < 256; ++c) {
    for (bool e4m3 : {true, false}) {
      const float want = oracle_decode(uint8_t(c), e4m3);
      const float got = e4m3 ? codec::e4m3_to_float({uint8_t(c)}) : codec::e5m2_to_float({uint8_t(c)});
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got)) << c;
      } else {
        EXPECT_EQ(float_bits(got), float_bits(want)) << "code " << c << (e4m3 ? " e4m3" : " e5m2");
      }
    }
  }
}

TEST(DtypeCodec, EncodeMatchesCudaFp8AtEveryTieAndItsNeighbours) {
  for (bool e4m3 : {true, false}) {
    for (int c = 0; c < 0x7F; ++c) {  // consecutive positive codes c, c+1
      const float lo = oracle_decode(uint8_t(c), e4m3), hi = oracle_decode(uint8_t(c + 1), e4m3);
      if (std::isnan(lo) || std::isnan(hi) || std::isinf(hi)) continue;
      const float mid = lo + (hi - lo) / 2;  // exact: FP8 values have few mantissa bits
      for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY), lo, hi}) {
        expect_encode_matches(x);
        expect_encode_matches(-x);
      }
    }
  }
  // Beyond the largest finite value: the tie with the first unrepresentable step and far beyond.
  for (float x : {448.0f, 464.0f, 465.0f, 480.0f, 57344.0f, 61439.0f, 61440.0f, 65536.0f, 1e30f, INFINITY})
    for (float s : {1.0f, -1.0f}) expect_encode_matches(s * x);
}

TEST(DtypeCodec, EncodeMatchesCudaFp8OnRandomBitPatterns) {
  std::mt19937 rng(7);
  for (int i = 0; i < 1'000'000; ++i) {
    const float x = bits_float(rng());
    if (std::isnan(x)) continue;
    expect_encode_matches(x);
    // Also sample the FP8-relevant exponent range densely: |x| in [2^-20, 2^17].
    const float y = std::ldexp(1.0f + float(rng() & 0x7FFFFF) / 8388608.0f, int(rng() % 38) - 20);
    expect_encode_matches(rng() & 1 ? y : -y);
  }
}

TEST(DtypeCodec, Bf16MatchesCudaBf16) {
  std::mt19937 rng(11);
  for (int i = 0; i < 1'000'000; ++i) {
    // Random patterns plus exact ties (low 16 bits 0x8000) where rounding to even matters.
    uint32_t u = rng();
    if (i % 4 == 0) u = (u & 0xFFFF0000u) | 0x8000u;
    const float x = bits_float(u);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(codec::bf16_to_float(codec::float_to_bf16(x))));
      continue;
    }
    const __nv_bfloat16 want = __float2bfloat16(x);
    uint16_t want_bits;
    std::memcpy(&want_bits, &want, 2);
    ASSERT_EQ(codec::float_to_bf16(x).bits, want_bits) << "x=" << x << " bits " << std::hex << u;
    ASSERT_EQ(float_bits(codec::bf16_to_float(codec::float_to_bf16(x))), float_bits(__bfloat162float(want)));
  }
}

#endif  // DAEDALUS_HAVE_CUDA_FP8_ORACLE

TEST(DtypeCodec, TensorCastUsesTheCodecsElementForElement) {
  const Tensor x = testing::random_tensor({65, 7}, 3, DType::f32, 300.0);  // spans saturation for e4m3
  const std::vector<double> in = x.to_doubles();
  for (DType d : {DType::bf16, DType::f8e4m3, DType::f8e5m2}) {
    for (Fp8Overflow ov : {Fp8Overflow::saturate, Fp8Overflow::nonfinite}) {
      const std::vector<double> got = kernels::cast(x.t(), d, ov).to_doubles();  // strided source
      const Tensor xt = x.t().contiguous();
      const std::vector<double> src = xt.to_doubles();
      for (size_t i = 0; i < got.size(); ++i) {
        const float v = float(src[i]);
        const float want = d == DType::bf16     ? codec::bf16_to_float(codec::float_to_bf16(v))
                           : d == DType::f8e4m3 ? codec::e4m3_to_float(codec::float_to_e4m3(v, ov))
                                                : codec::e5m2_to_float(codec::float_to_e5m2(v, ov));
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(got[i]));
        } else {
          ASSERT_EQ(got[i], double(want)) << dtype_name(d) << " element " << i;
        }
      }
    }
  }
  EXPECT_EQ(in.size(), size_t(65 * 7));
}

TEST(DtypeCodec, RoundToBf16KeepsFp32AndRoundsOnce) {
  const Tensor x = Tensor::from_values({1.0 + std::ldexp(1.0, -8), 1.0 + 3 * std::ldexp(1.0, -8), -3.0e38, 0.1}, {4});
  const Tensor r = kernels::round_to_bf16(x);
  EXPECT_EQ(r.dtype(), DType::f32);
  EXPECT_TRUE(testing::all_close(r, {1.0, 1.0 + std::ldexp(1.0, -6), -1.765625 * std::ldexp(1.0, 127), 0.10009765625},
                                 1e-7, 0));
  EXPECT_THROW(kernels::round_to_bf16(Tensor::zeros({2}, DType::bf16)), InputError);
}

}  // namespace
}  // namespace daedalus
