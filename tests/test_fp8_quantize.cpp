// FP8 quantization (fp8/quantized.h, fp8/format.h) against independent double-precision references:
// every granularity and both formats on ragged, strided and bf16 inputs with a zero row and an
// outlier; the scale formula by hand; E8M0 and its encoder against cuda_fp8.h; stochastic rounding
// (unbiased, deterministic, always a neighbour); the amax history; bad input.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "autograd/device.h"
#include "autograd/dtype_codec.h"
#include "fp8/format.h"
#include "fp8/quantized.h"
#include "tests/testing.h"

#if DAEDALUS_HAVE_CUDA_FP8_ORACLE
#include <cuda_fp8.h>
#endif

namespace daedalus::fp8 {
namespace {

using codec::bits_float;
using codec::float_bits;

constexpr Granularity kGranularities[] = {Granularity::tensor, Granularity::row, Granularity::tile_1x128,
                                          Granularity::block_128x128, Granularity::mx_1x32};
constexpr Format kFormats[] = {Format::e4m3, Format::e5m2};

uint8_t encode(float v, Format f) {
  return f == Format::e4m3 ? codec::float_to_e4m3(v).bits : codec::float_to_e5m2(v).bits;
}
float decode(uint8_t code, Format f) {
  return f == Format::e4m3 ? codec::e4m3_to_float({code}) : codec::e5m2_to_float({code});
}

// ---- E8M0 ---------------------------------------------------------------------------------------

TEST(Fp8Format, E8m0DecodesEveryCode) {
  for (int c = 0; c < 256; ++c) {
    const float v = e8m0_to_float(uint8_t(c));
    if (c == 0xFF) {
      EXPECT_TRUE(std::isnan(v));
    } else {
      EXPECT_EQ(v, std::ldexp(1.0f, c - 127)) << "code " << c;  // 2^(c-127); code 0 is the subnormal 2^-127
      // Every power of two in range encodes back to its code, whichever the rounding direction.
      EXPECT_EQ(float_to_e8m0(v, E8m0Rounding::down), c);
      EXPECT_EQ(float_to_e8m0(v, E8m0Rounding::up), c);
    }
#if DAEDALUS_HAVE_CUDA_FP8_ORACLE
    const __nv_bfloat16_raw want = __nv_cvt_e8m0_to_bf16raw(__nv_fp8_storage_t(c));
    const float w = codec::bf16_to_float({want.x});
    if (std::isnan(w)) {
      EXPECT_TRUE(std::isnan(v)) << c;
    } else {
      EXPECT_EQ(float_bits(v), float_bits(w)) << "code " << c;
    }
#endif
  }
}

TEST(Fp8Format, E8m0EncodeByHand) {
  EXPECT_EQ(float_to_e8m0(1.0f, E8m0Rounding::down), 127);
  EXPECT_EQ(float_to_e8m0(1.5f, E8m0Rounding::down), 127);
  EXPECT_EQ(float_to_e8m0(1.5f, E8m0Rounding::up), 128);
  EXPECT_EQ(float_to_e8m0(-3.0f, E8m0Rounding::up), 129);  // the sign is ignored
  EXPECT_EQ(float_to_e8m0(0.0f, E8m0Rounding::up), 0);     // no zero: clips to 2^-127
  EXPECT_EQ(float_to_e8m0(std::ldexp(1.0f, -140), E8m0Rounding::up), 0);
  EXPECT_EQ(float_to_e8m0(std::ldexp(1.5f, -127), E8m0Rounding::up), 1);  // subnormal above 2^-127: up to 2^-126
  EXPECT_EQ(float_to_e8m0(INFINITY, E8m0Rounding::down), 0xFE);
  EXPECT_EQ(float_to_e8m0(INFINITY, E8m0Rounding::down, Fp8Overflow::nonfinite), 0xFF);
  EXPECT_EQ(float_to_e8m0(std::numeric_limits<float>::max(), E8m0Rounding::up), 0xFE);
  EXPECT_EQ(float_to_e8m0(std::numeric_limits<float>::max(), E8m0Rounding::up, Fp8Overflow::nonfinite), 0xFF);
  EXPECT_EQ(float_to_e8m0(NAN, E8m0Rounding::down), 0xFF);
}

#if DAEDALUS_HAVE_CUDA_FP8_ORACLE
TEST(Fp8Format, E8m0EncodeMatchesCudaFp8) {
  std::vector<float> xs = {0.0f,
                           -0.0f,
                           INFINITY,
                           -INFINITY,
                           NAN,
                           std::numeric_limits<float>::max(),
                           std::numeric_limits<float>::denorm_min(),
                           std::numeric_limits<float>::min()};
  for (int k = -149; k <= 127; ++k) {  // powers of two, between them, one float ulp either side
    const float p = std::ldexp(1.0f, k);
    for (float v : {p, std::nextafter(p, 0.0f), std::nextafter(p, INFINITY), 1.5f * p, 1.25f * p}) xs.push_back(v);
  }
  for (uint32_t m = 0; m < 0x800000u; m += 0x1357u) xs.push_back(bits_float(m));  // subnormals
  std::mt19937 rng(5);
  for (int i = 0; i < 200'000; ++i) xs.push_back(bits_float(rng()));
  for (float x : xs) {
    for (E8m0Rounding r : {E8m0Rounding::down, E8m0Rounding::up}) {
      for (Fp8Overflow ov : {Fp8Overflow::saturate, Fp8Overflow::nonfinite}) {
        const uint8_t want = __nv_cvt_float_to_e8m0(x, ov == Fp8Overflow::saturate ? __NV_SATFINITE : __NV_NOSAT,
                                                    r == E8m0Rounding::up ? cudaRoundPosInf : cudaRoundZero);
        ASSERT_EQ(int(float_to_e8m0(x, r, ov)), int(want))
            << "x=" << x << " bits " << std::hex << float_bits(x) << (r == E8m0Rounding::up ? " up" : " down")
            << (ov == Fp8Overflow::saturate ? " saturating" : "");
      }
    }
  }
}
#endif

// ---- scales -------------------------------------------------------------------------------------

TEST(Fp8Format, ScaleFromAmaxByHand) {
  EXPECT_EQ(max_finite(Format::e4m3), 448.0);
  EXPECT_EQ(max_finite(Format::e5m2), 57344.0);
  EXPECT_EQ(dtype_of(Format::e5m2), DType::f8e5m2);
  EXPECT_EQ(scale_from_amax(448.0f, Format::e4m3), 1.0f);
  EXPECT_EQ(scale_from_amax(1.0f, Format::e4m3), 448.0f);
  EXPECT_EQ(scale_from_amax(7.0f, Format::e4m3), 64.0f);
  EXPECT_EQ(scale_from_amax(3.0f, Format::e4m3), float(448.0 / 3.0));  // rounded once to float
  EXPECT_EQ(scale_from_amax(1.0f, Format::e5m2), 57344.0f);
  EXPECT_EQ(scale_from_amax(1.0f, Format::e4m3, {.margin = 1}), 224.0f);    // divided by 2^margin
  EXPECT_EQ(scale_from_amax(1.0f, Format::e4m3, {.margin = -2}), 1792.0f);  // a negative margin multiplies
  // Power of two: rounded DOWN, so amax * scale never exceeds the largest finite value.
  EXPECT_EQ(scale_from_amax(1.0f, Format::e4m3, {.power_of_two = true}), 256.0f);  // 448 -> 256
  EXPECT_EQ(scale_from_amax(3.0f, Format::e4m3, {.power_of_two = true}), 128.0f);  // 149.3 -> 128
  EXPECT_EQ(scale_from_amax(448.0f, Format::e4m3, {.power_of_two = true}), 1.0f);  // exact powers stay
  EXPECT_EQ(scale_from_amax(449.0f, Format::e4m3, {.power_of_two = true}), 0.5f);
  EXPECT_EQ(scale_from_amax(1.0f, Format::e5m2, {.power_of_two = true}), 32768.0f);  // 57344 -> 2^15
  EXPECT_EQ(scale_from_amax(1.0f, Format::e5m2, {.margin = 2, .power_of_two = true}), 8192.0f);
  // amax 0 and non-finite amax give 1 (the NaN/inf then shows in the data, not in the scale).
  for (Format f : kFormats) {
    EXPECT_EQ(scale_from_amax(0.0f, f), 1.0f);
    EXPECT_EQ(scale_from_amax(INFINITY, f), 1.0f);
    EXPECT_EQ(scale_from_amax(NAN, f, {.power_of_two = true}), 1.0f);
  }
  // A subnormal amax would overflow the scale: it is clamped to FLT_MAX (2^127 for powers of two).
  EXPECT_EQ(scale_from_amax(1e-42f, Format::e4m3), std::numeric_limits<float>::max());
  EXPECT_EQ(scale_from_amax(1e-42f, Format::e4m3, {.power_of_two = true}), std::ldexp(1.0f, 127));
}

TEST(Fp8Format, MxScaleInvRoundsUpToAPowerOfTwo) {
  EXPECT_EQ(mx_scale_inv_from_amax(448.0f, Format::e4m3), 1.0f);
  EXPECT_EQ(mx_scale_inv_from_amax(449.0f, Format::e4m3), 2.0f);
  EXPECT_EQ(mx_scale_inv_from_amax(447.0f, Format::e4m3), 1.0f);
  EXPECT_EQ(mx_scale_inv_from_amax(1.0f, Format::e4m3), std::ldexp(1.0f, -8));  // 1/448 in (2^-9, 2^-8]
  EXPECT_EQ(mx_scale_inv_from_amax(57344.0f, Format::e5m2), 1.0f);
  EXPECT_EQ(mx_scale_inv_from_amax(1.0f, Format::e5m2), std::ldexp(1.0f, -15));  // 1/57344 in (2^-16, 2^-15]
  EXPECT_EQ(mx_scale_inv_from_amax(0.0f, Format::e4m3), 1.0f);
  EXPECT_EQ(mx_scale_inv_from_amax(NAN, Format::e4m3), 1.0f);
  EXPECT_EQ(mx_scale_inv_from_amax(1e-45f, Format::e5m2), std::ldexp(1.0f, -127));  // clamped to E8M0's range
  EXPECT_EQ(mx_scale_inv_from_amax(3e38f, Format::e4m3), std::ldexp(1.0f, 120));    // 3e38/448 in (2^119, 2^120]
}

// ---- quantize against a double reference --------------------------------------------------------

// N(0,1) values with a zero row (rows / 2, when rows > 1) and one outlier 1e4 at (rows - 1, cols / 2),
// laid out as layout 0: contiguous fp32, 1: transposed fp32 view, 2: contiguous bf16, 3: bf16 view.
Tensor make_input(int64_t rows, int64_t cols, int layout, uint64_t seed) {
  std::vector<double> v = testing::random_tensor({rows, cols}, seed).to_doubles();
  if (rows > 1) std::fill_n(v.begin() + (rows / 2) * cols, cols, 0.0);
  v[size_t((rows - 1) * cols + cols / 2)] = 1e4;
  const DType dtype = layout >= 2 ? DType::bf16 : DType::f32;
  if (layout % 2 == 0) return Tensor::from_values(v, {rows, cols}, dtype);
  std::vector<double> vt(v.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) vt[size_t(c * rows + r)] = v[size_t(r * cols + c)];
  return Tensor::from_values(vt, {cols, rows}, dtype).t();
}

// The reference's own block geometry (not quantized.h's block_rows/block_cols).
struct RefGrid {
  int64_t br, bc;
};
RefGrid ref_grid(Granularity g, int64_t rows, int64_t cols) {
  switch (g) {
    case Granularity::tensor: return {rows, cols};
    case Granularity::row: return {1, cols};
    case Granularity::tile_1x128: return {1, 128};
    case Granularity::block_128x128: return {128, 128};
    case Granularity::mx_1x32: return {1, 32};
    case Granularity::nv_1x16: return {1, 16};  // FP4 only: tests/test_fp4_quantize.cpp
    case Granularity::nv_16x16: return {16, 16};
  }
  return {rows, cols};
}

// Scale from the formula, in double with frexp (independent of format.h's bit manipulation).
float ref_scale(double amax, Format f, const ScaleOptions& o) {
  if (amax == 0.0 || !std::isfinite(amax)) return 1.0f;
  double s = max_finite(f) / amax / std::ldexp(1.0, o.margin);
  if (o.power_of_two) {
    int e;
    std::frexp(s, &e);  // s = m 2^e, m in [0.5, 1): floor to 2^(e-1)
    s = std::ldexp(1.0, e - 1);
  }
  return float(s);
}

// MX: the smallest 2^e >= amax / max_finite.
float ref_mx_scale_inv(double amax, Format f) {
  if (amax == 0.0 || !std::isfinite(amax)) return 1.0f;
  int e;
  const double m = std::frexp(amax / max_finite(f), &e);  // m in [0.5, 1)
  if (m == 0.5) e -= 1;
  return std::ldexp(1.0f, std::clamp(e, -127, 127));
}

void expect_matches_reference(const Tensor& x, Granularity g, Format f, const ScaleOptions& o) {
  const int64_t rows = x.size(0), cols = x.size(1);
  SCOPED_TRACE(::testing::Message() << granularity_name(g) << " " << format_name(f) << " " << x.describe()
                                    << (x.is_contiguous() ? "" : " (strided)") << " margin " << o.margin
                                    << (o.power_of_two ? " pow2" : ""));
  const QuantizedTensor q = quantize(x, g, f, o);
  ASSERT_EQ(q.granularity, g);
  ASSERT_EQ(q.data.shape(), (Shape{rows, cols}));
  ASSERT_EQ(q.data.dtype(), dtype_of(f));
  const RefGrid grid = ref_grid(g, rows, cols);
  const int64_t nbr = (rows + grid.br - 1) / grid.br, nbc = (cols + grid.bc - 1) / grid.bc;
  const Shape want_shape = g == Granularity::tensor ? Shape{1} : g == Granularity::row ? Shape{rows} : Shape{nbr, nbc};
  ASSERT_EQ(q.scale_inv.shape(), want_shape);

  const std::vector<double> xs = x.to_doubles();
  const std::vector<uint8_t> codes = testing::bytes(q.data);
  const std::vector<double> scale_inv = q.scale_inv.to_doubles();
  const std::vector<double> dq = q.dequantize().to_doubles();
  // Round-trip bounds. In the normal range of the scaled block, |x s| in [min normal, max finite],
  // round-to-nearest errs by at most half an ulp: 2^-4 |x s| for E4M3 (3 mantissa bits), 2^-3 for
  // E5M2 (2 bits). The float product x*s, the stored 1/s and q * scale_inv each add one float
  // rounding (2^-24), hence the slack. Below min normal the spacing is the smallest subnormal
  // (2^-9 / 2^-16), so the error is at most half of it, times scale_inv, back in x's units.
  const double u = f == Format::e4m3 ? 0x1p-4 : 0x1p-3;
  const double min_normal = f == Format::e4m3 ? 0x1p-6 : 0x1p-14;
  const double half_min_sub = f == Format::e4m3 ? 0x1p-10 : 0x1p-17;
  const double slack = 4 * 0x1p-24;

  for (int64_t bi = 0; bi < nbr; ++bi) {
    for (int64_t bj = 0; bj < nbc; ++bj) {
      const int64_t r0 = bi * grid.br, r1 = std::min(rows, r0 + grid.br);
      const int64_t c0 = bj * grid.bc, c1 = std::min(cols, c0 + grid.bc);
      double amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(xs[size_t(r * cols + c)]));
      float scale, want_inv;
      if (g == Granularity::mx_1x32) {
        want_inv = ref_mx_scale_inv(amax, f);
        ASSERT_EQ(mx_scale_inv_from_amax(float(amax), f), want_inv) << "amax " << amax;
        scale = float(1.0 / double(want_inv));
      } else {
        scale = ref_scale(amax, f, o);
        ASSERT_EQ(scale_from_amax(float(amax), f, o), scale) << "amax " << amax;
        want_inv = float(1.0 / double(scale));  // double division rounded to float: correctly rounded
      }
      if (amax == 0.0) {
        ASSERT_EQ(want_inv, 1.0f);  // the zero row: scale 1
      }
      ASSERT_EQ(scale_inv[size_t(bi * nbc + bj)], double(want_inv)) << "block " << bi << "," << bj;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) {
          const size_t i = size_t(r * cols + c);
          const double xv = xs[i];
          const float scaled = float(xv * double(scale));  // exact double product, rounded once: x*s in float
          ASSERT_EQ(int(codes[i]), int(encode(scaled, f))) << "element " << r << "," << c << " x=" << xv;
          const double err = std::fabs(dq[i] - xv);
          if (std::fabs(double(scaled)) >= min_normal) {
            ASSERT_LE(err, (u + slack) * std::fabs(xv)) << "element " << r << "," << c << " x=" << xv;
          } else {
            ASSERT_LE(err, half_min_sub * want_inv * (1 + slack) + slack * std::fabs(xv))
                << "element " << r << "," << c << " x=" << xv;
          }
        }
      }
    }
  }
}

TEST(Fp8Quantize, MatchesDoubleReferenceAtEveryGranularity) {
  const std::vector<int64_t> sizes = {1, 7, 65, 129, 300};
  uint64_t seed = 1;
  for (int64_t rows : sizes) {
    for (int64_t cols : sizes) {
      for (int layout = 0; layout < 4; ++layout) {
        const Tensor x = make_input(rows, cols, layout, seed++);
        for (Granularity g : kGranularities) {
          for (Format f : kFormats) {
            expect_matches_reference(x, g, f, {});
            if (g != Granularity::mx_1x32 && layout == 1)
              expect_matches_reference(x, g, f, {.margin = 1, .power_of_two = true});
            if (::testing::Test::HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

TEST(Fp8Quantize, LargeInputRunsThreadedAndMatchesReference) {
  // 600 x 1000 crosses the OpenMP threshold; the result must equal the reference bit for bit.
  const Tensor x = make_input(600, 1000, 1, 99);
  for (Granularity g : kGranularities) expect_matches_reference(x, g, Format::e4m3, {});
}

TEST(Fp8Quantize, TransposedViewIsThe128x1WgradAxis) {
  // quantize(x.t(), tile_1x128) tiles x along its rows ("1x128 becomes 128x1"): the same bytes and
  // scales as quantizing a contiguous copy of the transpose.
  const Tensor x = make_input(300, 129, 0, 7);
  for (Format f : kFormats) {
    for (Granularity g : {Granularity::tile_1x128, Granularity::block_128x128, Granularity::mx_1x32}) {
      const QuantizedTensor a = quantize(x.t(), g, f), b = quantize(x.t().contiguous(), g, f);
      EXPECT_EQ(a.data.shape(), (Shape{129, 300}));
      const Shape want = g == Granularity::block_128x128 ? Shape{2, 3}
                         : g == Granularity::mx_1x32     ? Shape{129, 10}
                                                         : Shape{129, 3};
      EXPECT_EQ(a.scale_inv.shape(), want);
      EXPECT_EQ(testing::bytes(a.data), testing::bytes(b.data));
      EXPECT_EQ(a.scale_inv.to_doubles(), b.scale_inv.to_doubles());
    }
  }
}

TEST(Fp8Quantize, TransposeQuantizedEqualsQuantizingTheTranspose) {
  // Per-tensor and 128x128 scales transpose with the data (the Dgrad W operand's shortcut): on a
  // ragged shape with edge blocks in both directions, with a NaN and an inf in one block, the bytes
  // and scales are those of quantizing xᵀ. Row, 1x128 and 1x32 scales do not transpose.
  std::vector<double> v = make_input(300, 129, 0, 11).to_doubles();
  v[5] = std::nan("");
  v[130 * 129 + 128] = INFINITY;
  const Tensor x = Tensor::from_values(v, {300, 129});
  for (Format f : kFormats) {
    for (Granularity g : {Granularity::tensor, Granularity::block_128x128}) {
      ASSERT_TRUE(transposes_exactly(g));
      const QuantizedTensor a = transpose_quantized(quantize(x, g, f)), b = quantize(x.t(), g, f);
      EXPECT_EQ(a.data.shape(), (Shape{129, 300}));
      EXPECT_EQ(a.scale_inv.shape(), b.scale_inv.shape());
      EXPECT_EQ(testing::bytes(a.data), testing::bytes(b.data));
      EXPECT_EQ(testing::bytes(a.scale_inv), testing::bytes(b.scale_inv));
    }
  }
  for (Granularity g : {Granularity::row, Granularity::tile_1x128, Granularity::mx_1x32}) {
    EXPECT_FALSE(transposes_exactly(g));
    EXPECT_THROW(transpose_quantized(quantize(x, g, Format::e4m3)), Error);
  }
}

TEST(Fp8Quantize, RequantizeTransposedEqualsDequantizeTransposeQuantize) {
  // Wgrad's q(Xqᵀ) from Fprop's 1x128 q(X), fused (one pass per 128x128 block, no fp32 copies):
  // the bytes and scales of the composition it replaces, on ragged shapes (edge blocks both ways,
  // one large enough to run threaded), with a NaN and an inf, both formats on each side, a margin
  // and power-of-two scales; and stochastic rounding, which takes the composition.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{300, 129}, {1, 128}, {129, 1}, {700, 1000}};
  std::vector<ScaleOptions> options = {{}, {/*margin=*/2, /*power_of_two=*/true}};
  options.push_back({});
  options.back().stochastic_rounding = true;
  options.back().seed = 5;
  uint64_t seed = 40;
  for (const auto& [rows, cols] : shapes) {
    std::vector<double> v = make_input(rows, cols, 0, seed++).to_doubles();
    if (rows * cols > 200) {
      v[7] = std::nan("");
      v[size_t(rows * cols - 3)] = -INFINITY;
    }
    const Tensor x = Tensor::from_values(v, {rows, cols});
    for (Format from : kFormats) {
      const QuantizedTensor q = quantize(x, Granularity::tile_1x128, from);
      for (Format to : kFormats) {
        for (const ScaleOptions& o : options) {
          SCOPED_TRACE(::testing::Message()
                       << "[" << rows << ", " << cols << "] " << format_name(from) << " -> " << format_name(to)
                       << " margin " << o.margin << (o.stochastic_rounding ? " stochastic" : ""));
          const QuantizedTensor a = requantize_transposed(q, Granularity::tile_1x128, to, o);
          const QuantizedTensor b = quantize(q.dequantize().t(), Granularity::tile_1x128, to, o);
          EXPECT_EQ(a.data.shape(), (Shape{cols, rows}));
          EXPECT_EQ(a.scale_inv.shape(), b.scale_inv.shape());
          EXPECT_EQ(testing::bytes(a.data), testing::bytes(b.data));
          EXPECT_EQ(testing::bytes(a.scale_inv), testing::bytes(b.scale_inv));
        }
      }
    }
  }
}

TEST(Fp8Quantize, NanAndInfShowInTheData) {
  // A block holding NaN or inf gets scale 1 (scale_from_amax of a non-finite amax); NaN stays NaN,
  // inf saturates to the largest finite value, and the block's other elements are cast unscaled.
  std::vector<double> v(64, 0.5);
  v[3] = std::nan("");
  v[40] = -INFINITY;
  const Tensor x = Tensor::from_values(v, {1, 64});
  for (Format f : kFormats) {
    const QuantizedTensor q = quantize(x, Granularity::mx_1x32, f);
    const std::vector<double> s = q.scale_inv.to_doubles();
    const std::vector<uint8_t> codes = testing::bytes(q.data);
    EXPECT_EQ(s, (std::vector<double>{1.0, 1.0}));
    EXPECT_TRUE(std::isnan(decode(codes[3], f)));
    EXPECT_EQ(decode(codes[40], f), -float(max_finite(f)));
    EXPECT_EQ(decode(codes[0], f), 0.5f);
    const QuantizedTensor t = quantize(x, Granularity::tensor, f);
    EXPECT_EQ(t.scale_inv.item(), 1.0);
    EXPECT_TRUE(std::isnan(t.dequantize().to_doubles()[3]));
  }
}

// ---- delayed scaling ----------------------------------------------------------------------------

TEST(Fp8Quantize, AmaxHistoryKeepsTheLastLengthValues) {
  AmaxHistory h(3);
  EXPECT_EQ(h.amax(), 0.0f);
  for (float a : {1.0f, 5.0f, 2.0f}) h.push(a);
  EXPECT_EQ(h.amax(), 5.0f);
  h.push(0.5f);  // window 5, 2, 0.5
  EXPECT_EQ(h.amax(), 5.0f);
  h.push(0.25f);  // window 2, 0.5, 0.25: the 5 has left
  EXPECT_EQ(h.amax(), 2.0f);
  EXPECT_EQ(h.values(), (std::deque<float>{2.0f, 0.5f, 0.25f}));
  AmaxHistory bad(0);
  EXPECT_TRUE(testing::mentions(testing::error_of([&] { bad.push(1.0f); }), {"AmaxHistory", "length"}));
}

TEST(Fp8Quantize, QuantizeWithScaleUsesExactlyThatScale) {
  const Tensor x = testing::random_tensor({65, 129}, 3, DType::f32, 100.0);  // some values saturate at scale 3
  const std::vector<double> xs = x.to_doubles();
  for (Format f : kFormats) {
    const QuantizedTensor q = quantize_with_scale(x.t(), 3.0f, f);
    EXPECT_EQ(q.granularity, Granularity::tensor);
    EXPECT_EQ(q.scale_inv.item(), double(1.0f / 3.0f));
    const std::vector<uint8_t> codes = testing::bytes(q.data);
    for (int64_t r = 0; r < 129; ++r)
      for (int64_t c = 0; c < 65; ++c)
        ASSERT_EQ(int(codes[size_t(r * 65 + c)]), int(encode(float(xs[size_t(c * 129 + r)]) * 3.0f, f)));
  }
  EXPECT_TRUE(testing::mentions(testing::error_of([&] { quantize_with_scale(x, 0.0f, Format::e4m3); }),
                                {"quantize_with_scale", "positive"}));
  EXPECT_TRUE(testing::mentions(testing::error_of([&] { quantize_with_scale(x, NAN, Format::e4m3); }),
                                {"quantize_with_scale"}));
}

// ---- stochastic rounding ------------------------------------------------------------------------

// Rounds v with N independent words and returns the mean of the rounded values.
template <typename Round>
double stochastic_mean(int n, uint64_t seed, Round&& round) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += double(round(stochastic_word(seed, uint64_t(i))));
  return sum / n;
}

TEST(Fp8Format, StochasticRoundingIsUnbiased) {
  // Each rounding of v in [lo, hi] is lo + (hi - lo) B with B ~ Bernoulli(p), p = (v - lo) / (hi - lo).
  // The mean of N roundings is lo + (hi - lo) p_hat with sd(p_hat) = sqrt(p (1 - p) / N) <= 0.5 / sqrt(N);
  // with N = 2^16 that is <= 2^-9, and 6 sd (a false alarm once in 5e8 runs) is 6 * 2^-9 (hi - lo).
  constexpr int kN = 1 << 16;
  const double bound = 6 * 0.5 / std::sqrt(double(kN));
  struct Case {
    const char* name;
    double lo, hi, p;
    std::function<float(float, uint32_t)> round;
  };
  const auto e4 = [](float v, uint32_t w) { return codec::e4m3_to_float(float_to_e4m3_stochastic(v, w)); };
  const auto e5 = [](float v, uint32_t w) { return codec::e5m2_to_float(float_to_e5m2_stochastic(v, w)); };
  const auto b16 = [](float v, uint32_t w) { return codec::bf16_to_float(float_to_bf16_stochastic(v, w)); };
  const std::vector<Case> cases = {
      {"e4m3 normal", 1.0, 1.125, 0.3, e4},
      {"e4m3 negative", -1.125, -1.0, 0.9, e4},  // lo = -1.125 rounds down in value: away from zero
      {"e4m3 subnormal", 0x1p-9 * 3, 0x1p-9 * 4, 0.5, e4},
      {"e4m3 below the smallest subnormal", 0.0, 0x1p-9, 0.1, e4},
      {"e4m3 top binade", 416.0, 448.0, 0.7, e4},
      {"e5m2 normal", 12.0, 14.0, 0.01, e5},
      {"e5m2 subnormal", 0.0, 0x1p-16, 0.25, e5},
      {"bf16", 1.0, 1.0 + 0x1p-7, 0.37, b16},
  };
  for (const Case& c : cases) {
    // v at fraction p from the end nearer zero (for negatives: from hi).
    const float v = c.lo >= 0 ? float(c.lo + c.p * (c.hi - c.lo)) : float(c.hi - c.p * (c.hi - c.lo));
    const double p = c.lo >= 0 ? (double(v) - c.lo) / (c.hi - c.lo) : (c.hi - double(v)) / (c.hi - c.lo);
    const double mean = stochastic_mean(kN, 17, [&](uint32_t w) {
      const float r = c.round(v, w);
      EXPECT_TRUE(double(r) == c.lo || double(r) == c.hi) << c.name << ": " << r << " is not a neighbour of " << v;
      return r;
    });
    const double p_hat = c.lo >= 0 ? (mean - c.lo) / (c.hi - c.lo) : (c.hi - mean) / (c.hi - c.lo);
    EXPECT_NEAR(p_hat, p, bound) << c.name << " v=" << v;
  }
  // Representable values never move; NaN stays NaN; saturation holds.
  for (uint32_t w : {0u, 1u, 0x80000000u, 0xFFFFFFFFu}) {
    EXPECT_EQ(codec::e4m3_to_float(float_to_e4m3_stochastic(1.125f, w)), 1.125f);
    EXPECT_EQ(codec::bf16_to_float(float_to_bf16_stochastic(1.0f, w)), 1.0f);
    EXPECT_TRUE(std::isnan(codec::e4m3_to_float(float_to_e4m3_stochastic(NAN, w))));
    EXPECT_EQ(codec::e4m3_to_float(float_to_e4m3_stochastic(470.0f, w)), 448.0f);
    EXPECT_EQ(codec::e5m2_to_float(float_to_e5m2_stochastic(-INFINITY, w)), -57344.0f);
  }
}

TEST(Fp8Quantize, StochasticRoundingIsDeterministicAndPicksANeighbour) {
  const Tensor x = testing::random_tensor({129, 300}, 11);
  const std::vector<double> xs = x.to_doubles();
  for (Format f : kFormats) {
    const ScaleOptions sr{.stochastic_rounding = true, .seed = 42};
    const QuantizedTensor a = quantize(x, Granularity::tile_1x128, f, sr);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const QuantizedTensor b = quantize(x, Granularity::tile_1x128, f, sr);
    omp_set_num_threads(threads);
    EXPECT_EQ(testing::bytes(a.data), testing::bytes(b.data));  // same seed, any thread count: same bits
    const QuantizedTensor c = quantize(x, Granularity::tile_1x128, f, {.stochastic_rounding = true, .seed = 43});
    EXPECT_NE(testing::bytes(a.data), testing::bytes(c.data));
    const QuantizedTensor n = quantize(x, Granularity::tile_1x128, f);
    EXPECT_EQ(a.scale_inv.to_doubles(), n.scale_inv.to_doubles());  // scales do not depend on the rounding
    // Every code is the nearest-even code of x*s or the FP8 value on the other side of x*s.
    const std::vector<uint8_t> codes = testing::bytes(a.data);
    int differ = 0;
    for (int64_t r = 0; r < 129; ++r) {
      for (int64_t col = 0; col < 300; ++col) {
        const size_t i = size_t(r * 300 + col);
        double amax = 0;  // of the element's 1x128 tile
        for (int64_t k = col / 128 * 128; k < std::min<int64_t>(300, col / 128 * 128 + 128); ++k)
          amax = std::max(amax, std::fabs(xs[size_t(r * 300 + k)]));
        const float t = float(xs[i]) * scale_from_amax(float(amax), f);
        const double got = decode(codes[i], f), nearest = decode(encode(t, f), f);
        if (got == nearest) continue;
        ++differ;
        // The other neighbour: t lies strictly between got and nearest, and they are adjacent codes.
        ASSERT_TRUE((got - t) * (nearest - t) < 0) << "x*s=" << t << " got " << got << " nearest " << nearest;
        ASSERT_EQ(std::abs(int(codes[i] & 0x7F) - int(encode(t, f) & 0x7F)), 1);
      }
    }
    EXPECT_GT(differ, 0);
  }
}

// ---- bad input ----------------------------------------------------------------------------------

TEST(Fp8Quantize, RejectsBadInput) {
  using testing::error_of;
  using testing::mentions;
  EXPECT_TRUE(mentions(error_of([] { quantize(Tensor::zeros({8}), Granularity::tensor, Format::e4m3); }),
                       {"quantize", "2-d", "[8]"}));
  EXPECT_TRUE(mentions(error_of([] {
                         quantize(Tensor::zeros({2, 3, 4}), Granularity::row, Format::e4m3);
                       }),
                       {"quantize", "2-d", "[2, 3, 4]"}));
  EXPECT_TRUE(mentions(error_of([] {
                         quantize(Tensor::zeros({4, 4}, DType::i32), Granularity::row, Format::e4m3);
                       }),
                       {"quantize", "fp32 or bf16", "int32"}));
  EXPECT_TRUE(mentions(error_of([] {
                         quantize(Tensor::zeros({4, 4}, DType::f8e4m3), Granularity::row, Format::e4m3);
                       }),
                       {"quantize", "fp32 or bf16", "fp8e4m3"}));
  EXPECT_TRUE(mentions(error_of([] {
                         quantize(Tensor::zeros({4, 64}), Granularity::mx_1x32, Format::e4m3, {.margin = 1});
                       }),
                       {"quantize", "mx_1x32", "margin"}));
  if (cuda_built() && cuda_device_count() > 0) {
    // CUDA runs tensor, row, 1x128 and 128x128 (fp8/cuda); MX blocks are CPU-emulated on Hopper.
    const Tensor x = Tensor::zeros({4, 64}, DType::f32, Device::cuda());
    EXPECT_TRUE(mentions(error_of([&] { quantize(x, Granularity::mx_1x32, Format::e4m3); }), {"quantize", "cuda"}));
  }
}

}  // namespace
}  // namespace daedalus::fp8
