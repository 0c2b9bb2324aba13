// Matrix products on the tape, through kernels::gemm.
#include "autograd/ops/linear.h"

#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/gemm.h"
#include "autograd/kernels/reduce.h"

namespace daedalus::ops {

namespace {

// A gradient computed in fp32 for an operand stored as `dtype`.
Tensor as_dtype(const Tensor& g, DType dtype) { return g.dtype() == dtype ? g : kernels::cast(g, dtype); }

// [..., R, C] -> [prod(...) * R, C] (a view when the strides allow).
Tensor rows_of(const Tensor& t) { return t.reshape({-1, t.size(-1)}); }

}  // namespace

Var matmul(const Var& a, const Var& b) {
  const Tensor& av = a.value();
  const Tensor& bv = b.value();
  SavedTensor keep_a = b.requires_grad() ? save(av) : SavedTensor();
  SavedTensor keep_b = a.requires_grad() ? save(bv) : SavedTensor();
  return record1(
      "matmul", {a, b}, kernels::matmul(av, bv),
      [keep_a, keep_b, sa = av.shape(), sb = bv.shape(), dtype = av.dtype()](const BackwardContext& ctx) {
        // The fp32 output gradient in the operands' dtype, as the forward GEMM ran.
        const Tensor g = as_dtype(ctx.grad(), dtype);
        Tensor ga, gb;
        // A 2-d operand was shared across the batch: its gradient sums over the batch.
        if (ctx.needs_grad(0))
          ga = as_dtype(kernels::sum_to_shape(kernels::matmul(g, keep_b.get().transpose(-1, -2)), sa), dtype);
        if (ctx.needs_grad(1))
          gb = as_dtype(kernels::sum_to_shape(kernels::matmul(keep_a.get().transpose(-1, -2), g), sb), dtype);
        return std::vector<Tensor>{ga, gb};
      });
}

Var linear(const Var& x, const Var& weight, const Var& bias) {
  const Tensor& xv = x.value();
  const Tensor& wv = weight.value();
  DAEDALUS_CHECK(wv.dim() == 2 && xv.dim() >= 1 && xv.size(-1) == wv.size(1),
                 "linear: input {} and weight {}: expected weight [out, {}]", shape_str(xv.shape()),
                 shape_str(wv.shape()), xv.dim() >= 1 ? xv.size(-1) : 0);
  Shape out_shape = xv.shape();
  out_shape.back() = wv.size(0);
  Tensor y = kernels::matmul(rows_of(xv), wv.t()).view(out_shape);
  if (bias.defined()) {
    DAEDALUS_CHECK(bias.shape() == Shape{wv.size(0)}, "linear: bias {} for weight {}: expected [{}]",
                   shape_str(bias.shape()), shape_str(wv.shape()), wv.size(0));
    kernels::add_(y, bias.value().dtype() == y.dtype() ? bias.value() : kernels::cast(bias.value(), y.dtype()));
  }
  SavedTensor keep_x = weight.requires_grad() ? save(xv) : SavedTensor();
  SavedTensor keep_w = x.requires_grad() ? save(wv) : SavedTensor();
  std::vector<Var> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  return record1(
      "linear", inputs, y,
      [keep_x, keep_w, sx = xv.shape(), tx = xv.dtype(), tw = wv.dtype(),
       tb = bias.defined() ? bias.dtype() : DType::f32, has_bias = bias.defined()](const BackwardContext& ctx) {
        const Tensor g = rows_of(ctx.grad());  // [N, out] fp32
        std::vector<Tensor> grads(has_bias ? 3 : 2);
        if (ctx.needs_grad(0)) {  // dx [N, in] = dy [N, out] · W [out, in]
          const Tensor w = keep_w.get();
          grads[0] = as_dtype(kernels::matmul(as_dtype(g, w.dtype()), w).view(sx), tx);
        }
        if (ctx.needs_grad(1)) {  // dW [out, in] = dyᵀ [out, N] · x [N, in]
          const Tensor xs = rows_of(keep_x.get());
          grads[1] = as_dtype(kernels::matmul(as_dtype(g, xs.dtype()).t(), xs), tw);
        }
        if (has_bias && ctx.needs_grad(2)) grads[2] = as_dtype(kernels::sum(g, 0), tb);
        return grads;
      });
}

}  // namespace daedalus::ops
