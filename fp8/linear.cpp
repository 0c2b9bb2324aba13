// The FP8 Linear and grouped Linear ops on the tape (autograd's record() extension point).
#include "fp8/linear.h"

#include <algorithm>

#include "autograd/kernels/activation.h"
#include "autograd/kernels/copy.h"
#include "autograd/kernels/gemm.h"
#include "autograd/kernels/grouped_gemm.h"
#include "autograd/kernels/reduce.h"
#include "autograd/ops/activation.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/linear.h"
#include "fp8/hadamard.h"
#include "fp8/scaled_gemm.h"

namespace daedalus::fp8 {

uint64_t rounding_seed(uint64_t run_seed, uint64_t step, uint64_t sample, uint64_t module) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (uint64_t part : {run_seed, step, sample, module}) {
    uint64_t z = h ^ (part + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    h = z ^ (z >> 31);
  }
  return h;
}

uint64_t random_use_seed(uint64_t state_seed, RandomUse use) { return rounding_seed(state_seed, uint64_t(use), 0, 0); }

namespace {

// Quantizes `t` [rows, cols] along cols as `spec` says; under delayed scaling the tensor scale
// comes from `history` (its max before this step) and this step's amax is pushed afterwards.
// `delayed_scale` receives the tensor scale used under delayed scaling.
QuantizedTensor quantize_operand(const Tensor& t, const OperandSpec& spec, const Recipe& recipe, AmaxHistory* history,
                                 LinearState* state, const char* name, float* delayed_scale = nullptr,
                                 const ScaleOptions* options = nullptr) {
  QuantizedTensor q;
  if (recipe.delayed() && history != nullptr) {
    const float amax_now = float(kernels::amax_all(t).item());
    const float amax = history->values().empty() ? amax_now : history->amax();
    const float scale = scale_from_amax(amax, spec.format, recipe.scale);
    q = quantize_with_scale(t, scale, spec.format);
    if (delayed_scale != nullptr) *delayed_scale = scale;
    history->push(amax_now);
  } else {
    q = quantize(t, spec.granularity, spec.format, options != nullptr ? *options : recipe.scale);
  }
  if (state != nullptr && state->collect_stats) state->stats[name] = quant_stats(t, q);
  return q;
}

// The key of one random use in this Linear's current call (the state's seed; 0 without a state).
uint64_t use_seed(const LinearState* state, RandomUse use) {
  return random_use_seed(state != nullptr ? state->rounding_seed : 0, use);
}

// ScaleOptions for a gradient operand: stochastic rounding under an FP4 recipe that asks for it.
ScaleOptions gradient_options(const Recipe& recipe, const LinearState* state, RandomUse use) {
  ScaleOptions o = recipe.scale;
  if (recipe.is_fp4() && recipe.fp4.stochastic_rounding) {
    o.stochastic_rounding = true;
    o.seed = use_seed(state, use);
  }
  return o;
}

Tensor rows_of(const Tensor& t) { return t.reshape({-1, t.size(-1)}); }

Tensor as_dtype(const Tensor& t, DType dtype) { return t.dtype() == dtype ? t : kernels::cast(t, dtype); }

// One FP8 GEMM triple, on plain tensors: what linear and grouped_linear share.
// Forward Y = q(X)·q(W)ᵀ keeps what the backward asked for: the quantized X that Fprop used (as
// its FP8 copy when the recipe caches activations in FP8, else X itself to re-quantize) and W.
struct Fp8Gemms {
  Recipe recipe;  // a copy: backward must not depend on the caller's object outliving it
  LinearState* state;
  std::shared_ptr<QuantizedTensor> cached_qx;
  SavedTensor keep_x, keep_w;
  float x_scale = 0.0f;           // delayed scaling: the scale X was quantized with
  QuantizedTensor fprop_qw = {};  // Fprop's q(W), kept for Dgrad instead of W when dgrad_transposes_fprop_w()

  // Whether Dgrad's q(Wᵀ) is exactly Fprop's q(W) transposed (fp8/quantized.h transpose_quantized),
  // so that a byte transpose replaces quantizing Wᵀ: the same granularity, format and options on
  // both sides, a granularity whose blocks transpose with the data (per tensor, 128x128: fp8_block
  // and fp8_tensor_current), and a scale from the current amax on both sides (delayed scaling
  // quantizes Fprop's W with the history's scale but Dgrad's Wᵀ with its current amax).
  bool dgrad_transposes_fprop_w() const {
    const OperandSpec f = recipe.fprop().b, d = recipe.dgrad().b;
    return f.granularity == d.granularity && f.format == d.format && transposes_exactly(f.granularity) &&
           !recipe.delayed() && !recipe.scale.stochastic_rounding;
  }

  // Fprop's operands: x [M, K], w [N, K] quantized along K (the GEMM is the caller's: one
  // scaled_gemm, or one grouped_scaled_gemm over all experts).
  struct Operands {
    QuantizedTensor x, w;
  };
  Operands quantize_forward(const Tensor& x, const Tensor& w, bool keep_for_wgrad, bool keep_for_dgrad) {
    QuantizedTensor qx =
        quantize_operand(x, recipe.fprop().a, recipe, state ? &state->x : nullptr, state, "x", &x_scale);
    return adopt_forward(std::move(qx), &x, w, keep_for_wgrad, keep_for_dgrad);
  }

  // The same with Fprop's q(X) made by the caller (a fused producer, fuses_swiglu): X itself is
  // never formed, so backward keeps q(X) — what re-quantizing X would give, bit for bit.
  // With `qw` the caller's q(W) too (grouped_linear quantizing all experts' weights at once).
  Operands adopt_forward(QuantizedTensor qx, const Tensor* x, const Tensor& w, bool keep_for_wgrad, bool keep_for_dgrad,
                         const QuantizedTensor* qw = nullptr) {
    Operands q;
    q.x = std::move(qx);
    q.w = qw != nullptr ? *qw : quantize_operand(w, recipe.fprop().b, recipe, state ? &state->w : nullptr, state, "w");
    if (keep_for_wgrad) {
      if (recipe.cache_fp8 || x == nullptr) {
        cached_qx = std::make_shared<QuantizedTensor>(q.x);  // shares the FP8 data the GEMM reads
      } else {
        keep_x = save(*x);
      }
    }
    if (keep_for_dgrad) {
      if (dgrad_transposes_fprop_w()) {
        fprop_qw = q.w;
      } else if (recipe.kind == RecipeKind::fp4_experts) {
        keep_w = save(q.w.dequantize());  // Wq, the FP4-rounded weight (exact in fp32)
      } else {
        keep_w = save(w);
      }
    }
    return q;
  }

  // x [M, K], w [N, K] -> [M, N] fp32.
  Tensor forward(const Tensor& x, const Tensor& w, bool keep_for_wgrad, bool keep_for_dgrad) {
    const Operands q = quantize_forward(x, w, keep_for_wgrad, keep_for_dgrad);
    return scaled_gemm(q.x, q.w, recipe.accumulator);
  }

  // Dgrad's second operand q(Wᵀ) [K, N]: Fprop's q(W) transposed where that is exact, else Wᵀ
  // quantized.
  QuantizedTensor dgrad_weight() const {
    if (fprop_qw.data.defined()) return transpose_quantized(fprop_qw);
    return quantize(keep_w.get().t(), recipe.dgrad().b.granularity, recipe.dgrad().b.format, recipe.scale);
  }

  // dy [M, N] fp32 -> dx [M, K] (when asked) and dw [N, K] (when asked), fp32.
  void backward(const Tensor& dy, Tensor* dx, Tensor* dw) const {
    // Without Dgrad, q(dY) is still made where it is observed: dY's amax history (delayed scaling)
    // and its statistics.
    const bool observed = recipe.wgrad_fp8 && (recipe.delayed() || (state != nullptr && state->collect_stats));
    QuantizedTensor qdy;
    const ScaleOptions dy_options = gradient_options(recipe, state, RandomUse::dgrad_dy);
    if (dx != nullptr || (dw != nullptr && observed))
      qdy = quantize_operand(dy, recipe.dgrad().a, recipe, state ? &state->dy : nullptr, state, "dy", nullptr,
                             &dy_options);
    if (dx != nullptr) *dx = scaled_gemm(qdy, dgrad_weight(), recipe.accumulator);  // q(dY) [M, N] · q(Wᵀ) [K, N]ᵀ
    if (dw != nullptr) *dw = wgrad(dy);
  }

  // dW [N, K] fp32 from dy [M, N].
  Tensor wgrad(const Tensor& dy) const {
    const Recipe& r = recipe;
    const GemmSpec fprop = r.fprop(), wgrad = r.wgrad();
    // The quantized X that Fprop used [M, K]: its FP8 copy, or X quantized again the same way.
    const auto fprop_qx = [&] {
      if (cached_qx) return *cached_qx;
      if (r.delayed()) return quantize_with_scale(keep_x.get(), x_scale, fprop.a.format);
      return quantize(keep_x.get(), fprop.a.granularity, fprop.a.format, r.scale);
    };
    if (!r.wgrad_fp8) return kernels::matmul(dy.t(), fprop_qx().dequantize());
    if (r.is_fp4()) {
      // dW [N, K] = q(dYᵀ H) · q(Xᵀ H)ᵀ: both operands from the high-precision tensors (X itself
      // when kept), along tokens; H the 16x16 random Hadamard transform (tokens zero-padded to a
      // multiple of 16), which cancels in the product since H Hᵀ = I.
      const Tensor x = cached_qx ? cached_qx->dequantize() : keep_x.get();
      Tensor a = dy.t(), b = x.t();
      if (r.fp4.hadamard) {
        const uint64_t seed = use_seed(state, RandomUse::hadamard);
        a = random_hadamard_16(a, seed);
        b = random_hadamard_16(b, seed);
      }
      return scaled_gemm(
          quantize(a, wgrad.a.granularity, wgrad.a.format, gradient_options(r, state, RandomUse::wgrad_dy)),
          quantize(b, wgrad.b.granularity, wgrad.b.format, r.scale), r.accumulator);
    }
    // dW [N, K] = q(dYᵀ) [N, M] · q(Xqᵀ) [K, M]ᵀ, Xq = dequantized q(X)
    const QuantizedTensor a = quantize(dy.t(), wgrad.a.granularity, wgrad.a.format, r.scale);
    const QuantizedTensor b = requantize_transposed(fprop_qx(), wgrad.b.granularity, wgrad.b.format, r.scale);
    return scaled_gemm(a, b, r.accumulator);
  }
};

// The same triple in high precision (the fp32 and bf16 recipes): operands rounded to `dtype`,
// fp32 accumulation, gradients rounded to `dtype` as ops::linear on cast inputs returns them.
struct HighGemms {
  DType dtype;
  SavedTensor keep_x, keep_w;

  Tensor forward(const Tensor& x, const Tensor& w, bool keep_for_wgrad, bool keep_for_dgrad) {
    const Tensor xd = as_dtype(x, dtype), wd = as_dtype(w, dtype);
    if (keep_for_wgrad) keep_x = save(xd);
    if (keep_for_dgrad) keep_w = save(wd);
    return kernels::matmul(xd, wd.t());
  }
  void backward(const Tensor& dy, Tensor* dx, Tensor* dw) const {
    const Tensor g = as_dtype(dy, dtype);
    if (dx != nullptr) *dx = as_dtype(as_dtype(kernels::matmul(g, keep_w.get()), dtype), DType::f32);
    if (dw != nullptr) *dw = as_dtype(as_dtype(kernels::matmul(g.t(), keep_x.get()), dtype), DType::f32);
  }
};

// HighGemms over every group at once (grouped_linear on CUDA): each pass is ONE grouped GEMM
// (autograd/kernels/grouped_gemm.h: one cuBLAS call) instead of one GEMM and one copy per group.
// The same numerics as HighGemms per group: operands rounded to `dtype`, fp32 accumulation, y in
// fp32, gradients rounded to `dtype` (the GEMM stores them so, rounded once) and returned in fp32;
// a group without rows gets a zero weight gradient.
struct GroupedHighGemms {
  DType dtype;
  std::vector<int64_t> offsets;
  SavedTensor keep_x, keep_w;

  // x [R, K], w [G, N, K] -> y [R, N] fp32, rows of group g = x_g · w_gᵀ.
  Tensor forward(const Tensor& x, const Tensor& w, bool keep_for_wgrad, bool keep_for_dgrad) {
    const Tensor xd = as_dtype(x, dtype), wd = as_dtype(w, dtype);
    if (keep_for_wgrad) keep_x = save(xd);
    if (keep_for_dgrad) keep_w = save(wd);
    return kernels::grouped_matmul(kernels::GroupedProduct::a_bt, xd, wd, offsets);
  }
  // dy [R, N] fp32 -> dx [R, K] (dx_g = dy_g · w_g) and dw [G, N, K] (dw_g = dy_gᵀ · x_g), fp32.
  void backward(const Tensor& dy, Tensor* dx, Tensor* dw) const {
    const Tensor g = as_dtype(dy, dtype);
    if (dx != nullptr)
      *dx =
          as_dtype(kernels::grouped_matmul(kernels::GroupedProduct::a_b, g, keep_w.get(), offsets, dtype), DType::f32);
    if (dw != nullptr)
      *dw =
          as_dtype(kernels::grouped_matmul(kernels::GroupedProduct::at_b, g, keep_x.get(), offsets, dtype), DType::f32);
  }
};

// Rows [begin, end) of a quantized operand whose scale blocks are `block_rows` tall (1x128: 1;
// 128x128: 128, begin and end multiples of it): its data rows and their scale rows. No block
// spans the cut, so this is what quantizing those rows alone gives (round to nearest).
QuantizedTensor slice_rows(const QuantizedTensor& q, int64_t begin, int64_t end, int64_t block_rows = 1) {
  QuantizedTensor out = q;
  out.data = q.data.slice(0, begin, end);
  out.scale_inv = q.scale_inv.slice(0, begin / block_rows, end / block_rows);
  return out;
}

// Whether an operand quantized along its rows as `spec` says gives, for a set of rows, the rows
// of the quantization of any larger set: per-row 1x128 tiles with current scaling and round to
// nearest (stochastic words follow the row index), and no statistics to collect (they are per
// Linear and need the whole operand).
bool row_local(const Recipe& recipe, const OperandSpec& spec, bool collecting_stats) {
  return recipe.is_fp8() && !recipe.delayed() && !recipe.scale.stochastic_rounding &&
         spec.granularity == Granularity::tile_1x128 && !collecting_stats;
}

bool row_local_fprop_x(const Recipe& recipe, bool collecting_stats) {
  return recipe.is_fp8() && row_local(recipe, recipe.fprop().a, collecting_stats);
}

bool collecting_stats(const std::vector<LinearState>* states) {
  return states != nullptr &&
         std::any_of(states->begin(), states->end(), [](const LinearState& s) { return s.collect_stats; });
}

// grouped_linear's per-group GEMM triples, on plain tensors: one Fp8Gemms or HighGemms per group
// (empty groups included, so that group g is entry g), run over each group's contiguous rows.
struct GroupedGemms {
  bool fp8 = false;
  std::vector<int64_t> offsets;
  Shape x_shape, w_shape;
  std::vector<Fp8Gemms> fp8_groups;
  std::vector<HighGemms> high_groups;
  bool dgrad_together = false;  // Dgrad's q(dY) is row-local: one quantization and one grouped GEMM

  // x [R, K], w [G, N, K] -> y [R, N] fp32. With `qx` (Fprop's 1x128 q(X) of all R rows, made by
  // a fused producer; FP8 recipes only) x may be undefined: each group adopts its rows of qx.
  // Where the recipe's blocks never straddle two groups (row_local_fprop_x), X — and W
  // when N is a multiple of 128 — are quantized once for all groups and sliced: the same bits as
  // quantizing each group alone, in one launch instead of one per expert.
  Tensor forward(const Tensor& x, const QuantizedTensor* qx, const Tensor& w, const std::vector<int64_t>& group_offsets,
                 const Recipe& recipe, std::vector<LinearState>* states, bool keep_for_wgrad, bool keep_for_dgrad) {
    fp8 = recipe.is_fp8();
    offsets = group_offsets;
    const int64_t groups = w.size(0), rows = offsets.back(), out = w.size(1), k = w.size(2);
    x_shape = {rows, k};
    w_shape = w.shape();
    if (fp8) {
      // X for all groups at once (and W, with 128x128 blocks that line up with the experts).
      const bool together = row_local_fprop_x(recipe, collecting_stats(states));
      dgrad_together = row_local(recipe, recipe.dgrad().a, collecting_stats(states));
      QuantizedTensor qx_all, qw_all;
      if (qx == nullptr && together && rows > 0) {
        qx_all = quantize(x, Granularity::tile_1x128, recipe.fprop().a.format, recipe.scale);
        qx = &qx_all;
      }
      const bool w_together = together && recipe.fprop().b.granularity == Granularity::block_128x128 && out % 128 == 0;
      if (w_together && rows > 0)
        qw_all =
            quantize(w.reshape({groups * out, k}), Granularity::block_128x128, recipe.fprop().b.format, recipe.scale);
      // Each group has its own scales (and amax history), then one grouped GEMM writes every
      // group's rows (fp8/scaled_gemm.h).
      std::vector<QuantizedTensor> qxs(static_cast<size_t>(groups)), qw(static_cast<size_t>(groups));
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t begin = offsets[size_t(g)], end = offsets[size_t(g) + 1];
        LinearState* state = states != nullptr ? &(*states)[size_t(g)] : nullptr;
        fp8_groups.push_back(Fp8Gemms{recipe, state, {}, {}, {}});
        if (begin == end) {  // no rows: only the weight's shape matters to the grouped GEMM
          qw[size_t(g)] = empty_group_operand(out, k, w.device());
          continue;
        }
        const Tensor xg = x.defined() ? x.slice(0, begin, end) : Tensor();
        const QuantizedTensor wg = w_together ? slice_rows(qw_all, g * out, (g + 1) * out, 128) : QuantizedTensor{};
        auto q = qx != nullptr ? fp8_groups.back().adopt_forward(
                                     slice_rows(*qx, begin, end), x.defined() ? &xg : nullptr, w.select(0, g),
                                     keep_for_wgrad, keep_for_dgrad, w_together ? &wg : nullptr)
                               : fp8_groups.back().quantize_forward(xg, w.select(0, g), keep_for_wgrad, keep_for_dgrad);
        qxs[size_t(g)] = std::move(q.x);
        qw[size_t(g)] = std::move(q.w);
      }
      return grouped_scaled_gemm(qxs, qw, offsets, recipe.accumulator);
    }
    Tensor y = Tensor::empty({rows, out}, DType::f32, x.device());
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = offsets[size_t(g)], end = offsets[size_t(g) + 1];
      high_groups.push_back(HighGemms{recipe.high_precision_dtype(), {}, {}});
      if (begin < end)
        y.slice(0, begin, end)
            .copy_(high_groups.back().forward(x.slice(0, begin, end), w.select(0, g), keep_for_wgrad, keep_for_dgrad));
    }
    return y;
  }

  // dy [R, N] fp32 -> dx [R, K] and dw [G, N, K] fp32, each when asked; a group without rows
  // gets a zero weight gradient. FP8 Dgrad with a row-local q(dY) is one quantization of dY and one
  // grouped GEMM over all groups, like the forward; the rest is per group.
  void backward(const Tensor& dy, Tensor* dx, Tensor* dw) const {
    const bool grouped_dgrad = fp8 && dgrad_together && dx != nullptr && x_shape[0] > 0;
    if (grouped_dgrad) *dx = grouped_fp8_dgrad(dy);
    if (dx != nullptr && !grouped_dgrad) *dx = Tensor::zeros(x_shape, DType::f32, dy.device());
    if (dw != nullptr) *dw = Tensor::zeros(w_shape, DType::f32, dy.device());
    for (size_t g = 0; g + 1 < offsets.size(); ++g) {
      const int64_t begin = offsets[g], end = offsets[g + 1];
      if (begin == end) continue;  // no rows: no gradient for this group's weight
      Tensor dxg, dwg;
      const Tensor dyg = dy.slice(0, begin, end);
      Tensor* want_dx = dx != nullptr && !grouped_dgrad ? &dxg : nullptr;
      Tensor* want_dw = dw != nullptr ? &dwg : nullptr;
      if (want_dx == nullptr && want_dw == nullptr) continue;
      if (fp8) {
        fp8_groups[g].backward(dyg, want_dx, want_dw);
      } else {
        high_groups[g].backward(dyg, want_dx, want_dw);
      }
      if (want_dx) dx->slice(0, begin, end).copy_(dxg);
      if (want_dw) dw->select(0, int64_t(g)).copy_(dwg);
    }
  }

  // dx [R, K] = each group's q(dY_g) · q(W_gᵀ)ᵀ: q(dY) of all rows sliced per group — the bits each
  // group's own quantization gives (row_local) — and one grouped GEMM.
  Tensor grouped_fp8_dgrad(const Tensor& dy) const {
    const Recipe& recipe = fp8_groups.front().recipe;
    const QuantizedTensor qdy = quantize(dy, Granularity::tile_1x128, recipe.dgrad().a.format, recipe.scale);
    const size_t groups = fp8_groups.size();
    std::vector<QuantizedTensor> a(groups), b(groups);
    for (size_t g = 0; g < groups; ++g) {
      const int64_t begin = offsets[g], end = offsets[g + 1];
      if (begin == end) {
        b[g] = empty_group_operand(x_shape[1], w_shape[1], dy.device());
        continue;
      }
      a[g] = slice_rows(qdy, begin, end);
      b[g] = fp8_groups[g].dgrad_weight();
    }
    return grouped_scaled_gemm(a, b, offsets, recipe.accumulator);
  }
};

// The grouped_linear tape node: y from `gemms`, whose backward(dy, dx*, dw*) gives the gradients.
template <typename Gemms>
Var record_grouped(const Var& x, const Var& weight, const Tensor& y, std::shared_ptr<Gemms> gemms) {
  return record1("grouped_linear", {x, weight}, y, [gemms](const BackwardContext& ctx) {
    std::vector<Tensor> grads(2);
    gemms->backward(ctx.grad(), ctx.needs_grad(0) ? &grads[0] : nullptr, ctx.needs_grad(1) ? &grads[1] : nullptr);
    return grads;
  });
}

// grouped_linear's argument checks, for x [R, K] (or the SwiGLU inputs it stands for).
void check_grouped(const Tensor& xv, const Tensor& wv, const std::vector<int64_t>& offsets, const Recipe& recipe,
                   const std::vector<LinearState>* states) {
  DAEDALUS_CHECK(xv.dim() == 2 && wv.dim() == 3 && xv.size(1) == wv.size(2),
                 "grouped linear: input {} and weight {}: expected x [rows, K] and weight [groups, out, K]",
                 shape_str(xv.shape()), shape_str(wv.shape()));
  const int64_t groups = wv.size(0), rows = xv.size(0);
  DAEDALUS_CHECK(int64_t(offsets.size()) == groups + 1 && offsets.front() == 0 && offsets.back() == rows,
                 "grouped linear: {} offsets for {} groups and {} rows: expected groups + 1 offsets from 0 to rows",
                 offsets.size(), groups, rows);
  for (int64_t g = 0; g < groups; ++g)
    DAEDALUS_CHECK(offsets[size_t(g)] <= offsets[size_t(g) + 1], "grouped linear: offsets decrease at group {}", g);
  DAEDALUS_CHECK(!recipe.delayed() || (states != nullptr && int64_t(states->size()) == groups),
                 "grouped linear: recipe {} needs one LinearState per group ({})", recipe_name(recipe.kind), groups);
}

}  // namespace

Var linear(const Var& x, const Var& weight, const Recipe& recipe, LinearState* state) {
  if (!recipe.is_fp8()) {
    const DType dt = recipe.high_precision_dtype();
    return ops::linear(ops::cast(x, dt), ops::cast(weight, dt));
  }
  DAEDALUS_CHECK(!recipe.delayed() || state != nullptr, "fp8 linear: recipe {} needs a LinearState (amax history)",
                 recipe_name(recipe.kind));
  const Tensor& wv = weight.value();
  DAEDALUS_CHECK(wv.dim() == 2 && x.value().dim() >= 1 && x.value().size(-1) == wv.size(1),
                 "fp8 linear: input {} and weight {}: expected weight [out, {}]", shape_str(x.shape()),
                 shape_str(wv.shape()), x.value().dim() >= 1 ? x.value().size(-1) : 0);
  auto gemms = std::make_shared<Fp8Gemms>(Fp8Gemms{recipe, state, {}, {}, {}});
  Shape out_shape = x.shape();
  out_shape.back() = wv.size(0);
  const Tensor y = gemms->forward(rows_of(x.value()), wv, weight.requires_grad(), x.requires_grad()).view(out_shape);
  return record1("fp8_linear", {x, weight}, y, [gemms, sx = x.shape()](const BackwardContext& ctx) {
    std::vector<Tensor> grads(2);
    gemms->backward(rows_of(ctx.grad()), ctx.needs_grad(0) ? &grads[0] : nullptr,
                    ctx.needs_grad(1) ? &grads[1] : nullptr);
    if (grads[0].defined()) grads[0] = grads[0].view(sx);
    return grads;
  });
}

Var grouped_linear(const Var& x, const Var& weight, const std::vector<int64_t>& offsets, const Recipe& recipe,
                   std::vector<LinearState>* states) {
  const Tensor& xv = x.value();
  const Tensor& wv = weight.value();
  check_grouped(xv, wv, offsets, recipe, states);
  if (!recipe.is_fp8() && xv.device().is_cuda()) {
    // High precision on CUDA: one grouped GEMM per pass over all groups. The CPU keeps the
    // per-group loop below (the reference: its results stay bit for bit what they were).
    auto gemms = std::make_shared<GroupedHighGemms>(GroupedHighGemms{recipe.high_precision_dtype(), offsets, {}, {}});
    return record_grouped(x, weight, gemms->forward(xv, wv, weight.requires_grad(), x.requires_grad()), gemms);
  }
  auto gemms = std::make_shared<GroupedGemms>();
  return record_grouped(
      x, weight, gemms->forward(xv, nullptr, wv, offsets, recipe, states, weight.requires_grad(), x.requires_grad()),
      gemms);
}

bool fuses_swiglu(const Recipe& recipe, const Var& gate, const Var& up, const std::vector<LinearState*>& states) {
  const bool stats =
      std::any_of(states.begin(), states.end(), [](const LinearState* s) { return s != nullptr && s->collect_stats; });
  return row_local_fprop_x(recipe, stats) && gate.value().dtype() == DType::f32 && up.value().dtype() == DType::f32 &&
         gate.shape() == up.shape() && gate.value().dim() >= 1;
}

namespace {

// The SwiGLU's gradients from dh (what the down projection's backward gave for h): the swiglu
// node's backward, inside the fused node.
std::vector<Tensor> swiglu_linear_grads(const BackwardContext& ctx, const SavedTensor& gate, const SavedTensor& up,
                                        const Tensor& dh, Tensor dw) {
  std::vector<Tensor> grads(3);
  if (dh.defined()) {
    kernels::SwigluGrads g = kernels::swiglu_backward(gate.get(), up.get(), dh);
    if (ctx.needs_grad(0)) grads[0] = std::move(g.dgate);
    if (ctx.needs_grad(1)) grads[1] = std::move(g.dup);
  }
  grads[2] = std::move(dw);
  return grads;
}

}  // namespace

Var swiglu_linear(const Var& gate, const Var& up, const Var& weight, const Recipe& recipe, LinearState* state) {
  if (!fuses_swiglu(recipe, gate, up, {state})) return linear(ops::swiglu(gate, up), weight, recipe, state);
  const Tensor& wv = weight.value();
  DAEDALUS_CHECK(wv.dim() == 2 && gate.value().size(-1) == wv.size(1),
                 "fp8 linear: input {} and weight {}: expected weight [out, {}]", shape_str(gate.shape()),
                 shape_str(wv.shape()), gate.value().size(-1));
  const bool need_dh = gate.requires_grad() || up.requires_grad();
  const Tensor g = rows_of(gate.value()), u = rows_of(up.value());
  auto gemms = std::make_shared<Fp8Gemms>(Fp8Gemms{recipe, state, {}, {}, {}});
  const Fp8Gemms::Operands q = gemms->adopt_forward(swiglu_quantize(g, u, recipe.fprop().a.format, recipe.scale),
                                                    nullptr, wv, weight.requires_grad(), need_dh);
  Shape out_shape = gate.shape();
  out_shape.back() = wv.size(0);
  const Tensor y = scaled_gemm(q.x, q.w, recipe.accumulator).view(out_shape);
  return record1("swiglu_fp8_linear", {gate, up, weight}, y,
                 [gemms, keep_gate = save(gate.value()), keep_up = save(up.value()),
                  sh = gate.shape()](const BackwardContext& ctx) {
                   Tensor dh, dw;
                   const bool want_dh = ctx.needs_grad(0) || ctx.needs_grad(1);
                   gemms->backward(rows_of(ctx.grad()), want_dh ? &dh : nullptr, ctx.needs_grad(2) ? &dw : nullptr);
                   return swiglu_linear_grads(ctx, keep_gate, keep_up, dh.defined() ? dh.view(sh) : dh, dw);
                 });
}

Var swiglu_grouped_linear(const Var& gate, const Var& up, const Var& weight, const std::vector<int64_t>& offsets,
                          const Recipe& recipe, std::vector<LinearState>* states) {
  std::vector<LinearState*> state_ptrs;
  if (states != nullptr)
    for (LinearState& st : *states) state_ptrs.push_back(&st);
  if (!fuses_swiglu(recipe, gate, up, state_ptrs) || gate.value().dim() != 2)
    return grouped_linear(ops::swiglu(gate, up), weight, offsets, recipe, states);
  check_grouped(gate.value(), weight.value(), offsets, recipe, states);
  const QuantizedTensor qh = swiglu_quantize(gate.value(), up.value(), recipe.fprop().a.format, recipe.scale);
  auto gemms = std::make_shared<GroupedGemms>();
  const Tensor y = gemms->forward(Tensor(), &qh, weight.value(), offsets, recipe, states, weight.requires_grad(),
                                  gate.requires_grad() || up.requires_grad());
  return record1("swiglu_grouped_linear", {gate, up, weight}, y,
                 [gemms, keep_gate = save(gate.value()), keep_up = save(up.value())](const BackwardContext& ctx) {
                   Tensor dh, dw;
                   const bool want_dh = ctx.needs_grad(0) || ctx.needs_grad(1);
                   gemms->backward(ctx.grad(), want_dh ? &dh : nullptr, ctx.needs_grad(2) ? &dw : nullptr);
                   return swiglu_linear_grads(ctx, keep_gate, keep_up, dh, dw);
                 });
}

}  // namespace daedalus::fp8
