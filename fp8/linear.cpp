// The FP8 Linear op on the tape (autograd's record() extension point).
#include "fp8/linear.h"

#include "autograd/kernels/copy.h"
#include "autograd/kernels/gemm.h"
#include "autograd/kernels/reduce.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/linear.h"
#include "fp8/scaled_gemm.h"

namespace daedalus::fp8 {

namespace {

// Quantizes `t` [rows, cols] along cols as `spec` says; under delayed scaling the tensor scale
// comes from `history` (its max before this step) and this step's amax is pushed afterwards.
// `delayed_scale` receives the tensor scale used under delayed scaling.
QuantizedTensor quantize_operand(const Tensor& t, const OperandSpec& spec, const Recipe& recipe, AmaxHistory* history,
                                 LinearState* state, const char* name, float* delayed_scale = nullptr) {
  QuantizedTensor q;
  if (recipe.delayed() && history != nullptr) {
    const float amax_now = float(kernels::amax_all(t).item());
    const float amax = history->values().empty() ? amax_now : history->amax();
    const float scale = scale_from_amax(amax, spec.format, recipe.scale);
    q = quantize_with_scale(t, scale, spec.format);
    if (delayed_scale != nullptr) *delayed_scale = scale;
    history->push(amax_now);
  } else {
    q = quantize(t, spec.granularity, spec.format, recipe.scale);
  }
  if (state != nullptr && state->collect_stats) state->stats[name] = quant_stats(t, q);
  return q;
}

Tensor rows_of(const Tensor& t) { return t.reshape({-1, t.size(-1)}); }

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
  const Tensor x2 = rows_of(x.value());  // [M, K]
  const GemmSpec fprop = recipe.fprop();
  float fprop_x_scale = 0.0f;  // delayed scaling: the scale X was quantized with, for backward
  QuantizedTensor qx = quantize_operand(x2, fprop.a, recipe, state ? &state->x : nullptr, state, "x", &fprop_x_scale);
  const QuantizedTensor qw = quantize_operand(wv, fprop.b, recipe, state ? &state->w : nullptr, state, "w");
  Shape out_shape = x.shape();
  out_shape.back() = wv.size(0);
  const Tensor y = scaled_gemm(qx, qw, recipe.accumulator).view(out_shape);

  // What backward needs: the quantized X (as FP8 + scales, or as X to re-quantize with the same
  // scale) and W.
  std::shared_ptr<QuantizedTensor> cached_qx;
  SavedTensor keep_x;
  if (weight.requires_grad()) {
    if (recipe.cache_fp8) {
      cached_qx = std::make_shared<QuantizedTensor>(std::move(qx));
    } else {
      keep_x = save(x2);
    }
  }
  SavedTensor keep_w = x.requires_grad() ? save(wv) : SavedTensor();
  return record1("fp8_linear", {x, weight}, y,
                 [=, sx = x.shape()](const BackwardContext& ctx) {
                   const Tensor dy = rows_of(ctx.grad());  // [M, N] fp32
                   std::vector<Tensor> grads(2);
                   const GemmSpec dgrad = recipe.dgrad(), wgrad = recipe.wgrad();
                   QuantizedTensor qdy;
                   if (ctx.needs_grad(0) || (ctx.needs_grad(1) && recipe.wgrad_fp8))
                     qdy = quantize_operand(dy, dgrad.a, recipe, state ? &state->dy : nullptr, state, "dy");
                   if (ctx.needs_grad(0)) {  // dX [M, K] = q(dY) [M, N] · q(Wᵀ) [K, N]ᵀ
                     const QuantizedTensor qwt = quantize(keep_w.get().t(), dgrad.b.granularity, dgrad.b.format,
                                                          recipe.scale);
                     grads[0] = scaled_gemm(qdy, qwt, recipe.accumulator).view(sx);
                   }
                   if (ctx.needs_grad(1)) {
                     // The X that Fprop used, dequantized: [M, K].
                     Tensor xq;
                     if (cached_qx) {
                       xq = cached_qx->dequantize();
                     } else if (recipe.delayed()) {
                       xq = quantize_with_scale(keep_x.get(), fprop_x_scale, fprop.a.format).dequantize();
                     } else {
                       xq = quantize(keep_x.get(), fprop.a.granularity, fprop.a.format, recipe.scale).dequantize();
                     }
                     if (recipe.wgrad_fp8) {  // dW [N, K] = q(dYᵀ) [N, M] · q(Xqᵀ) [K, M]ᵀ
                       const QuantizedTensor a = quantize(dy.t(), wgrad.a.granularity, wgrad.a.format, recipe.scale);
                       const QuantizedTensor b = quantize(xq.t(), wgrad.b.granularity, wgrad.b.format, recipe.scale);
                       grads[1] = scaled_gemm(a, b, recipe.accumulator);
                     } else {
                       grads[1] = kernels::matmul(dy.t(), xq);
                     }
                   }
                   return grads;
                 });
}

}  // namespace daedalus::fp8
