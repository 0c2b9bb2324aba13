// The FP8 recipes on CUDA tensors against the CPU reference: quantize_with_scale, dequantize,
// mx_1x32 and stochastic rounding bit-identical; the transposed (Wgrad) quantizer bit-identical to
// quantizing the transposed copy; scaled_gemm on shapes cuBLASLt cannot take directly (padding);
// fp8::linear forward + backward per recipe; fp8::grouped_linear forward + backward with empty
// experts; with the fp32 and bf16 recipes (one grouped cuBLAS GEMM per pass) against the CPU's
// per-group loop. The CPU-only tests (padding, the device Philox word, the grouped forward's bits) run
// everywhere; the GPU ones skip without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "autograd/kernels/activation.h"
#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/grouped_gemm.h"
#include "autograd/tape.h"
#include "fp8/format.h"
#include "fp8/linear.h"
#include "fp8/quantized.h"
#include "fp8/scaled_gemm.h"
#include "tests/model_testing.h"
#include "tests/testing.h"
#if DAEDALUS_WITH_CUDA
#include "fp8/cuda/scaled_gemm_cuda.h"
#endif

namespace daedalus::fp8 {
namespace {

using testing::bit_identical;
using testing::scaled_normal;

::testing::AssertionResult same_quantization(const QuantizedTensor& actual, const QuantizedTensor& expected) {
  if (actual.granularity != expected.granularity || actual.format != expected.format)
    return ::testing::AssertionFailure() << "granularity/format differ";
  const ::testing::AssertionResult s = bit_identical(actual.scale_inv, expected.scale_inv);
  if (!s) return ::testing::AssertionFailure() << "scale_inv: " << s.message();
  const ::testing::AssertionResult d = bit_identical(actual.data, expected.data);
  if (!d) return ::testing::AssertionFailure() << "data: " << d.message();
  return ::testing::AssertionSuccess();
}

const std::vector<Granularity> kAllGranularities = {Granularity::tensor, Granularity::row, Granularity::tile_1x128,
                                                    Granularity::block_128x128, Granularity::mx_1x32};

// ---- CPU (run everywhere) ----------------------------------------------------------------------

// pad_quantized is what lets CUDA GEMMs take any shape: it must equal quantizing the zero-padded
// tensor, codes and scales, for every granularity.
TEST(Fp8Pad, PaddingTheQuantizedTensorEqualsQuantizingThePaddedTensor) {
  const std::vector<std::array<int64_t, 4>> cases = {{65, 96, 72, 128}, {3, 300, 8, 384}, {129, 200, 136, 256}};
  uint64_t seed = 1;
  for (const auto& [rows, cols, prows, pcols] : cases) {
    const Tensor x = scaled_normal(rows, cols, seed++);
    Tensor padded = Tensor::zeros({prows, pcols});
    padded.slice(0, 0, rows).slice(1, 0, cols).copy_(x);
    for (Granularity g : kAllGranularities) {
      for (Format f : {Format::e4m3, Format::e5m2}) {
        SCOPED_TRACE(::testing::Message() << "[" << rows << ", " << cols << "] -> [" << prows << ", " << pcols << "] "
                                          << granularity_name(g) << " " << format_name(f));
        EXPECT_TRUE(same_quantization(pad_quantized(quantize(x, g, f), prows, pcols), quantize(padded, g, f)));
      }
    }
  }
  EXPECT_TRUE(
      testing::mentions(testing::error_of([] {
                          (void)pad_quantized(quantize(Tensor::ones({4, 4}), Granularity::row, Format::e4m3), 2, 4);
                        }),
                        {"pad_quantized", "smaller"}));
}

// The device twin of the stochastic-rounding word is the host's Philox word, bit for bit.
TEST(Fp8StochasticWord, DeviceTwinMatchesTheHostWord) {
  for (uint64_t seed : {uint64_t(0), uint64_t(7), uint64_t(0xDEADBEEFCAFEF00Dull)})
    for (uint64_t i = 0; i < 4099; i += 3) ASSERT_EQ(stochastic_word_hd(seed, i), stochastic_word(seed, i)) << i;
  EXPECT_EQ(stochastic_word_hd(5, (uint64_t(1) << 40) + 2), stochastic_word(5, (uint64_t(1) << 40) + 2));
}

// The grouped forward (one grouped_scaled_gemm over all experts) gives each group's rows exactly
// what a separate fp8::linear on them gives, on the CPU: the reference's bits did not move.
TEST(Fp8GroupedLinear, CpuGroupsEqualSeparateLinearsBitForBit) {
  const int64_t K = 256, N = 128;
  const std::vector<int64_t> offsets = {0, 40, 40, 168, 171};
  const Tensor x = scaled_normal(offsets.back(), K, 3), w = scaled_normal(4 * N, K, 4).view({4, N, K});
  for (RecipeKind kind : {RecipeKind::fp8_block, RecipeKind::fp8_tensor_delayed, RecipeKind::fp8_row}) {
    SCOPED_TRACE(recipe_name(kind));
    const Recipe r = Recipe{}.with_kind(kind);
    std::vector<LinearState> states(4);
    const Var y = grouped_linear(Var(x, false), Var(w, false), offsets, r, &states);
    for (size_t g = 0; g < 4; ++g) {
      if (offsets[g] == offsets[g + 1]) {
        EXPECT_TRUE(states[g].x.values().empty());  // an empty expert records no amax
        continue;
      }
      LinearState state;
      const Var yg =
          linear(Var(x.slice(0, offsets[g], offsets[g + 1]), false), Var(w.select(0, int64_t(g)), false), r, &state);
      EXPECT_TRUE(bit_identical(y.value().slice(0, offsets[g], offsets[g + 1]).contiguous(), yg.value())) << g;
    }
  }
}

#if DAEDALUS_WITH_CUDA

class Fp8CudaRecipes : public testing::CudaTest {};

TEST_F(Fp8CudaRecipes, QuantizeEveryGranularityIncludingMxAndStochasticIsBitIdentical) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{129, 300}, {65, 96}, {256, 384}, {1, 7}};
  uint64_t seed = 10;
  for (const auto& [rows, cols] : shapes) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Tensor x = scaled_normal(rows, cols, seed++, dtype);
      for (Granularity g : kAllGranularities) {
        for (Format f : {Format::e4m3, Format::e5m2}) {
          for (bool stochastic : {false, true}) {
            SCOPED_TRACE(::testing::Message()
                         << "[" << rows << ", " << cols << "] " << dtype_name(dtype) << " " << granularity_name(g)
                         << " " << format_name(f) << (stochastic ? " stochastic" : ""));
            ScaleOptions o;
            o.stochastic_rounding = stochastic;
            o.seed = 1234;
            const QuantizedTensor cpu = quantize(x, g, f, o);
            const QuantizedTensor cuda = quantize(x.to(gpu), g, f, o);
            EXPECT_EQ(cuda.data.device(), gpu);
            EXPECT_TRUE(same_quantization(cuda, cpu));
            // dequantize: the same single float product per element.
            EXPECT_TRUE(bit_identical(cuda.dequantize(), cpu.dequantize()));
          }
        }
      }
    }
  }
}

TEST_F(Fp8CudaRecipes, QuantizeWithScaleIsBitIdentical) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Tensor x = scaled_normal(130, 260, 21, dtype);
    // A scale that saturates some elements (delayed scaling after a spike) and one that does not.
    for (float scale : {1.0f, 37.5f, 4096.0f, 0.001f}) {
      for (Format f : {Format::e4m3, Format::e5m2}) {
        SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " scale " << scale << " " << format_name(f));
        const QuantizedTensor cpu = quantize_with_scale(x, scale, f);
        const QuantizedTensor cuda = quantize_with_scale(x.to(gpu), scale, f);
        EXPECT_TRUE(same_quantization(cuda, cpu));
        EXPECT_TRUE(bit_identical(cuda.dequantize(), cpu.dequantize()));
        EXPECT_TRUE(
            same_quantization(quantize_with_scale(x.to(gpu).t(), scale, f), quantize_with_scale(x.t(), scale, f)));
      }
    }
  }
}

// The Wgrad operands dYᵀ and Xᵀ are quantized from the row-major tensors in place (no transpose
// copy): bit-identical to quantizing the transposed copy, on ragged shapes (rows of the view not a
// multiple of 32, columns not of 128), and for block_128x128 (Dgrad's Wᵀ).
TEST_F(Fp8CudaRecipes, TransposedQuantizeEqualsQuantizingTheTransposedCopy) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{300, 256}, {257, 65}, {128, 128}, {5, 1000}, {1000, 5}};
  uint64_t seed = 30;
  for (const auto& [rows, cols] : shapes) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Tensor x = scaled_normal(rows, cols, seed++, dtype);  // the source [rows, cols]; we quantize xᵀ
      const Tensor xt_copy = x.t().contiguous();
      for (Granularity g : {Granularity::tile_1x128, Granularity::block_128x128}) {
        for (Format f : {Format::e4m3, Format::e5m2}) {
          SCOPED_TRACE(::testing::Message() << "x [" << rows << ", " << cols << "]ᵀ " << dtype_name(dtype) << " "
                                            << granularity_name(g) << " " << format_name(f));
          const QuantizedTensor cuda = cuda_quantize(x.to(gpu).t(), g, f);
          EXPECT_TRUE(same_quantization(cuda, quantize(xt_copy, g, f)));
          EXPECT_TRUE(same_quantization(cuda, quantize(x.t(), g, f)));  // the CPU's own view path agrees
        }
      }
      // A view with a row stride wider than its columns (a column slice): the row-major kernel's ld.
      const Tensor sliced = x.slice(1, 0, cols - 1);
      EXPECT_TRUE(
          same_quantization(cuda_quantize(x.to(gpu).slice(1, 0, cols - 1), Granularity::tile_1x128, Format::e4m3),
                            quantize(sliced.contiguous(), Granularity::tile_1x128, Format::e4m3)));
    }
  }
}

// Wgrad's q(Xqᵀ) from the cached 1x128 q(X): the fused CUDA kernel (dequantized values formed on
// the fly) against the CPU's dequantize -> transpose -> quantize, bit for bit, on ragged shapes
// (K not a multiple of 128, M not of 32), both formats on each side, scale options and stochastic
// rounding.
TEST_F(Fp8CudaRecipes, RequantizeTransposedEqualsDequantizeTransposeQuantize) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{300, 256}, {257, 200}, {1, 128}, {64, 1000}};
  std::vector<ScaleOptions> options = {{}, {/*margin=*/1, /*power_of_two=*/true}};
  options.push_back({});
  options.back().stochastic_rounding = true;
  options.back().seed = 77;
  uint64_t seed = 60;
  for (const auto& [rows, cols] : shapes) {
    const Tensor x = scaled_normal(rows, cols, seed++);
    for (Format from : {Format::e4m3, Format::e5m2}) {
      const QuantizedTensor q = quantize(x, Granularity::tile_1x128, from);
      QuantizedTensor qg = q;
      qg.data = q.data.to(gpu);
      qg.scale_inv = q.scale_inv.to(gpu);
      for (Format to : {Format::e4m3, Format::e5m2}) {
        for (const ScaleOptions& o : options) {
          SCOPED_TRACE(::testing::Message()
                       << "[" << rows << ", " << cols << "] " << format_name(from) << " -> " << format_name(to)
                       << " margin " << o.margin << (o.stochastic_rounding ? " stochastic" : ""));
          const QuantizedTensor expected = quantize(q.dequantize().t(), Granularity::tile_1x128, to, o);
          const QuantizedTensor fused = requantize_transposed(qg, Granularity::tile_1x128, to, o);
          EXPECT_EQ(fused.data.device(), gpu);
          EXPECT_TRUE(same_quantization(fused, expected));
        }
      }
    }
  }
}

// The fused SwiGLU -> 1x128 quantizer (h never written) against the two kernels it replaces, on
// the device, bit for bit: the same activation formula (autograd/cuda/swiglu.cuh) and the same
// rounding of h to the operands' dtype. Ragged shapes; 30 columns is not a multiple of 4 and takes
// the composition itself. (Against the CPU, h may differ by an expf ulp: the training tests cover
// that with their tolerances.)
TEST_F(Fp8CudaRecipes, SwigluQuantizeEqualsSwigluThenQuantize) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{65, 384}, {3, 128}, {130, 260}, {7, 30}};
  uint64_t seed = 80;
  for (const auto& [rows, cols] : shapes) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      const Tensor gate = scaled_normal(rows, cols, seed++, dtype).to(gpu),
                   up = scaled_normal(rows, cols, seed++, dtype).to(gpu);
      for (Format f : {Format::e4m3, Format::e5m2}) {
        SCOPED_TRACE(::testing::Message()
                     << "[" << rows << ", " << cols << "] " << dtype_name(dtype) << " " << format_name(f));
        const QuantizedTensor fused = swiglu_quantize(gate, up, f);
        EXPECT_EQ(fused.data.device(), gpu);
        EXPECT_TRUE(same_quantization(fused, quantize(kernels::swiglu(gate, up), Granularity::tile_1x128, f)));
      }
    }
  }
}

// Element-wise GEMM tolerance. Both sides multiply the same FP8 codes with the same scales (checked
// bit for bit above); only the summation differs: the CPU sums exactly in FP32 per 128-block,
// cuBLASLt (FAST_ACCUM = 0) sums each 128-slice in the Hopper tensor core's ~14-bit accumulator
// before promoting to FP32: |Δ| <= ~2^-9.5 · S with S = Σ_k |a_ik b_jk| of the dequantized
// operands (tests/test_fp8_cuda.cpp derives it and measured 2^-11 · S on an H200). Here S is
// computed from the high-precision operands, which differ from the dequantized ones by at most
// 2^-3 relative (e5m2's half ulp), so S_dequantized <= 1.27 · S: we allow 2^-8 · S. The fp32
// recipe and the mx_1x32 fp32 emulation sum in fp32 (~K · 2^-24 · S), well inside. The bf16 recipe
// rounds its outputs to bf16: where the two fp32 sums straddle a rounding boundary they land one
// bf16 ulp apart, <= 2^-7 · |y|, hence the extra `rel` · |reference| term (2^-7 for bf16, else 0).
// A wrong scale or a transposed operand moves y by O(sqrt(K)·σ²) against 2^-8 · S ≈ 2^-8 · 0.64 ·
// K · σ²: for K >= 128 the test cannot pass by accident.
::testing::AssertionResult gemm_close(const Tensor& actual, const Tensor& reference, const Tensor& a_nt,
                                      const Tensor& b_nt, double rel = 0.0) {
  const std::vector<double> av = a_nt.contiguous().to_doubles(), bv = b_nt.contiguous().to_doubles();
  const std::vector<double> y = actual.to(Device::cpu()).to_doubles(), ref = reference.to_doubles();
  const int64_t m = a_nt.size(0), n = b_nt.size(0), k = a_nt.size(1);
  if (actual.shape() != Shape{m, n} || reference.shape() != Shape{m, n})
    return ::testing::AssertionFailure() << "shapes " << actual.describe() << " / " << reference.describe() << " vs ["
                                         << m << ", " << n << "]";
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < k; ++p) s += std::fabs(av[size_t(i * k + p)] * bv[size_t(j * k + p)]);
      const size_t idx = size_t(i * n + j);
      const double err = std::fabs(y[idx] - ref[idx]);
      if (!(err <= std::ldexp(s, -8) + rel * std::fabs(ref[idx])))
        return ::testing::AssertionFailure() << "[" << i << ", " << j << "] = " << y[idx] << ", reference " << ref[idx]
                                             << ", |error| " << err << " > 2^-8 * S = " << std::ldexp(s, -8);
    }
  return ::testing::AssertionSuccess();
}

TEST_F(Fp8CudaRecipes, ScaledGemmTakesShapesCublasLtCannot) {
  // M = 3, N = 20, K = 200: none aligned; the dispatcher pads (pad_quantized) and cuts back.
  const Tensor x = scaled_normal(3, 200, 41), w = scaled_normal(20, 200, 42);
  for (Granularity ga : {Granularity::tile_1x128, Granularity::tensor, Granularity::row, Granularity::mx_1x32}) {
    const Granularity gb = ga == Granularity::tile_1x128 ? Granularity::block_128x128 : ga;
    SCOPED_TRACE(granularity_name(ga));
    const QuantizedTensor a = quantize(x, ga, Format::e4m3), b = quantize(w, gb, Format::e4m3);
    const QuantizedTensor ag = quantize(x.to(gpu), ga, Format::e4m3), bg = quantize(w.to(gpu), gb, Format::e4m3);
    EXPECT_TRUE(gemm_close(scaled_gemm(ag, bg), scaled_gemm(a, b), x, w));
  }
}

using testing::LinearRun;
using testing::run_linear;

// Every recipe with a CUDA path: the FP4 recipes are emulated on the CPU only (docs/gpu.md).
const std::vector<RecipeKind> kAllRecipes = [] {
  std::vector<RecipeKind> kinds;
  for (RecipeKind k : all_recipe_kinds())
    if (k != RecipeKind::nvfp4 && k != RecipeKind::mxfp4 && k != RecipeKind::fp4_experts) kinds.push_back(k);
  return kinds;
}();

// fp8::linear forward + backward (Fprop, Dgrad, Wgrad) on CUDA against the CPU, every recipe, with
// FP8-cached activations for fp8_block, two steps for delayed scaling (the second uses the
// history: same amaxes on both devices, exact maxima), and statistics collected.
TEST_F(Fp8CudaRecipes, LinearForwardBackwardMatchesCpuForEveryRecipe) {
  const int64_t M = 72, N = 256, K = 384;  // M ragged for Wgrad's K (padded on the GPU)
  for (RecipeKind kind : kAllRecipes) {
    for (bool cache_fp8 : {false, true}) {
      if (cache_fp8 && kind != RecipeKind::fp8_block && kind != RecipeKind::fp8_tensor_delayed) continue;
      SCOPED_TRACE(::testing::Message() << recipe_name(kind) << (cache_fp8 ? " cache_fp8" : ""));
      Recipe r = Recipe{}.with_kind(kind);
      r.cache_fp8 = cache_fp8;
      LinearState cpu_state, gpu_state;
      cpu_state.collect_stats = gpu_state.collect_stats = r.is_fp8();
      for (int step = 0; step < 2; ++step) {
        const Tensor x = scaled_normal(M, K, 50 + uint64_t(step)), w = scaled_normal(N, K, 52);
        const Tensor g = scaled_normal(M, N, 53 + uint64_t(step));
        const LinearRun cpu = run_linear(x, w, g, r, &cpu_state);
        const LinearRun cuda = run_linear(x.to(gpu), w.to(gpu), g.to(gpu), r, &gpu_state);
        ASSERT_EQ(cuda.y.device(), gpu);
        const double rel = kind == RecipeKind::bf16 ? 0x1p-7 : 0.0;
        EXPECT_TRUE(gemm_close(cuda.y, cpu.y, x, w, rel)) << "Fprop, step " << step;
        EXPECT_TRUE(gemm_close(cuda.dx, cpu.dx, g, w.t(), rel)) << "Dgrad, step " << step;
        EXPECT_TRUE(gemm_close(cuda.dw, cpu.dw, g.t(), x.t(), rel)) << "Wgrad, step " << step;
      }
      EXPECT_EQ(gpu_state.x.values(), cpu_state.x.values());
      EXPECT_EQ(gpu_state.dy.values(), cpu_state.dy.values());
      for (const auto& [name, s] : cpu_state.stats) {
        ASSERT_TRUE(gpu_state.stats.count(name)) << name;
        const QuantStats& t = gpu_state.stats.at(name);
        EXPECT_EQ(t.count, s.count) << name;
        EXPECT_EQ(t.amax, s.amax) << name;
        EXPECT_EQ(t.underflow_pct, s.underflow_pct) << name;  // same codes: same counts
        EXPECT_EQ(t.scale_inv_min, s.scale_inv_min) << name;
        EXPECT_EQ(t.relative_error, s.relative_error) << name;  // same doubles, same host loop
      }
    }
  }
}

// fp8::grouped_linear on CUDA (one grouped GEMM in forward) against the CPU: experts with zero
// tokens, ragged token counts (3, 40: padded for cuBLASLt), per-expert scales and histories.
TEST_F(Fp8CudaRecipes, GroupedLinearForwardBackwardMatchesCpu) {
  const int64_t G = 5, N = 256, K = 384;
  const std::vector<int64_t> offsets = {0, 40, 40, 168, 171, 171};  // experts 1 and 4 get no tokens
  const int64_t R = offsets.back();
  for (RecipeKind kind : {RecipeKind::fp8_block, RecipeKind::fp8_tensor_delayed, RecipeKind::bf16}) {
    SCOPED_TRACE(recipe_name(kind));
    const Recipe r = Recipe{}.with_kind(kind);
    std::vector<LinearState> cpu_states(static_cast<size_t>(G)), gpu_states(static_cast<size_t>(G));
    for (int step = 0; step < 2; ++step) {
      const Tensor x = scaled_normal(R, K, 60 + uint64_t(step)), w = scaled_normal(G * N, K, 62).view({G, N, K});
      const Tensor g = scaled_normal(R, N, 63 + uint64_t(step));
      LinearRun runs[2];
      for (int d = 0; d < 2; ++d) {
        const Device dev = d == 0 ? Device::cpu() : gpu;
        Var xv(x.to(dev), true), wv(w.to(dev), true);
        const Var y = grouped_linear(xv, wv, offsets, r, d == 0 ? &cpu_states : &gpu_states);
        current_tape().backward(y, g.to(dev));
        runs[d] = {y.value(), xv.grad(), wv.grad()};
      }
      const LinearRun& cpu = runs[0];
      const LinearRun& cuda = runs[1];
      ASSERT_EQ(cuda.y.device(), gpu);
      for (int64_t e = 0; e < G; ++e) {
        const int64_t b = offsets[size_t(e)], en = offsets[size_t(e) + 1];
        SCOPED_TRACE(::testing::Message() << "expert " << e << ", step " << step);
        const Tensor we = w.select(0, e);
        if (b == en) {  // no tokens: a zero weight gradient on both
          EXPECT_TRUE(bit_identical(cuda.dw.select(0, e).contiguous(), cpu.dw.select(0, e).contiguous()));
          continue;
        }
        const Tensor xe = x.slice(0, b, en), ge = g.slice(0, b, en);
        const double rel = kind == RecipeKind::bf16 ? 0x1p-7 : 0.0;
        EXPECT_TRUE(gemm_close(cuda.y.slice(0, b, en).contiguous(), cpu.y.slice(0, b, en).contiguous(), xe, we, rel));
        EXPECT_TRUE(
            gemm_close(cuda.dx.slice(0, b, en).contiguous(), cpu.dx.slice(0, b, en).contiguous(), ge, we.t(), rel));
        EXPECT_TRUE(
            gemm_close(cuda.dw.select(0, e).contiguous(), cpu.dw.select(0, e).contiguous(), ge.t(), xe.t(), rel));
      }
    }
    for (size_t e = 0; e < size_t(G); ++e) EXPECT_EQ(gpu_states[e].x.values(), cpu_states[e].x.values()) << e;
  }
}

// fp8::grouped_linear with the high-precision recipes on CUDA — one grouped cuBLAS GEMM per pass
// (forward, Dgrad, Wgrad; autograd/kernels/grouped_gemm.h) — against the CPU's per-group loop:
// groups of 0, 1 and uneven rows; N, K = 64, 96 (every pass one grouped call) and 20, 36 (the bf16
// recipe's Dgrad and Wgrad rows are not 16-byte aligned there: the per-group fallback). Tolerance
// (testing::gemm_sums_close): both devices sum the same exact products of the rounded operands in
// fp32, in other orders, k = K (y), N (dx) or the group's rows (dW): (2k + 4)·u·S with S = Σ|a·b|
// of the rounded operands; the bf16 recipe rounds dx and dW to bf16, + 2^-7·|reference| for those.
// y is fp32 in both recipes (the bf16 one multiplies through TF32 on CUDA, exact on bf16 values):
// no extra term, so a lossy TF32 product (~2^-11·S) would fail.
TEST_F(Fp8CudaRecipes, GroupedLinearHighPrecisionMatchesCpu) {
  using kernels::GroupedProduct;
  const std::vector<int64_t> offsets = {0, 1, 1, 41, 41, 58, 186};  // 1, 0, 40, 0, 17 and 128 rows
  const int64_t G = 6, R = offsets.back(), max_rows = 128;
  for (const auto& [N, K] : {std::pair<int64_t, int64_t>{64, 96}, std::pair<int64_t, int64_t>{20, 36}}) {
    for (RecipeKind kind : {RecipeKind::fp32, RecipeKind::bf16}) {
      SCOPED_TRACE(::testing::Message() << recipe_name(kind) << " N " << N << " K " << K);
      const Recipe r = Recipe{}.with_kind(kind);
      const DType dt = r.high_precision_dtype();
      const Tensor x = scaled_normal(R, K, 80), w = scaled_normal(G * N, K, 81).view({G, N, K});
      const Tensor g = scaled_normal(R, N, 82);
      LinearRun runs[2];
      for (int d = 0; d < 2; ++d) {
        const Device dev = d == 0 ? Device::cpu() : gpu;
        Var xv(x.to(dev), true), wv(w.to(dev), true);
        const Var y = grouped_linear(xv, wv, offsets, r);
        current_tape().backward(y, g.to(dev));
        runs[d] = {y.value(), xv.grad(), wv.grad()};
      }
      const LinearRun& cpu = runs[0];
      const LinearRun& cuda = runs[1];
      ASSERT_EQ(cuda.y.device(), gpu);
      const auto abs_rounded = [&](const Tensor& t) {
        return kernels::unary(kernels::UnaryOp::abs, kernels::cast(kernels::cast(t, dt), DType::f32));
      };
      const Tensor sy = kernels::grouped_matmul(GroupedProduct::a_bt, abs_rounded(x), abs_rounded(w), offsets);
      const Tensor sdx = kernels::grouped_matmul(GroupedProduct::a_b, abs_rounded(g), abs_rounded(w), offsets);
      const Tensor sdw = kernels::grouped_matmul(GroupedProduct::at_b, abs_rounded(g), abs_rounded(x), offsets);
      const double rel = kind == RecipeKind::bf16 ? 0x1p-7 : 0.0;
      EXPECT_TRUE(testing::gemm_sums_close(cuda.y, cpu.y, sy, double(K)));
      EXPECT_TRUE(testing::gemm_sums_close(cuda.dx, cpu.dx, sdx, double(N), rel));
      EXPECT_TRUE(testing::gemm_sums_close(cuda.dw, cpu.dw, sdw, double(max_rows), rel));
      for (int64_t e : {1, 3})  // no rows: a zero weight gradient, as on the CPU
        EXPECT_TRUE(bit_identical(cuda.dw.select(0, e).contiguous().to(Device::cpu()), Tensor::zeros({N, K})));
    }
  }
}

TEST_F(Fp8CudaRecipes, GroupedScaledGemmEqualsPerGroupGemms) {
  const int64_t N = 128, K = 256;
  const std::vector<int64_t> offsets = {0, 0, 24, 33, 161};
  std::vector<QuantizedTensor> a(4), b(4), ag(4), bg(4);
  const Tensor x = scaled_normal(offsets.back(), K, 70);
  std::vector<Tensor> ws;
  for (size_t e = 0; e < 4; ++e) {
    ws.push_back(scaled_normal(N, K, 71 + e));
    b[e] = quantize(ws[e], Granularity::block_128x128, Format::e4m3);
    bg[e] = quantize(ws[e].to(gpu), Granularity::block_128x128, Format::e4m3);
    if (offsets[e] == offsets[e + 1]) continue;
    a[e] = quantize(x.slice(0, offsets[e], offsets[e + 1]), Granularity::tile_1x128, Format::e4m3);
    ag[e] = quantize(x.to(gpu).slice(0, offsets[e], offsets[e + 1]), Granularity::tile_1x128, Format::e4m3);
  }
  const Tensor y = grouped_scaled_gemm(ag, bg, offsets), ref = grouped_scaled_gemm(a, b, offsets);
  for (size_t e = 0; e < 4; ++e) {
    if (offsets[e] == offsets[e + 1]) continue;
    EXPECT_TRUE(gemm_close(y.slice(0, offsets[e], offsets[e + 1]).contiguous(),
                           ref.slice(0, offsets[e], offsets[e + 1]).contiguous(),
                           x.slice(0, offsets[e], offsets[e + 1]), ws[e]))
        << "expert " << e;
  }
}

#endif  // DAEDALUS_WITH_CUDA

}  // namespace
}  // namespace daedalus::fp8
