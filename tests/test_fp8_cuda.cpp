// The CUDA FP8 quantizer and cuBLASLt scaled GEMM (fp8/cuda/) against their CPU references
// (fp8::quantize, fp8::scaled_gemm): bit-identical quantization on ragged shapes, every Hopper
// scale pair, the three GEMMs of a Linear, and the shape rejections. The GPU tests skip on
// machines without a CUDA device; scripts/gpu-check runs them on one. The rejection tests run on
// any CUDA build (the checks come before any CUDA call); CPU-only builds compile to nothing here.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "autograd/tensor.h"
#include "fp8/quantized.h"
#include "fp8/scaled_gemm.h"
#include "tests/testing.h"
#if DAEDALUS_WITH_CUDA
#include "fp8/cuda/scaled_gemm_cuda.h"
#include "tests/cuda_codec_check.h"
#endif

namespace daedalus::fp8 {
namespace {

#if DAEDALUS_WITH_CUDA

class Fp8Cuda : public testing::CudaTest {};

using testing::bit_identical;
using testing::scaled_normal;

QuantizedTensor to_device(const QuantizedTensor& q, Device device) {
  QuantizedTensor out = q;
  out.data = q.data.to(device);
  out.scale_inv = q.scale_inv.to(device);
  return out;
}

TEST_F(Fp8Cuda, QuantizeIsBitIdenticalToCpu) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{256, 384}, {384, 1024}, {129, 300}, {65, 96}, {1, 7}};
  const std::vector<ScaleOptions> options = {{}, {/*margin=*/1, /*power_of_two=*/true}};
  uint64_t seed = 1;
  for (const auto& [rows, cols] : shapes) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Tensor x = scaled_normal(rows, cols, seed++, dtype);
      const Tensor xg = x.to(gpu);
      for (Granularity g :
           {Granularity::tile_1x128, Granularity::block_128x128, Granularity::row, Granularity::tensor}) {
        for (Format f : {Format::e4m3, Format::e5m2}) {
          for (const ScaleOptions& o : options) {
            SCOPED_TRACE(::testing::Message()
                         << "[" << rows << ", " << cols << "] " << dtype_name(dtype) << " " << granularity_name(g)
                         << " " << format_name(f) << " margin " << o.margin << (o.power_of_two ? " pow2" : ""));
            const QuantizedTensor cpu = quantize(x, g, f, o);
            const QuantizedTensor cuda = quantize(xg, g, f, o);  // the dispatcher: CUDA input -> cuda_quantize
            EXPECT_EQ(cuda.data.device(), gpu);
            EXPECT_EQ(cuda.granularity, g);
            EXPECT_EQ(cuda.format, f);
            EXPECT_TRUE(bit_identical(cuda.scale_inv, cpu.scale_inv));
            EXPECT_TRUE(bit_identical(cuda.data, cpu.data));
          }
        }
      }
    }
  }
  // A transposed (non-contiguous) input: the "1x128 becomes 128x1" quantization of Wgrad.
  const Tensor x = scaled_normal(300, 256, 99);
  EXPECT_TRUE(bit_identical(cuda_quantize(x.to(gpu).t(), Granularity::tile_1x128, Format::e4m3).data,
                            quantize(x.t(), Granularity::tile_1x128, Format::e4m3).data));
}

// Kernels encode with the hardware convert (cvt.rn.satfinite) where the CPU uses the integer
// encoder; the two must agree on every float, or no CUDA quantization is the CPU's. All 2^32
// inputs, each format (about 10 ms of device time each).
TEST_F(Fp8Cuda, HardwareConvertEqualsIntegerEncoderForEveryFloat) {
  for (const bool e5m2 : {false, true}) {
    const testing::Fp8EncoderComparison c = testing::compare_fp8_encoders_on_device(e5m2);
    EXPECT_EQ(c.mismatches, 0u) << (e5m2 ? "e5m2" : "e4m3") << ": first mismatch at float bits 0x" << std::hex
                                << c.first << ": hardware 0x" << int(c.hardware) << ", integer encoder 0x"
                                << int(c.integer);
  }
}

// NaN of either sign, infinities, float subnormals, ties at FP8 rounding boundaries and values
// beyond the format's range (a delayed scale that overflows) through every quantizer.
TEST_F(Fp8Cuda, QuantizeSpecialValuesIsBitIdenticalToCpu) {
  const float specials[] = {NAN,
                            -NAN,
                            INFINITY,
                            -INFINITY,
                            0.0f,
                            -0.0f,
                            1e-40f,
                            -1e-45f,
                            std::ldexp(1.0f, -10),
                            std::ldexp(3.0f, -10),
                            1.0625f,
                            1.1875f,
                            448.0f,
                            464.0f,
                            -465.0f,
                            57344.0f,
                            61440.0f,
                            1e30f};
  const int64_t rows = 3, cols = 256;
  std::vector<float> v = scaled_normal(rows, cols, 7).to_vector<float>();
  // Row 0 holds every special (a NaN amax: its tiles get scale 1); row 2 only finite specials.
  for (size_t i = 0; i < std::size(specials); ++i) {
    v[i * 13 % size_t(cols)] = specials[i];
    if (std::isfinite(specials[i])) v[size_t(2 * cols) + i * 7] = specials[i];
  }
  const Tensor x = Tensor::from_vector<float>(v, {rows, cols});
  for (Granularity g : {Granularity::tile_1x128, Granularity::block_128x128, Granularity::row, Granularity::tensor,
                        Granularity::mx_1x32}) {
    for (Format f : {Format::e4m3, Format::e5m2}) {
      SCOPED_TRACE(::testing::Message() << granularity_name(g) << " " << format_name(f));
      const QuantizedTensor cpu = quantize(x, g, f), cuda = quantize(x.to(gpu), g, f);
      EXPECT_TRUE(bit_identical(cuda.scale_inv, cpu.scale_inv));
      EXPECT_TRUE(bit_identical(cuda.data, cpu.data));
    }
  }
  for (Format f : {Format::e4m3, Format::e5m2}) {
    for (float scale : {1.0f, 1024.0f}) {  // 1024: most of the finite values overflow and saturate
      SCOPED_TRACE(::testing::Message() << "with_scale " << scale << " " << format_name(f));
      EXPECT_TRUE(
          bit_identical(cuda_quantize_with_scale(x.to(gpu), scale, f).data, quantize_with_scale(x, scale, f).data));
    }
  }
}

// ---- scaled GEMM tolerance ---------------------------------------------------------------------
//
// Both sides read the same FP8 data and scale_invs, and every product of two FP8 values is exact
// in FP32; what differs is the summation. The CPU reference sums in exact FP32 arithmetic (one
// rounding per add, promoted per 128-block). cuBLASLt with FAST_ACCUM = 0 sums each 128-slice of
// K inside the Hopper tensor core, whose accumulator keeps about 14 mantissa bits (DeepSeek-V3
// §3.3.2), then promotes the slice into FP32 with its scales. Each of the slice's additions may
// lose up to ~2^-13 of the running sum (bounded by S_ij = Σ_k |a_ik b_jk|, dequantized); over the
// 128 additions of a slice these errors add like a random walk, sqrt(128)·2^-13 ≈ 2^-9.5·S_ij, and
// the FP32 promotion and scale multiplications add only K/128·2^-24·S_ij. We allow 2^-9·S_ij.
// (Measured on an H200, 2026-11-28: worst element 1.008·2^-11·S_ij, in the Wgrad case.)
// A wrong scale layout or a transposed operand moves y by O(|y|) with scales that differ by powers
// of two between tiles (scaled_normal), about sqrt(K)·σ² against 2^-9·S ≈ 2^-9·0.64·K·σ²: for
// K = 512 that is ~22 against ~0.64, so the test cannot pass by accident.
::testing::AssertionResult gemm_close(const Tensor& actual, const QuantizedTensor& a, const QuantizedTensor& b,
                                      const Tensor& reference) {
  const Tensor ad = a.dequantize(), bd = b.dequantize();
  const std::vector<float> av = ad.to_vector<float>(), bv = bd.to_vector<float>();
  const std::vector<float> y = actual.to(Device::cpu()).contiguous().to_vector<float>();
  const std::vector<float> ref = reference.to(Device::cpu()).contiguous().to_vector<float>();
  const int64_t m = a.rows(), n = b.rows(), k = a.cols();
  if (actual.shape() != Shape{m, n} || reference.shape() != Shape{m, n})
    return ::testing::AssertionFailure() << "shapes " << actual.describe() << " and " << reference.describe();
  double worst = 0.0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t kk = 0; kk < k; ++kk)
        s += std::fabs(double(av[static_cast<size_t>(i * k + kk)]) * double(bv[static_cast<size_t>(j * k + kk)]));
      const size_t idx = static_cast<size_t>(i * n + j);
      const double err = std::fabs(double(y[idx]) - double(ref[idx]));
      if (!(err <= std::ldexp(s, -9)))
        return ::testing::AssertionFailure() << "y[" << i << ", " << j << "] = " << y[idx] << ", reference " << ref[idx]
                                             << ", |error| " << err << " > 2^-9 * S = " << std::ldexp(s, -9);
      if (s > 0) worst = std::max(worst, err / s);
    }
  return ::testing::AssertionSuccess() << "worst |error| / S = " << worst;
}

struct Pair {
  Granularity a, b;
  Format fa, fb;
};

TEST_F(Fp8Cuda, ScaledGemmMatchesCpuForEverySupportedPair) {
  const std::vector<Pair> pairs = {
      {Granularity::tensor, Granularity::tensor, Format::e4m3, Format::e4m3},
      {Granularity::tensor, Granularity::tensor, Format::e5m2, Format::e4m3},  // hybrid: gradient x weight
      {Granularity::row, Granularity::row, Format::e4m3, Format::e4m3},
      {Granularity::tile_1x128, Granularity::block_128x128, Format::e4m3, Format::e4m3},
      {Granularity::block_128x128, Granularity::tile_1x128, Format::e4m3, Format::e4m3},
      {Granularity::tile_1x128, Granularity::tile_1x128, Format::e4m3, Format::e4m3},
  };
  // (M, N, K): the brief's shapes, plus K / 128 = 3 (the 128x128 scales' padding to a multiple of
  // 4 matters) with N = 136 (a ragged last 128x128 block).
  const std::vector<std::array<int64_t, 3>> shapes = {{256, 384, 512}, {128, 128, 1024}, {264, 136, 384}};
  uint64_t seed = 100;
  for (const auto& [m, n, k] : shapes) {
    const Tensor x = scaled_normal(m, k, seed++), w = scaled_normal(n, k, seed++);
    for (const Pair& p : pairs) {
      SCOPED_TRACE(::testing::Message() << "M=" << m << " N=" << n << " K=" << k << " " << granularity_name(p.a)
                                        << " x " << granularity_name(p.b) << " " << format_name(p.fa) << " x "
                                        << format_name(p.fb));
      const QuantizedTensor a = quantize(x, p.a, p.fa), b = quantize(w, p.b, p.fb);
      const Tensor reference = scaled_gemm(a, b);
      const Tensor y = cuda_scaled_gemm(to_device(a, gpu), to_device(b, gpu));
      EXPECT_EQ(y.device(), gpu);
      EXPECT_EQ(y.dtype(), DType::f32);
      EXPECT_TRUE(gemm_close(y, a, b, reference));
    }
  }
}

// The three GEMMs of a Linear y = x·Wᵀ in the fp8_block recipe (NUMERICS.md), quantized on the GPU
// from the high-precision tensors, against the CPU quantizer + CPU scaled GEMM.
TEST_F(Fp8Cuda, LinearFpropDgradWgradMatchCpu) {
  const int64_t m = 256, n = 384, k = 512;  // tokens, out features, in features
  const Tensor x = scaled_normal(m, k, 7), w = scaled_normal(n, k, 8), dy = scaled_normal(m, n, 9);
  const Tensor xg = x.to(gpu), wg = w.to(gpu), dyg = dy.to(gpu);
  const Granularity tile = Granularity::tile_1x128, block = Granularity::block_128x128;
  struct Gemm {
    const char* name;
    Tensor a, b, ag, bg;  // CPU and GPU operands, [rows, reduction]
    Granularity ga, gb;
  };
  const std::vector<Gemm> gemms = {
      {"Fprop Y = X·Wᵀ", x, w, xg, wg, tile, block},                     // X 1x128 along K, W 128x128
      {"Dgrad dX = dY·W", dy, w.t(), dyg, wg.t(), tile, block},          // dY 1x128 along N, Wᵀ 128x128
      {"Wgrad dW = dYᵀ·X", dy.t(), x.t(), dyg.t(), xg.t(), tile, tile},  // both 1x128 along M (128x1)
  };
  for (const Gemm& g : gemms) {
    SCOPED_TRACE(g.name);
    const QuantizedTensor a = quantize(g.a, g.ga, Format::e4m3), b = quantize(g.b, g.gb, Format::e4m3);
    const QuantizedTensor ag = cuda_quantize(g.ag, g.ga, Format::e4m3), bg = cuda_quantize(g.bg, g.gb, Format::e4m3);
    EXPECT_TRUE(bit_identical(ag.data, a.data));
    EXPECT_TRUE(bit_identical(bg.scale_inv, b.scale_inv));
    const Tensor y = cuda_scaled_gemm(ag, bg);
    EXPECT_TRUE(gemm_close(y, a, b, scaled_gemm(a, b)));
  }
}

TEST_F(Fp8Cuda, Bf16GemmMatchesFp32Reference) {
  // bf16 x bf16 products are exact in fp32; cuBLASLt sums in fp32: |Δ| <= K·2^-24·S in the worst
  // case, far less in practice; 2^-14·S leaves room for any summation order.
  const int64_t m = 128, n = 136, k = 384;
  const Tensor a = scaled_normal(m, k, 11, DType::bf16), b = scaled_normal(n, k, 12, DType::bf16);
  const std::vector<float> av = a.to(DType::f32).to_vector<float>(), bv = b.to(DType::f32).to_vector<float>();
  const std::vector<float> y = cuda_bf16_gemm_tn(a.to(gpu), b.to(gpu)).to(Device::cpu()).to_vector<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0, ref = 0.0;
      for (int64_t kk = 0; kk < k; ++kk) {
        const double p = double(av[static_cast<size_t>(i * k + kk)]) * double(bv[static_cast<size_t>(j * k + kk)]);
        ref += p;
        s += std::fabs(p);
      }
      ASSERT_LE(std::fabs(double(y[static_cast<size_t>(i * n + j)]) - ref), std::ldexp(s, -14))
          << "y[" << i << ", " << j << "]";
    }
}

// ---- rejections (no device needed: the checks come before any CUDA call) ------------------------

QuantizedTensor fake(int64_t rows, int64_t cols, Granularity g, Format f = Format::e4m3) {
  QuantizedTensor q;
  q.data = Tensor::zeros({rows, cols}, f == Format::e4m3 ? DType::f8e4m3 : DType::f8e5m2);
  q.granularity = g;
  q.format = f;
  const int64_t kb = (cols + 127) / 128;
  switch (g) {
    case Granularity::tensor: q.scale_inv = Tensor::ones({1}); break;
    case Granularity::row: q.scale_inv = Tensor::ones({rows}); break;
    case Granularity::tile_1x128: q.scale_inv = Tensor::ones({rows, kb}); break;
    default: q.scale_inv = Tensor::ones({(rows + 127) / 128, kb}); break;
  }
  return q;
}

void expect_input_error(const QuantizedTensor& a, const QuantizedTensor& b, const std::vector<std::string>& words) {
  try {
    (void)cuda_scaled_gemm(a, b);
    ADD_FAILURE() << "no InputError";
  } catch (const InputError& e) {
    for (const std::string& word : words) EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
  }
}

TEST(Fp8CudaShapes, RejectionsNameTheDimensionAndWhy) {
  const Granularity tile = Granularity::tile_1x128, block = Granularity::block_128x128, tensor = Granularity::tensor;
  expect_input_error(fake(64, 200, tensor), fake(64, 200, tensor), {"K = 200", "multiple of 16"});
  expect_input_error(fake(60, 256, tensor), fake(64, 256, tensor), {"M = 60", "multiple of 8"});
  expect_input_error(fake(64, 256, tensor), fake(100, 256, tensor), {"N = 100", "multiple of 8"});
  expect_input_error(fake(64, 400, tile), fake(64, 400, block), {"K = 400", "multiple of 128"});
  expect_input_error(fake(64, 256, block), fake(64, 256, block), {"block_128x128 x block_128x128"});
  expect_input_error(fake(64, 256, tensor), fake(64, 256, Granularity::row), {"tensor x row"});
  expect_input_error(fake(64, 256, tensor, Format::e5m2), fake(64, 256, tensor, Format::e5m2), {"e5m2 x e5m2"});
  expect_input_error(fake(64, 256, tensor), fake(64, 128, tensor), {"disagree on K"});
}

#endif  // DAEDALUS_WITH_CUDA

}  // namespace
}  // namespace daedalus::fp8
