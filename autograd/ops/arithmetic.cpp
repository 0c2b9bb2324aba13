// Elementwise arithmetic and reductions on the tape.
#include "autograd/ops/arithmetic.h"

#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/reduce.h"

namespace daedalus::ops {

namespace {

// The gradient of a broadcast operand: g summed down to the operand's shape (a no-op when equal).
Tensor reduce_to(const Tensor& g, const Shape& shape) {
  return g.shape() == shape ? g : kernels::sum_to_shape(g, shape);
}

}  // namespace

Var add(const Var& a, const Var& b) {
  return record1("add", {a, b}, kernels::add(a.value(), b.value()),
                 [sa = a.shape(), sb = b.shape()](const BackwardContext& ctx) {
                   return std::vector<Tensor>{reduce_to(ctx.grad(), sa), reduce_to(ctx.grad(), sb)};
                 });
}

Var sub(const Var& a, const Var& b) {
  return record1("sub", {a, b}, kernels::sub(a.value(), b.value()),
                 [sa = a.shape(), sb = b.shape()](const BackwardContext& ctx) {
                   Tensor gb;
                   if (ctx.needs_grad(1)) gb = reduce_to(kernels::affine(ctx.grad(), -1.0), sb);
                   return std::vector<Tensor>{reduce_to(ctx.grad(), sa), gb};
                 });
}

Var mul(const Var& a, const Var& b) {
  // d(a*b) = g*b da + g*a db: each side saves the other operand only when it needs it.
  SavedTensor keep_a = b.requires_grad() ? save(a.value()) : SavedTensor();
  SavedTensor keep_b = a.requires_grad() ? save(b.value()) : SavedTensor();
  return record1("mul", {a, b}, kernels::mul(a.value(), b.value()),
                 [keep_a, keep_b, sa = a.shape(), sb = b.shape()](const BackwardContext& ctx) {
                   Tensor ga, gb;
                   if (ctx.needs_grad(0)) ga = reduce_to(kernels::mul(ctx.grad(), keep_b.get()), sa);
                   if (ctx.needs_grad(1)) gb = reduce_to(kernels::mul(ctx.grad(), keep_a.get()), sb);
                   return std::vector<Tensor>{ga, gb};
                 });
}

Var div(const Var& a, const Var& b) {
  // y = a / b: da = g / b, db = -g * y / b.
  const Tensor y = kernels::div(a.value(), b.value());
  SavedTensor keep_b = save(b.value());
  SavedTensor keep_y = b.requires_grad() ? save(y) : SavedTensor();
  return record1("div", {a, b}, y, [keep_b, keep_y, sa = a.shape(), sb = b.shape()](const BackwardContext& ctx) {
    Tensor ga, gb;
    const Tensor g_over_b = kernels::div(ctx.grad(), keep_b.get());
    if (ctx.needs_grad(0)) ga = reduce_to(g_over_b, sa);
    if (ctx.needs_grad(1)) gb = reduce_to(kernels::affine(kernels::mul(g_over_b, keep_y.get()), -1.0), sb);
    return std::vector<Tensor>{ga, gb};
  });
}

Var affine(const Var& x, double alpha, double beta) {
  return record1("affine", {x}, kernels::affine(x.value(), alpha, beta), [alpha](const BackwardContext& ctx) {
    return std::vector<Tensor>{kernels::affine(ctx.grad(), alpha)};
  });
}

Var cast(const Var& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  return record1("cast", {x}, kernels::cast(x.value(), dtype), [from = x.dtype()](const BackwardContext& ctx) {
    return std::vector<Tensor>{kernels::cast(ctx.grad(), from)};
  });
}

namespace {

// The gradient of a reduction over `dim`: g broadcast back along it, times `factor`.
Tensor expand_back(const Tensor& g, const Shape& shape, int dim, bool keepdim, double factor) {
  const int d = dim < 0 ? dim + int(shape.size()) : dim;
  const Tensor gk = keepdim ? g : g.unsqueeze(d);
  const Tensor full = gk.expand(shape).contiguous();
  return factor == 1.0 ? full : kernels::affine(full, factor);
}

}  // namespace

Var sum(const Var& x, int dim, bool keepdim) {
  return record1("sum", {x}, kernels::sum(x.value(), dim, keepdim),
                 [shape = x.shape(), dim, keepdim](const BackwardContext& ctx) {
                   return std::vector<Tensor>{expand_back(ctx.grad(), shape, dim, keepdim, 1.0)};
                 });
}

Var mean(const Var& x, int dim, bool keepdim) {
  const double n = double(x.value().size(dim));
  return record1("mean", {x}, kernels::mean(x.value(), dim, keepdim),
                 [shape = x.shape(), dim, keepdim, n](const BackwardContext& ctx) {
                   return std::vector<Tensor>{expand_back(ctx.grad(), shape, dim, keepdim, 1.0 / n)};
                 });
}

namespace {
Var reduce_all(const char* op, const Var& x, double factor) {
  Tensor total = kernels::sum_all(x.value());
  if (factor != 1.0) total = kernels::affine(total, factor);
  return record1(op, {x}, total, [shape = x.shape(), dtype = x.dtype(), factor](const BackwardContext& ctx) {
    const double g = ctx.grad().item() * factor;
    return std::vector<Tensor>{Tensor::full(shape, g, dtype, ctx.grad().device())};
  });
}
}  // namespace

Var sum_all(const Var& x) { return reduce_all("sum_all", x, 1.0); }

Var mean_all(const Var& x) {
  return reduce_all("mean_all", x, x.value().numel() == 0 ? 1.0 : 1.0 / double(x.value().numel()));
}

}  // namespace daedalus::ops
