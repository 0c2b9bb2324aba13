// The FP8 Linear op: each of its three GEMMs equals the same product evaluated on the quantized
// operands (the recipe is applied exactly), its gradients approach the fp32 ones within the
// formats' error, caching X in FP8 changes nothing, and statistics are collected.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops/activation.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/linear.h"
#include "fp8/linear.h"
#include "tests/testing.h"

namespace daedalus::fp8 {
namespace {

using testing::random_tensor;

// a [M, K] · b [N, K]ᵀ in double from the exact tensor values.
std::vector<double> matmul_nt(const Tensor& a, const Tensor& b) {
  const int64_t m = a.size(0), n = b.size(0), k = a.size(1);
  const std::vector<double> av = a.to_doubles(), bv = b.to_doubles();
  std::vector<double> y(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += av[size_t(i * k + p)] * bv[size_t(j * k + p)];
      y[size_t(i * n + j)] = s;
    }
  return y;
}

// ‖got − want‖ / ‖want‖.
double relative_error(const Tensor& got, const std::vector<double>& want) {
  const std::vector<double> g = got.to_doubles();
  double e = 0, w = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    e += (g[i] - want[i]) * (g[i] - want[i]);
    w += want[i] * want[i];
  }
  return std::sqrt(e / w);
}

struct LinearRun {
  Tensor y, dx, dw;
};

LinearRun run_linear(const Tensor& x, const Tensor& w, const Tensor& g, const Recipe& recipe,
                     LinearState* state = nullptr) {
  Var xv(x, true), wv(w, true);
  const Var y = linear(xv, wv, recipe, state);
  current_tape().backward(y, g);
  return {y.value(), xv.grad(), wv.grad()};
}

Recipe recipe_of(RecipeKind k) { return Recipe{}.with_kind(k); }

constexpr int64_t kM = 65, kN = 129, kK = 300;  // ragged: K and N not multiples of 128

TEST(Fp8Linear, BlockRecipeAppliesExactlyToAllThreeGemms) {
  const Tensor x = random_tensor({kM, kK}, 1), w = random_tensor({kN, kK}, 2, DType::f32, 0.05),
               g = random_tensor({kM, kN}, 3);
  const Recipe r = recipe_of(RecipeKind::fp8_block);
  const LinearRun run = run_linear(x, w, g, r);
  // The same products on the quantized operands, in double. Products of FP8 values are exact;
  // the op accumulates in fp32 per 128-block: rtol-free bound atol = (K/128 + 4)·2^-24·Σ|a b|,
  // which for these magnitudes is below 1e-5 of the result's scale.
  const QuantizedTensor qx = quantize(x, Granularity::tile_1x128, Format::e4m3);
  const QuantizedTensor qw = quantize(w, Granularity::block_128x128, Format::e4m3);
  const std::vector<double> y_ref = matmul_nt(qx.dequantize(), qw.dequantize());
  EXPECT_LT(relative_error(run.y, y_ref), 1e-6);
  const QuantizedTensor qg = quantize(g, Granularity::tile_1x128, Format::e4m3);
  const QuantizedTensor qwt = quantize(w.t(), Granularity::block_128x128, Format::e4m3);
  EXPECT_LT(relative_error(run.dx, matmul_nt(qg.dequantize(), qwt.dequantize())), 1e-6);
  const QuantizedTensor qgt = quantize(g.t(), Granularity::tile_1x128, Format::e4m3);
  const QuantizedTensor qxt = quantize(qx.dequantize().t(), Granularity::tile_1x128, Format::e4m3);
  EXPECT_LT(relative_error(run.dw, matmul_nt(qgt.dequantize(), qxt.dequantize())), 1e-6);
}

TEST(Fp8Linear, EveryRecipeApproachesFp32WithinItsFormatError) {
  // E4M3 rounds each operand with relative error <= 2^-4 (RMS ~ 2^-4/sqrt(3) = 3.6%); a product
  // of two such operands, summed over K with independent errors, has relative error of the same
  // order: below 10%. E5M2 gradients (hybrid) double it: below 20%. Above 1e-4: FP8 was applied.
  const Tensor x = random_tensor({kM, kK}, 4), w = random_tensor({kN, kK}, 5, DType::f32, 0.05),
               g = random_tensor({kM, kN}, 6);
  const std::vector<double> y32 = matmul_nt(x, w);
  const std::vector<double> dx32 = matmul_nt(g, w.t().contiguous());
  const std::vector<double> dw32 = matmul_nt(g.t().contiguous(), x.t().contiguous());
  for (RecipeKind k : {RecipeKind::fp8_tensor_current, RecipeKind::fp8_tensor_delayed, RecipeKind::fp8_row,
                       RecipeKind::fp8_block, RecipeKind::mxfp8}) {
    const Recipe r = recipe_of(k);
    LinearState state;
    const LinearRun run = run_linear(x, w, g, r, &state);
    const double grad_bound = r.dgrad().a.format == Format::e5m2 ? 0.2 : 0.1;
    for (auto [name, got, want, bound] : {std::tuple{"y", run.y, y32, 0.1}, std::tuple{"dx", run.dx, dx32, grad_bound},
                                          std::tuple{"dw", run.dw, dw32, grad_bound}}) {
      const double err = relative_error(got, want);
      EXPECT_LT(err, bound) << recipe_name(k) << " " << name;
      EXPECT_GT(err, 1e-4) << recipe_name(k) << " " << name;
    }
  }
}

TEST(Fp8Linear, CachingXInFp8GivesIdenticalGradients) {
  const Tensor x = random_tensor({kM, kK}, 7), w = random_tensor({kN, kK}, 8, DType::f32, 0.05),
               g = random_tensor({kM, kN}, 9);
  Recipe high = recipe_of(RecipeKind::fp8_block), cached = high;
  cached.cache_fp8 = true;
  const LinearRun a = run_linear(x, w, g, high), b = run_linear(x, w, g, cached);
  EXPECT_TRUE(testing::all_close(b.dw, a.dw, 0, 0));
  EXPECT_TRUE(testing::all_close(b.dx, a.dx, 0, 0));
  // wgrad: high keeps Wgrad in high precision on the quantized X: closer to fp32 than FP8 Wgrad.
  Recipe high_wgrad = high;
  high_wgrad.wgrad_fp8 = false;
  const LinearRun c = run_linear(x, w, g, high_wgrad);
  const std::vector<double> dw32 = matmul_nt(g.t().contiguous(), x.t().contiguous());
  EXPECT_LT(relative_error(c.dw, dw32), relative_error(a.dw, dw32));
}

// The SwiGLU fused into the down projection's Fprop quantization (swiglu_linear and
// swiglu_grouped_linear) is ops::swiglu then the Linear: the output and the gradients of gate, up
// and W bit for bit, for every recipe (fp8_block takes the fused path, the others the sequence),
// with activations cached in FP8 or not, and grouped with an empty expert and a one-row expert.
TEST(Fp8Linear, SwigluLinearEqualsSwigluThenLinearBitForBit) {
  const std::vector<int64_t> offsets = {0, 20, 20, 64, 65};  // kM rows in 4 groups
  const Tensor gate = random_tensor({kM, kK}, 20), up = random_tensor({kM, kK}, 21),
               w = random_tensor({kN, kK}, 22, DType::f32, 0.05), w4 = random_tensor({4, kN, kK}, 24, DType::f32, 0.05),
               dy = random_tensor({kM, kN}, 23);
  for (RecipeKind kind : all_recipe_kinds()) {
    for (bool cache : {false, true}) {
      SCOPED_TRACE(::testing::Message() << recipe_name(kind) << (cache ? " cache_fp8" : ""));
      Recipe r = recipe_of(kind);
      r.cache_fp8 = cache;
      const auto compare = [&](bool grouped) {
        LinearState s1, s2;
        std::vector<LinearState> st1(4), st2(4);
        Var g1(gate, true), u1(up, true), w1(grouped ? w4 : w, true);
        Var g2(gate, true), u2(up, true), w2(grouped ? w4 : w, true);
        const Var y1 =
            grouped ? swiglu_grouped_linear(g1, u1, w1, offsets, r, &st1) : swiglu_linear(g1, u1, w1, r, &s1);
        current_tape().backward(y1, dy);  // one backward per forward: it releases the tape
        const Var h = ops::swiglu(g2, u2);
        const Var y2 = grouped ? grouped_linear(h, w2, offsets, r, &st2) : linear(h, w2, r, &s2);
        current_tape().backward(y2, dy);
        // fp4_experts' X is fp8_block's (1x128 E4M3); only its weights are FP4.
        EXPECT_EQ(fuses_swiglu(r, g1, u1, {&s1}), kind == RecipeKind::fp8_block || kind == RecipeKind::fp4_experts);
        EXPECT_EQ(testing::bytes(y1.value()), testing::bytes(y2.value())) << (grouped ? "grouped" : "");
        EXPECT_EQ(testing::bytes(g1.grad()), testing::bytes(g2.grad())) << (grouped ? "grouped" : "");
        EXPECT_EQ(testing::bytes(u1.grad()), testing::bytes(u2.grad())) << (grouped ? "grouped" : "");
        EXPECT_EQ(testing::bytes(w1.grad()), testing::bytes(w2.grad())) << (grouped ? "grouped" : "");
      };
      compare(false);
      compare(true);
    }
  }
}

// grouped_linear is fp8::linear on each group's rows with its own weight and state: the output and
// the gradients of x and of every expert's weight bit for bit, for every recipe, with an empty and
// a one-row expert, for N that is a multiple of 128 (the weights quantized together) and N that
// is not. (fp8_block quantizes X and dY once for all groups and runs Fprop and Dgrad as grouped
// GEMMs; the bits must be each group's own.)
TEST(Fp8Linear, GroupedLinearEqualsLinearPerGroupBitForBit) {
  const std::vector<int64_t> offsets = {0, 20, 20, 64, 65};  // kM rows in 4 groups
  const Tensor x = random_tensor({kM, kK}, 30);
  for (int64_t n : {kN, int64_t(256)}) {
    const Tensor w = random_tensor({4, n, kK}, 31, DType::f32, 0.05), dy = random_tensor({kM, n}, 32);
    for (RecipeKind kind : all_recipe_kinds()) {
      for (bool cache : {false, true}) {
        SCOPED_TRACE(::testing::Message() << recipe_name(kind) << (cache ? " cache_fp8" : "") << " N=" << n);
        Recipe r = recipe_of(kind);
        r.cache_fp8 = cache;
        std::vector<LinearState> grouped_states(4), own_states(4);
        Var xg(x, true), wg(w, true);
        const Var y = grouped_linear(xg, wg, offsets, r, &grouped_states);
        current_tape().backward(y, dy);
        for (size_t g = 0; g < 4; ++g) {
          const int64_t begin = offsets[g], end = offsets[g + 1];
          Var xs(x.slice(0, begin, end).contiguous(), true), ws(w.select(0, int64_t(g)).contiguous(), true);
          const Var ys = linear(xs, ws, r, &own_states[g]);
          if (begin < end) current_tape().backward(ys, dy.slice(0, begin, end).contiguous());
          EXPECT_EQ(testing::bytes(y.value().slice(0, begin, end)), testing::bytes(ys.value())) << "group " << g;
          if (begin == end) {
            EXPECT_EQ(testing::bytes(wg.grad().select(0, int64_t(g))), testing::bytes(Tensor::zeros({n, kK})))
                << "group " << g;
            continue;
          }
          EXPECT_EQ(testing::bytes(xg.grad().slice(0, begin, end)), testing::bytes(xs.grad())) << "group " << g;
          EXPECT_EQ(testing::bytes(wg.grad().select(0, int64_t(g))), testing::bytes(ws.grad())) << "group " << g;
        }
      }
    }
  }
}

TEST(Fp8Linear, HighPrecisionRecipesAreThePlainLinear) {
  const Tensor x = random_tensor({7, 33}, 10), w = random_tensor({5, 33}, 11), g = random_tensor({7, 5}, 12);
  const LinearRun r = run_linear(x, w, g, recipe_of(RecipeKind::bf16));
  Var xb(x, true), wb(w, true);
  const Var y = ops::linear(ops::cast(xb, DType::bf16), ops::cast(wb, DType::bf16));
  current_tape().backward(y, g);
  EXPECT_TRUE(testing::all_close(r.y, y.value(), 0, 0));
  EXPECT_TRUE(testing::all_close(r.dw, wb.grad(), 0, 0));
  EXPECT_EQ(r.dw.dtype(), DType::f32);  // FP32 master weight gradient
}

TEST(Fp8Stats, CurrentScalingSaturatesNothing) {
  // Current scaling maps each block's amax to exactly the format's max: nothing is clipped, so the
  // saturation must read 0 at every granularity (a too-tight tolerance once counted each block's
  // own max element, ~1/128 of a 1x128-tiled tensor).
  const Tensor x = random_tensor({256, 384}, 21);
  for (const Granularity g : {Granularity::tensor, Granularity::row, Granularity::tile_1x128,
                              Granularity::block_128x128, Granularity::mx_1x32}) {
    SCOPED_TRACE(std::string(granularity_name(g)));
    EXPECT_EQ(quant_stats(x, quantize(x, g, Format::e4m3)).saturation_pct, 0.0);
  }
  // Twice the current scale clips every element beyond half the amax.
  double amax = 0;
  for (double v : x.to_doubles()) amax = std::max(amax, std::fabs(v));
  const QuantizedTensor clipped = quantize_with_scale(x, 2 * scale_from_amax(float(amax), Format::e4m3), Format::e4m3);
  EXPECT_GT(quant_stats(x, clipped).saturation_pct, 0.0);
}

TEST(Fp8Linear, DelayedScalingUsesTheHistoryAndStatisticsAreCollected) {
  const Tensor w = random_tensor({kN, kK}, 13, DType::f32, 0.05), g = random_tensor({kM, kN}, 14);
  LinearState state;
  state.collect_stats = true;
  const Recipe r = recipe_of(RecipeKind::fp8_tensor_delayed);
  run_linear(random_tensor({kM, kK}, 15), w, g, r, &state);
  EXPECT_EQ(state.x.values().size(), 1u);
  // A step whose X is 100x larger than the history saturates under the old scale.
  run_linear(random_tensor({kM, kK}, 16, DType::f32, 100.0), w, g, r, &state);
  EXPECT_EQ(state.x.values().size(), 2u);
  ASSERT_TRUE(state.stats.count("x"));
  EXPECT_GT(state.stats["x"].saturation_pct, 1.0);
  EXPECT_EQ(state.stats["x"].nonfinite, 0);
  EXPECT_GT(state.stats["dy"].count, 0);
  EXPECT_TRUE(
      testing::mentions(testing::error_of([&] {
                          run_linear(random_tensor({3, 8}, 1), random_tensor({4, 8}, 2), random_tensor({3, 4}, 3), r);
                        }),
                        {"fp8 linear", "LinearState"}));
}

}  // namespace
}  // namespace daedalus::fp8
