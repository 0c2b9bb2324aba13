// FP4 E2M1 and its scales (autograd/dtype_codec.h, fp8/format.h) against independent references:
// the encoder against a double-precision nearest-value search over the 8 magnitudes (every float
// exponent and sign with the mantissas at and beside every tie; the full 2^32 sweep is a by-hand
// test, DISABLED_ below) and against cuda_fp4.h's host conversion; all 16 codes decoded; OCP MX's
// FP4 scale rule and NVFP4's two-level scales against the formulas computed in double on edge cases
// (zero blocks, inf, NaN, subnormal amax); stochastic rounding unbiased within 3 sigma over 10^6
// draws and reproducible.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "autograd/dtype_codec.h"
#include "fp8/format.h"
#include "fp8/quantized.h"
#include "tests/testing.h"

#if DAEDALUS_HAVE_CUDA_FP8_ORACLE
#include <cuda_fp4.h>
#endif

namespace daedalus::fp8 {
namespace {

using codec::bits_float;
using codec::float_bits;

constexpr double kE2m1Values[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

// The reference encoder, in double: the nearest of the 8 magnitudes, ties to the even code (mantissa
// bit 0), saturating at 6 (inf included), NaN to +6 (code 7) as cuda_fp4.h and the hardware do.
uint8_t reference_e2m1(float x) {
  if (std::isnan(x)) return 0x7;
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  const double a = std::fabs(double(x));
  if (a >= 6.0) return sign | 0x7;
  int best = 0;
  double best_d = a;
  for (int i = 1; i < 8; ++i) {
    const double d = std::fabs(a - kE2m1Values[i]);
    if (d < best_d || (d == best_d && i % 2 == 0)) {
      best = i;
      best_d = d;
    }
  }
  return uint8_t(sign | best);
}

TEST(Fp4Format, DecodesAll16Codes) {
  for (int c = 0; c < 16; ++c) {
    const float v = codec::e2m1_to_float(fp4e2m1{uint8_t(c)});
    const double want = (c & 8 ? -1.0 : 1.0) * kE2m1Values[c & 7];
    EXPECT_EQ(double(v), want) << "code " << c;
    EXPECT_EQ(std::signbit(v), (c & 8) != 0) << "code " << c;  // 0x8 is -0
    EXPECT_EQ(codec::float_to_e2m1(v).bits, c == 8 ? 8 : c) << "round trip of code " << c;
#if DAEDALUS_HAVE_CUDA_FP8_ORACLE
    // cuda_fp4.h decodes to FP16 bits: sign, 5 exponent bits (bias 15), 10 mantissa bits.
    const uint16_t h = __nv_cvt_fp4_to_halfraw(__nv_fp4_storage_t(c), __NV_E2M1).x;
    const int he = (h >> 10) & 0x1F;
    const double hm = he == 0 ? std::ldexp(double(h & 0x3FF), -24) : std::ldexp(1.0 + (h & 0x3FF) / 1024.0, he - 15);
    EXPECT_EQ((h & 0x8000 ? -1.0 : 1.0) * hm, want) << "cuda_fp4.h decodes code " << c;
#endif
  }
  // Facts: max 6, min subnormal 0.5, no inf or NaN: saturation and NaN handling.
  EXPECT_EQ(codec::float_to_e2m1(INFINITY).bits, 0x7);
  EXPECT_EQ(codec::float_to_e2m1(-INFINITY).bits, 0xF);
  EXPECT_EQ(codec::float_to_e2m1(1e30f).bits, 0x7);
  EXPECT_EQ(codec::float_to_e2m1(std::numeric_limits<float>::quiet_NaN()).bits, 0x7);
  EXPECT_EQ(codec::float_to_e2m1(-std::numeric_limits<float>::quiet_NaN()).bits, 0x7);
  // Ties to even: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
  const std::pair<float, float> ties[] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f},
                                          {2.5f, 2.0f},  {3.5f, 4.0f},  {5.0f, 4.0f}};
  for (auto [x, want] : ties) EXPECT_EQ(codec::e2m1_to_float(codec::float_to_e2m1(x)), want) << x;
}

// Every sign and float exponent (256 x 2) with the mantissas that matter: 0, 1, the ends, the three
// tie positions of E2M1's neighbours (mantissa halves and quarters) with one ulp either side, and 32
// random ones — 82k inputs against the double reference (and cuda_fp4.h where present).
TEST(Fp4Format, EncodeMatchesDoubleReferenceOverEveryExponentClass) {
  std::mt19937 rng(7);
  std::vector<uint32_t> mantissas = {0,        1,        2,        0x1FFFFF, 0x200000, 0x200001, 0x3FFFFF,
                                     0x400000, 0x400001, 0x5FFFFF, 0x600000, 0x600001, 0x7FFFFE, 0x7FFFFF};
  for (int i = 0; i < 32; ++i) mantissas.push_back(rng() & 0x7FFFFF);
  int64_t checked = 0;
  for (uint32_t sign = 0; sign < 2; ++sign) {
    for (uint32_t e = 0; e < 256; ++e) {
      for (uint32_t m : mantissas) {
        const float x = bits_float((sign << 31) | (e << 23) | m);
        ASSERT_EQ(int(codec::float_to_e2m1(x).bits), int(reference_e2m1(x)))
            << "x=" << x << " bits " << std::hex << float_bits(x);
#if DAEDALUS_HAVE_CUDA_FP8_ORACLE
        ASSERT_EQ(int(codec::float_to_e2m1(x).bits), int(__nv_cvt_float_to_fp4(x, __NV_E2M1, cudaRoundNearest)))
            << "x=" << x << " bits " << std::hex << float_bits(x);
#endif
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 2 * 256 * int64_t(mantissas.size()));
}

// By hand (about a minute on 2 cores): every one of the 2^32 float bit patterns against the double
// reference.  build/daedalus_tests --gtest_filter='*EveryFloat*' --gtest_also_run_disabled_tests
TEST(Fp4Format, DISABLED_EncodeMatchesDoubleReferenceOnEveryFloat) {
  int64_t mismatches = 0;
#pragma omp parallel for schedule(static) reduction(+ : mismatches)
  for (int64_t hi = 0; hi < 65536; ++hi) {
    for (uint32_t lo = 0; lo < 65536; ++lo) {
      const float x = bits_float(uint32_t(hi) << 16 | lo);
      mismatches += codec::float_to_e2m1(x).bits != reference_e2m1(x) ? 1 : 0;
    }
  }
  std::printf("E2M1 encode: %lld mismatches over 2^32 inputs\n", static_cast<long long>(mismatches));
  EXPECT_EQ(mismatches, 0);
}

// ---- OCP MX FP4 scales ----------------------------------------------------------------------------

// 2^(floor(log2 amax) - 2) by the formula in double (std::floor of std::log2 is exact at powers of two
// and for every float, whose log2 is never within 2^-40 of an integer unless it is one), clamped.
double reference_mx_scale(double amax) {
  if (std::isnan(amax)) return std::numeric_limits<double>::quiet_NaN();
  if (amax == 0) return 1.0;
  if (std::isinf(amax)) amax = std::numeric_limits<float>::max();
  const double e = std::clamp(std::floor(std::log2(amax)) - 2, -127.0, 127.0);
  return std::ldexp(1.0, int(e));
}

TEST(Fp4Format, MxScaleFollowsTheOcpRuleOnEdgeCases) {
  const float denorm_min = std::numeric_limits<float>::denorm_min();
  const std::vector<float> amaxes = {0.0f,
                                     6.0f,
                                     7.99f,  // rounds down: 7.99 / 1 saturates to 6
                                     8.0f,
                                     0.5f,
                                     1.0f,
                                     std::nextafter(4.0f, 0.0f),
                                     std::numeric_limits<float>::min(),  // 2^-126
                                     denorm_min,                         // 2^-149: clamps to 2^-127
                                     denorm_min * 1000,
                                     0x1p-125f,
                                     std::numeric_limits<float>::max(),
                                     INFINITY,
                                     std::numeric_limits<float>::quiet_NaN()};
  for (float a : amaxes) {
    const float got = mx_scale_inv_from_amax(a, Format::e2m1);
    const double want = reference_mx_scale(a);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << "amax " << a;
      EXPECT_EQ(float_to_e8m0(got, E8m0Rounding::down), 0xFF);  // E8M0's NaN
    } else {
      EXPECT_EQ(double(got), want) << "amax " << a;
      EXPECT_EQ(e8m0_to_float(float_to_e8m0(got, E8m0Rounding::down)), got) << "an E8M0 value";
    }
  }
  // Random amaxes over the whole float range.
  std::mt19937 rng(3);
  for (int i = 0; i < 100000; ++i) {
    const float a = bits_float(rng() & 0x7F7FFFFFu);
    ASSERT_EQ(double(mx_scale_inv_from_amax(a, Format::e2m1)), reference_mx_scale(a)) << a;
  }
  // FP8 formats keep the round-up rule of MXFP8.
  EXPECT_EQ(mx_scale_inv_from_amax(7.99f, Format::e4m3), 0x1p-5f);  // 2^ceil(log2(7.99 / 448))
}

// ---- NVFP4 two-level scales -------------------------------------------------------------------------

// The E4M3 code nearest to v by a double-precision search over the 127 non-negative finite codes
// (ties to even), saturating: an encoder independent of the codec's bit arithmetic.
uint8_t reference_e4m3(double v) {
  if (std::isnan(v)) return 0x7F;
  if (v >= 448) return 0x7E;
  uint8_t best = 0;
  for (uint8_t c = 1; c <= 0x7E; ++c) {
    const double d = std::fabs(v - codec::e4m3_to_float({c})), bd = std::fabs(v - codec::e4m3_to_float({best}));
    if (d < bd || (d == bd && (c & 1) == 0)) best = c;
  }
  return best;
}

TEST(Fp4Format, Nvfp4ScalesFollowTheFormulasOnEdgeCases) {
  // Tensor scale S = 2688 / amax: 1 for amax 0, inf and NaN; FLT_MAX when 2688 / amax overflows.
  EXPECT_EQ(nvfp4_tensor_scale(2688.0f), 1.0f);
  EXPECT_EQ(nvfp4_tensor_scale(0.0f), 1.0f);
  EXPECT_EQ(nvfp4_tensor_scale(INFINITY), 1.0f);
  EXPECT_EQ(nvfp4_tensor_scale(std::numeric_limits<float>::quiet_NaN()), 1.0f);
  EXPECT_EQ(nvfp4_tensor_scale(1e-40f), std::numeric_limits<float>::max());  // subnormal amax
  EXPECT_EQ(nvfp4_tensor_scale(3.0f), float(2688.0 / 3.0));                  // one rounding
  // Block decode scale e4m3(amax_b * S / 6) against the formula in double: equal, except where the
  // exact value lies within 2^-20 (relative) of the midpoint between two E4M3 codes — there the FP32
  // operations' rounding may pick the other side. Count those: they must be rare.
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> log_amax(-30, 30);
  int near_tie = 0;
  for (int i = 0; i < 200000; ++i) {
    const float tensor_amax = float(std::exp2(log_amax(rng)));
    const float block_amax = tensor_amax * float(std::exp2(-std::uniform_real_distribution<double>(0, 24)(rng)));
    const float s = nvfp4_tensor_scale(tensor_amax);
    const double exact = double(block_amax) * double(s) / 6.0;
    const uint8_t got = nvfp4_block_scale(block_amax, s).bits, want = reference_e4m3(exact);
    if (got == want) continue;
    const uint8_t lo = std::min(got, want), hi = std::max(got, want);
    const double mid = 0.5 * (codec::e4m3_to_float({lo}) + codec::e4m3_to_float({hi}));
    ASSERT_EQ(hi - lo, 1) << "block amax " << block_amax << " S " << s;
    ASSERT_LT(std::fabs(exact - mid), mid * 0x1p-20) << "block amax " << block_amax << " S " << s;
    ++near_tie;
  }
  EXPECT_LT(near_tie, 200) << "of 200000";
  // Edge cases: a zero block has scale code 0 and an encode scale of FLT_MAX (0 * FLT_MAX = 0, no NaN);
  // a block scale below E4M3's smallest subnormal underflows to 0 (the block reads as zeros); inf
  // saturates the block scale to 448; NaN gives E4M3's NaN.
  const float s = nvfp4_tensor_scale(2688.0f);
  EXPECT_EQ(nvfp4_block_scale(0.0f, s).bits, 0x00);
  EXPECT_EQ(nvfp4_encode_scale(0.0f, s), std::numeric_limits<float>::max());
  EXPECT_EQ(codec::e2m1_to_float(codec::float_to_e2m1(0.0f * nvfp4_encode_scale(0.0f, s))), 0.0f);
  EXPECT_EQ(nvfp4_block_scale(1e-3f, s).bits, 0x00);  // 1e-3 / 6 < 2^-10: below half the min subnormal
  EXPECT_EQ(nvfp4_block_scale(INFINITY, s).bits, 0x7E);
  EXPECT_EQ(nvfp4_block_scale(std::numeric_limits<float>::quiet_NaN(), s).bits & 0x7F, 0x7F);
  EXPECT_EQ(nvfp4_encode_scale(std::numeric_limits<float>::quiet_NaN(), s), std::numeric_limits<float>::max());
  // The block's amax element lands within half an E4M3 ulp (2^-4 relative) of 6 while the block
  // scale is an E4M3 normal (amax_b * S / 6 >= 2^-6); subnormal block scales are coarser.
  for (float a : {1.0f, 17.3f, 2688.0f, 0.1f}) {
    const float dec = codec::e4m3_to_float(nvfp4_block_scale(a, s));
    const double scaled = double(a) * nvfp4_encode_scale(dec, s);
    EXPECT_NEAR(scaled, 6.0, 6.0 * 0x1p-4) << a;
  }
}

// ---- stochastic rounding ----------------------------------------------------------------------------

TEST(Fp4Format, StochasticRoundingIsUnbiasedAndReproducible) {
  // Over N = 10^6 draws the mean of round(v) has standard deviation sigma = (hi - lo) sqrt(p(1-p)/N);
  // the test allows 3 sigma (the bound: a false alarm in 0.3% of seeds, fixed here at 11).
  constexpr int kN = 1000000;
  for (float v : {0.3f, 0.7f, 1.2f, 1.9f, 2.2f, 3.7f, 4.1f, 5.9f, -0.9f, -2.6f, 0.01f}) {
    const double a = std::fabs(double(v));
    int i = 0;
    while (!(kE2m1Values[i] <= a && a <= kE2m1Values[i + 1])) ++i;
    const double lo = kE2m1Values[i], hi = kE2m1Values[i + 1], p = (a - lo) / (hi - lo);
    double sum = 0;
    for (int n = 0; n < kN; ++n) {
      const float r = codec::e2m1_to_float(float_to_e2m1_stochastic(v, stochastic_word(11, uint64_t(n))));
      ASSERT_TRUE(std::fabs(r) == lo || std::fabs(r) == hi) << r << " is not a neighbour of " << v;
      sum += r;
    }
    const double sigma = (hi - lo) * std::sqrt(p * (1 - p) / kN);
    EXPECT_LE(std::fabs(sum / kN - double(v)), 3 * sigma + 1e-12) << "v=" << v << " mean " << sum / kN;
  }
  // Reproducible: the same (seed, index) gives the same code; representable values never move;
  // saturation and NaN as in nearest-even.
  for (uint64_t n = 0; n < 1000; ++n) {
    const uint32_t w = stochastic_word(99, n);
    EXPECT_EQ(float_to_e2m1_stochastic(2.2f, w).bits, float_to_e2m1_stochastic(2.2f, stochastic_word(99, n)).bits);
    EXPECT_EQ(codec::e2m1_to_float(float_to_e2m1_stochastic(3.0f, w)), 3.0f);
    EXPECT_EQ(float_to_e2m1_stochastic(7.0f, w).bits, 0x7);
    EXPECT_EQ(float_to_e2m1_stochastic(-INFINITY, w).bits, 0xF);
    EXPECT_EQ(float_to_e2m1_stochastic(std::numeric_limits<float>::quiet_NaN(), w).bits, 0x7);
  }
}

}  // namespace
}  // namespace daedalus::fp8
