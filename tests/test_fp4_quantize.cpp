// FP4 quantizers, GEMM emulation and the random Hadamard transform (fp8/quantized.h, fp8/scaled_gemm.h,
// fp8/hadamard.h) against double-precision references: NVFP4 (1x16 and 16x16 two-level scales) and
// MXFP4 (1x32, OCP rule) codes and scales element by element, edge blocks (zeros, NaN, inf),
// stochastic rounding, the exact transpose of 16x16 blocks, the exact BF16 fold the GEMM relies on,
// every FP4 GEMM pair against the product of the dequantized operands, the Hadamard transform's
// orthogonality and its cancellation in Wgrad, and FP4 statistics.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "autograd/dtype_codec.h"
#include "autograd/kernels/copy.h"
#include "autograd/kernels/gemm.h"
#include "fp8/format.h"
#include "fp8/hadamard.h"
#include "fp8/quantized.h"
#include "fp8/scaled_gemm.h"
#include "fp8/stats.h"
#include "tests/testing.h"

namespace daedalus::fp8 {
namespace {

constexpr Granularity kFp4Granularities[] = {Granularity::nv_1x16, Granularity::nv_16x16, Granularity::mx_1x32};

// The E2M1 code of t by nearest-value search in double (ties to even, saturating): independent of the codec.
uint8_t nearest_e2m1(double t) {
  static constexpr double v[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const uint8_t sign = t < 0 || (t == 0 && std::signbit(t)) ? 8 : 0;
  const double a = std::fabs(t);
  if (a >= 6) return sign | 7;
  int best = 0;
  for (int i = 1; i < 8; ++i) {
    const double d = std::fabs(a - v[i]), bd = std::fabs(a - v[best]);
    if (d < bd || (d == bd && i % 2 == 0)) best = i;
  }
  return uint8_t(sign | best);
}

// Checks q = quantize(x, g, e2m1) element by element against the formulas in double: the block scale
// (NVFP4: the E4M3 code of amax_b * S / 6 — equal, or the neighbour across a midpoint the FP32
// arithmetic straddled; MX: 2^(floor(log2 amax_b) - 2) exactly), and every code as the nearest E2M1
// value of x / (block scale * tensor scale) in double — except within 2^-20 of an E2M1 tie, where
// the FP32 encode scale's rounding may decide (NVFP4 only; MX scales are exact powers of two).
// Returns how many elements sat at such a tie.
int check_against_reference(const Tensor& x, Granularity g, const QuantizedTensor& q) {
  const int64_t rows = x.size(0), cols = x.size(1);
  const std::vector<double> xs = x.to_doubles(), si = q.scale_inv.to_doubles();
  const std::vector<uint8_t> codes = testing::bytes(q.data);
  const int64_t br = block_rows(g, rows), bc = block_cols(g, cols), nbc = (cols + bc - 1) / bc;
  double tensor_amax = 0;
  for (double v : xs) tensor_amax = std::max(tensor_amax, std::fabs(v));
  const bool nv = is_nvfp4(g);
  const double S = nv ? double(nvfp4_tensor_scale(float(tensor_amax))) : 1.0;
  if (nv) {
    EXPECT_EQ(double(q.tensor_scale_inv), double(1.0f / float(S)));
  }
  int ties = 0;
  for (int64_t bi = 0; bi * br < rows; ++bi) {
    for (int64_t bj = 0; bj < nbc; ++bj) {
      double amax = 0;
      for (int64_t r = bi * br; r < std::min(rows, (bi + 1) * br); ++r)
        for (int64_t c = bj * bc; c < std::min(cols, (bj + 1) * bc); ++c)
          amax = std::max(amax, std::fabs(xs[size_t(r * cols + c)]));
      const double got_scale = si[size_t(bi * nbc + bj)];
      double decode;  // the block's decode scale in double, as the reference sees it
      if (nv) {
        const double exact = amax * S / 6.0;
        const float want = codec::e4m3_to_float(codec::float_to_e4m3(float(exact)));
        if (double(want) != got_scale) {
          EXPECT_LT(std::fabs(exact - 0.5 * (double(want) + got_scale)), exact * 0x1p-20)
              << "block " << bi << "," << bj;
        }
        decode = got_scale / S;
      } else {
        const double want =
            amax == 0 ? 1.0 : std::ldexp(1.0, std::clamp(int(std::floor(std::log2(amax))) - 2, -127, 127));
        EXPECT_EQ(got_scale, want) << "block " << bi << "," << bj << " amax " << amax;
        decode = got_scale;
      }
      for (int64_t r = bi * br; r < std::min(rows, (bi + 1) * br); ++r) {
        for (int64_t c = bj * bc; c < std::min(cols, (bj + 1) * bc); ++c) {
          const size_t i = size_t(r * cols + c);
          if (decode == 0) {  // an underflowed NVFP4 block scale: the block reads as zeros
            EXPECT_EQ(codec::e2m1_to_float({codes[i]}) * got_scale, 0.0);
            continue;
          }
          const double t = xs[i] / decode;
          const uint8_t want = nearest_e2m1(t);
          if (codes[i] == want) continue;
          // Only at a tie between two E2M1 values may the FP32 arithmetic pick the other one.
          const double a = std::fabs(t);
          const double ties_at[] = {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0};
          bool near = false;
          for (double tie : ties_at) near = near || std::fabs(a - tie) <= tie * 0x1p-20;
          EXPECT_TRUE(nv && near) << "x=" << xs[i] << " t=" << t << " code " << int(codes[i]) << " want " << int(want)
                                  << " (" << granularity_name(g) << " row " << r << " col " << c << ")";
          ++ties;
        }
      }
    }
  }
  return ties;
}

TEST(Fp4Quantize, MatchesTheFormulasInDoubleAtEveryGranularity) {
  // Magnitudes vary by powers of two across rows and 128-column tiles; row 3 is all zero; ragged
  // shapes leave short edge blocks.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 300}, {16, 64}, {5, 7}}) {
    const Tensor x = testing::scaled_normal(rows, cols, uint64_t(rows * cols));
    for (Granularity g : kFp4Granularities) {
      const QuantizedTensor q = quantize(x, g, Format::e2m1);
      ASSERT_EQ(q.data.dtype(), DType::f4e2m1);
      EXPECT_LT(check_against_reference(x, g, q), 3) << granularity_name(g);
      // bf16 input: the same as its fp32 value; a transposed view: the same as its copy.
      EXPECT_TRUE(testing::bit_identical(quantize(x.to(DType::bf16), g, Format::e2m1).data,
                                         quantize(x.to(DType::bf16).to(DType::f32), g, Format::e2m1).data));
      EXPECT_TRUE(testing::bit_identical(quantize(x.t(), g, Format::e2m1).data,
                                         quantize(x.t().contiguous(), g, Format::e2m1).data));
    }
  }
}

TEST(Fp4Quantize, EdgeBlocksZeroNanInf) {
  // All zeros: scale 1 everywhere (MX) / scale code 0 (NVFP4, S = 1), codes 0, dequantized 0, no NaN.
  const Tensor zeros = Tensor::zeros({16, 32});
  for (Granularity g : kFp4Granularities) {
    const QuantizedTensor q = quantize(zeros, g, Format::e2m1);
    EXPECT_EQ(q.tensor_scale_inv, 1.0f);
    for (double v : q.dequantize().to_doubles()) EXPECT_EQ(v, 0.0) << granularity_name(g);
  }
  // One NaN in block 0 of row 0: that block dequantizes to NaN (its scale is NaN: E4M3 0x7F / E8M0
  // 0xFF), the other blocks stay finite. One inf in row 1: saturates to the largest value.
  std::vector<float> v(size_t(2 * 64), 1.0f);
  v[5] = std::numeric_limits<float>::quiet_NaN();
  v[64 + 40] = INFINITY;
  const Tensor x = Tensor::from_vector(v, {2, 64});
  for (Granularity g : {Granularity::nv_1x16, Granularity::mx_1x32}) {
    const QuantizedTensor q = quantize(x, g, Format::e2m1);
    const std::vector<double> d = q.dequantize().to_doubles();
    const int64_t bw = block_cols(g, 64);
    for (int64_t c = 0; c < 64; ++c) EXPECT_EQ(std::isnan(d[size_t(c)]), c < bw) << granularity_name(g) << " col " << c;
    EXPECT_EQ(testing::bytes(q.data)[64 + 40], 0x7) << "inf saturates to +6";
    EXPECT_TRUE(std::isfinite(d[64 + 40]));
  }
}

TEST(Fp4Quantize, SubnormalTensorsUnderflowWithoutNan) {
  // A tensor whose amax is a float subnormal: MX's scale clamps at 2^-127 and NVFP4's S at FLT_MAX,
  // whose inverse times a subnormal E4M3 block scale is itself subnormal in FP32 (the encode scale
  // saturates at FLT_MAX). Either way every element reads as zero — finite, never NaN — and the
  // statistics say so. (A limit of the formats' arithmetic in FP32, documented in precision.md.)
  std::vector<float> v(32);
  for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 2 ? -1.0f : 1.0f) * 1e-40f * float(1 + i % 7);
  const Tensor x = Tensor::from_vector(v, {1, 32});
  for (Granularity g : {Granularity::nv_1x16, Granularity::mx_1x32}) {
    const QuantizedTensor q = quantize(x, g, Format::e2m1);
    for (double d : q.dequantize().to_doubles()) EXPECT_EQ(d, 0.0) << granularity_name(g);
    EXPECT_DOUBLE_EQ(quant_stats(x, q).underflow_pct, 100.0) << granularity_name(g);
  }
}

TEST(Fp4Quantize, StochasticRoundingIsReproducibleAndUnbiasedOnAverage) {
  const Tensor x = testing::random_tensor({64, 96}, 4);
  const ScaleOptions sr{.stochastic_rounding = true, .seed = 7};
  for (Granularity g : kFp4Granularities) {
    const QuantizedTensor a = quantize(x, g, Format::e2m1, sr);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const QuantizedTensor b = quantize(x, g, Format::e2m1, sr);
    omp_set_num_threads(threads);
    EXPECT_TRUE(testing::bit_identical(a.data, b.data)) << "same seed, any thread count";
    EXPECT_FALSE(testing::bytes(a.data) ==
                 testing::bytes(quantize(x, g, Format::e2m1, {.stochastic_rounding = true, .seed = 8}).data));
    EXPECT_EQ(a.scale_inv.to_doubles(), quantize(x, g, Format::e2m1).scale_inv.to_doubles())
        << "scales do not depend on it";
  }
  // The mean of 400 stochastic quantizations of x approaches x (unbiased rounding; nearest-even has
  // a systematic error): per element the mean's sd is at most half a step / 20; over all elements the
  // mean absolute error of the average falls well below nearest-even's.
  const Tensor y = testing::random_tensor({8, 64}, 5);
  const std::vector<double> ys = y.to_doubles();
  std::vector<double> avg(ys.size(), 0.0);
  for (uint64_t s = 0; s < 400; ++s) {
    const std::vector<double> d =
        quantize(y, Granularity::nv_1x16, Format::e2m1, {.stochastic_rounding = true, .seed = s})
            .dequantize()
            .to_doubles();
    for (size_t i = 0; i < d.size(); ++i) avg[i] += d[i] / 400;
  }
  const std::vector<double> rne = quantize(y, Granularity::nv_1x16, Format::e2m1).dequantize().to_doubles();
  double err_sr = 0, err_rne = 0;
  for (size_t i = 0; i < ys.size(); ++i) {
    err_sr += std::fabs(avg[i] - ys[i]);
    err_rne += std::fabs(rne[i] - ys[i]);
  }
  EXPECT_LT(err_sr, 0.25 * err_rne);
}

TEST(Fp4Quantize, Blocks16x16TransposeExactly) {
  const Tensor w = testing::scaled_normal(48, 80, 9);
  const QuantizedTensor q = quantize(w, Granularity::nv_16x16, Format::e2m1);
  const QuantizedTensor t = transpose_quantized(q), want = quantize(w.t(), Granularity::nv_16x16, Format::e2m1);
  EXPECT_TRUE(testing::bit_identical(t.data, want.data));
  EXPECT_TRUE(testing::bit_identical(t.scale_inv, want.scale_inv));
  EXPECT_EQ(t.tensor_scale_inv, want.tensor_scale_inv);
  testing::expect_error([&] { transpose_quantized(quantize(w, Granularity::nv_1x16, Format::e2m1)); }, {"nv_1x16"});
}

TEST(Fp4Quantize, ScaledValuesAreExactInBf16) {
  // fp4_scaled_values_bf16 times NVFP4's tensor scale is dequantize() bit for bit: value * block
  // scale is exact in BF16 (checked over every code and many scales, including MX's extremes).
  for (Granularity g : kFp4Granularities) {
    const Tensor x = testing::scaled_normal(32, 96, 12);
    const QuantizedTensor q = quantize(x, g, Format::e2m1);
    const Tensor folded = kernels::cast(fp4_scaled_values_bf16(q), DType::f32);
    const std::vector<double> f = folded.to_doubles(), d = q.dequantize().to_doubles();
    for (size_t i = 0; i < d.size(); ++i) ASSERT_EQ(double(float(f[i]) * q.tensor_scale_inv), d[i]) << i;
  }
  for (float amax : {1e-38f, 1e-30f, 3e38f, 1.0f}) {  // MX scales from 2^-127 to 2^125
    const Tensor x = Tensor::from_vector(std::vector<float>{amax, amax / 3, -amax / 5, amax * 0.7f}, {1, 4});
    const QuantizedTensor q = quantize(x, Granularity::mx_1x32, Format::e2m1);
    const std::vector<double> f = kernels::cast(fp4_scaled_values_bf16(q), DType::f32).to_doubles();
    EXPECT_EQ(f, q.dequantize().to_doubles()) << amax;
  }
}

// scaled_gemm of FP4 pairs against the double product of the dequantized operands. The CPU forms
// the same exact products in one FP32 GEMM (K terms) and scales once: gemm_sums_close's bound for
// k = K products, plus one rounding for NVFP4's alpha (2^-23 relative).
TEST(Fp4Gemm, EveryPairMatchesTheDequantizedProduct) {
  struct Pair {
    Granularity a, b;
    Format fa;
  };
  const Pair pairs[] = {{Granularity::nv_1x16, Granularity::nv_1x16, Format::e2m1},
                        {Granularity::nv_1x16, Granularity::nv_16x16, Format::e2m1},
                        {Granularity::nv_16x16, Granularity::nv_1x16, Format::e2m1},
                        {Granularity::mx_1x32, Granularity::mx_1x32, Format::e2m1},
                        {Granularity::tile_1x128, Granularity::mx_1x32, Format::e4m3}};
  for (const Pair& p : pairs) {
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{33, 20, 300}, {16, 16, 16}, {7, 5, 45}}) {
      const Tensor xa = testing::scaled_normal(M, K, uint64_t(M + K)),
                   xb = testing::scaled_normal(N, K, uint64_t(N * K));
      const QuantizedTensor a = quantize(xa, p.a, p.fa), b = quantize(xb, p.b, Format::e2m1);
      const Tensor y = scaled_gemm(a, b);
      const Tensor da = a.dequantize(), db = b.dequantize();
      const std::vector<double> va = da.to_doubles(), vb = db.to_doubles();
      std::vector<double> want(size_t(M * N)), abs_product(size_t(M * N));
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double s = 0, sa = 0;
          for (int64_t k = 0; k < K; ++k) {
            s += va[size_t(m * K + k)] * vb[size_t(n * K + k)];
            sa += std::fabs(va[size_t(m * K + k)] * vb[size_t(n * K + k)]);
          }
          want[size_t(m * N + n)] = s;
          abs_product[size_t(m * N + n)] = sa;
        }
      EXPECT_TRUE(testing::gemm_sums_close(y, Tensor::from_values(want, {M, N}),
                                           Tensor::from_values(abs_product, {M, N}), double(K), 0x1p-23))
          << granularity_name(p.a) << " x " << granularity_name(p.b) << " " << M << "x" << N << "x" << K;
    }
  }
  // Pairs without a block-scaled FP4 GEMM are rejected by name.
  const Tensor x = testing::random_tensor({16, 32}, 1);
  testing::expect_error(
      [&] {
        scaled_gemm(quantize(x, Granularity::nv_1x16, Format::e2m1), quantize(x, Granularity::mx_1x32, Format::e2m1));
      },
      {"nv_1x16", "mx_1x32"});
  testing::expect_error([&] { quantize(x, Granularity::tile_1x128, Format::e2m1); }, {"e2m1", "tile_1x128"});
  testing::expect_error([&] { quantize(x, Granularity::nv_1x16, Format::e4m3); }, {"e4m3", "nv_1x16"});
  testing::expect_error(
      [&] {
        scaled_gemm(quantize(x, Granularity::nv_1x16, Format::e2m1), quantize(x, Granularity::nv_1x16, Format::e2m1),
                    Accumulator{14, 0});
      },
      {"FP4", "exact"});
}

// ---- random Hadamard transform ------------------------------------------------------------------------

TEST(Fp4Hadamard, IsOrthogonalAndItsInverseRecoversTheInput) {
  // The matrix itself: H e_j is column j of H; entries +-1/4, and H Hᵀ = I exactly (sums of 16
  // products +-1/16 are exact in FP32).
  const uint64_t seed = 123;
  Tensor eye = Tensor::zeros({16, 16});
  for (int64_t j = 0; j < 16; ++j) eye.slice(0, j, j + 1).slice(1, j, j + 1).fill_(1.0);
  const std::vector<double> h = random_hadamard_16(eye, seed).to_doubles();  // row j = (H e_j)ᵀ = column j of H
  for (double v : h) EXPECT_EQ(std::fabs(v), 0.25);
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 16; ++k) {
      double dot = 0;  // (Hᵀ H)[i][k] = <column i, column k>
      for (int j = 0; j < 16; ++j) dot += h[size_t(i * 16 + j)] * h[size_t(k * 16 + j)];
      EXPECT_EQ(dot, i == k ? 1.0 : 0.0) << i << "," << k;
    }
  // Inverse recovers the input to 1e-6 (relative to its norm; FP32 butterflies), with a ragged width.
  const Tensor x = testing::random_tensor({9, 37}, 2);
  const Tensor y = random_hadamard_16(x, seed);
  ASSERT_EQ(y.shape(), (Shape{9, 48}));
  EXPECT_TRUE(testing::all_close(inverse_random_hadamard_16(y, seed, 37), x, 0, 1e-6));
  // Different seeds, different signs; the same seed, the same transform.
  EXPECT_NE(hadamard_signs(1), hadamard_signs(2));
  EXPECT_TRUE(testing::bit_identical(random_hadamard_16(x, seed), y));
}

TEST(Fp4Hadamard, CancelsInTheWgradProduct) {
  // dW = a bᵀ with a = dYᵀ [N, M], b = Xᵀ [K, M], both transformed along M (M = 37: zero-padded to
  // 48). With integer inputs every transformed value is a multiple of 1/4 below 2^20 — exact in FP32 —
  // so (a Hᵀ)(b Hᵀ)ᵀ equals a bᵀ exactly in exact (double) arithmetic.
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> small(-8, 8);
  const auto ints = [&](int64_t r, int64_t c) {
    std::vector<float> v(size_t(r * c));
    for (float& e : v) e = float(small(rng));
    return Tensor::from_vector(v, {r, c});
  };
  const int64_t N = 6, K = 5, M = 37;
  const Tensor a = ints(N, M), b = ints(K, M);
  const uint64_t seed = 77;
  const std::vector<double> ta = random_hadamard_16(a, seed).to_doubles(),
                            tb = random_hadamard_16(b, seed).to_doubles();
  const std::vector<double> va = a.to_doubles(), vb = b.to_doubles();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      double plain = 0, transformed = 0;
      for (int64_t m = 0; m < M; ++m) plain += va[size_t(n * M + m)] * vb[size_t(k * M + m)];
      for (int64_t m = 0; m < 48; ++m) transformed += ta[size_t(n * 48 + m)] * tb[size_t(k * 48 + m)];
      EXPECT_EQ(transformed, plain) << n << "," << k;
    }
  // Real-valued inputs: the same to FP32 rounding of the transform (1e-6 relative to Σ|a||b|).
  const Tensor fa = testing::random_tensor({N, M}, 8), fb = testing::random_tensor({K, M}, 9);
  const Tensor plain = kernels::matmul(fa, fb.t()),
               transformed = kernels::matmul(random_hadamard_16(fa, seed), random_hadamard_16(fb, seed).t());
  EXPECT_TRUE(testing::all_close(transformed, plain, 1e-5, 1e-5));
}

// ---- statistics ------------------------------------------------------------------------------------------

TEST(Fp4Stats, CountUnderflowSaturationAndScaleUnderflow) {
  // Row 0 (MX): amax 7.5 -> scale 1 (OCP rounds down), so 7.5 and 7 saturate to 6 (2 of 32 finite
  // values), and 0.2 underflows to 0 (1 of 32 non-zero values).
  std::vector<float> v(32, 1.0f);
  v[0] = 7.5f;
  v[1] = 7.0f;
  v[2] = 0.2f;
  const Tensor x = Tensor::from_vector(v, {1, 32});
  const QuantStats s = quant_stats(x, quantize(x, Granularity::mx_1x32, Format::e2m1));
  EXPECT_DOUBLE_EQ(s.saturation_pct, 100.0 * 2 / 32);
  EXPECT_DOUBLE_EQ(s.underflow_pct, 100.0 * 1 / 32);
  EXPECT_EQ(s.format, "e2m1");
  EXPECT_EQ(s.granularity, "mx_1x32");
  EXPECT_EQ(s.scale_log2_p50, 0.0);
  // NVFP4: a block 10^7 times smaller than the tensor's amax has its E4M3 scale underflow to 0.
  std::vector<float> w(32, 0.5f);
  for (int i = 0; i < 16; ++i) w[size_t(i)] = 1e-7f;
  w[16] = 1.0f;
  const Tensor y = Tensor::from_vector(w, {1, 32});
  const QuantStats t = quant_stats(y, quantize(y, Granularity::nv_1x16, Format::e2m1));
  EXPECT_DOUBLE_EQ(t.zero_scale_pct, 50.0);  // the first of the two blocks
  EXPECT_DOUBLE_EQ(t.underflow_pct, 100.0 * 16 / 32);
  EXPECT_EQ(t.tensor_scale_inv, 1.0f / nvfp4_tensor_scale(1.0f));
  EXPECT_NE(to_json(t).find("\"zero_scale_pct\": 50"), std::string::npos) << to_json(t);
}

}  // namespace
}  // namespace daedalus::fp8
