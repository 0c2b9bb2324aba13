// Index selection on the tape: top-k, take-along-last-dim, row gather and (gated) scatter-add.
//
// Index tensors are captured by the closures as they are, not through save(): they are small, and
// a saved-tensor hook that compresses activations (to bf16 or FP8) must never round an index.
#include "autograd/ops/index.h"

#include <fmt/format.h>

#include <vector>

#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/index.h"
#include "autograd/kernels/reduce.h"
#include "autograd/kernels/topk.h"

namespace daedalus::ops {

namespace {

Tensor as_dtype(const Tensor& t, DType dtype) { return t.dtype() == dtype ? t : kernels::cast(t, dtype); }

// indices [R..., k] with values in [0, n) -> int64 [prod(R...) * k] on indices' device, row-major:
// r * n + indices[r, j]. Positions along the last dim of a [R..., n] tensor become row numbers of
// its [prod(R...) * n, 1] view, so the row kernels gather and scatter along the last dim.
// Built on the host (no integer arithmetic kernel exists): a device round trip on CUDA.
Tensor flat_last_dim_index(std::string_view op, const Tensor& indices, int64_t n) {
  const Tensor host = indices.to(Device::cpu());
  kernels::check_index_range(op, host, "indices", n, fmt::format("last dim of size {}", n));
  std::vector<int64_t> flat = host.to(DType::i64).to_vector<int64_t>();
  const int64_t k = indices.dim() == 0 ? 1 : indices.size(-1);
  for (size_t i = 0; i < flat.size(); ++i) flat[i] += static_cast<int64_t>(i) / k * n;
  return Tensor::from_vector(flat, {static_cast<int64_t>(flat.size())}, indices.device());
}

// dy [R..., k], indices [R..., k] in [0, shape.back()) -> zeros of `shape` [R..., N] and `dtype`
// with dx[r, indices[r, j]] += dy[r, j].
Tensor scatter_last_dim(std::string_view op, const Tensor& dy, const Tensor& indices, const Shape& shape, DType dtype) {
  const int64_t n = shape.back();
  Tensor dx = Tensor::zeros({shape_numel(shape), 1}, dtype, dy.device());
  kernels::scatter_add_rows(dx, flat_last_dim_index(op, indices, n), dy.reshape({-1, 1}));
  return dx.view(shape);
}

}  // namespace

TopKVars topk(const Var& x, int64_t k) {
  kernels::TopK out = kernels::topk(x.value(), k);
  const Var values = record1("topk", {x}, out.values,
                             [indices = out.indices, shape = x.shape(), dtype = x.dtype()](const BackwardContext& ctx) {
                               return std::vector<Tensor>{scatter_last_dim("topk", ctx.grad(), indices, shape, dtype)};
                             });
  return {values, out.indices};
}

Var take_along_last(const Var& x, const Tensor& indices) {
  const Tensor& xv = x.value();
  DAEDALUS_CHECK(xv.dim() >= 1 && indices.dim() == xv.dim(),
                 "take_along_last: indices {} must have the rank of x {} (leading dims equal, k along the last)",
                 shape_str(indices.shape()), shape_str(xv.shape()));
  for (int d = 0; d + 1 < xv.dim(); ++d)
    DAEDALUS_CHECK(indices.size(d) == xv.size(d), "take_along_last: indices {} and x {} differ in dimension {}",
                   shape_str(indices.shape()), shape_str(xv.shape()), d);
  DAEDALUS_CHECK(indices.dtype() == DType::i32 || indices.dtype() == DType::i64,
                 "take_along_last: indices must be int32 or int64, got {}", indices.describe());
  const Tensor flat = flat_last_dim_index("take_along_last", indices, xv.size(-1));
  const Tensor y = kernels::gather_rows(xv.reshape({-1, 1}), flat).view(indices.shape());
  return record1("take_along_last", {x}, y,
                 [indices, shape = x.shape(), dtype = x.dtype()](const BackwardContext& ctx) {
                   return std::vector<Tensor>{scatter_last_dim("take_along_last", ctx.grad(), indices, shape, dtype)};
                 });
}

Var gather_rows(const Var& x, const Tensor& index) {
  return record1("gather_rows", {x}, kernels::gather_rows(x.value(), index),
                 [index, shape = x.shape(), dtype = x.dtype()](const BackwardContext& ctx) {
                   Tensor dx = Tensor::zeros(shape, dtype, ctx.grad().device());
                   kernels::scatter_add_rows(dx, index, ctx.grad());
                   return std::vector<Tensor>{dx};
                 });
}

Var scatter_add_rows(const Var& base, const Tensor& index, const Var& src) {
  Tensor out = base.value().clone();
  kernels::scatter_add_rows(out, index, src.value());
  return record1("scatter_add_rows", {base, src}, out, [index, ts = src.dtype()](const BackwardContext& ctx) {
    Tensor dsrc;
    if (ctx.needs_grad(1)) dsrc = as_dtype(kernels::gather_rows(ctx.grad(), index), ts);
    return std::vector<Tensor>{ctx.grad(), dsrc};
  });
}

Var scatter_add_rows(const Var& base, const Tensor& index, const Var& src, const Var& weight) {
  Tensor out = base.value().clone();
  kernels::scatter_add_rows(out, index, src.value(), weight.value());  // checks weight: fp32 [M]
  SavedTensor keep_src = weight.requires_grad() ? save(src.value()) : SavedTensor();
  SavedTensor keep_w = src.requires_grad() ? save(weight.value()) : SavedTensor();
  return record1("scatter_add_rows_gated", {base, src, weight}, out,
                 [index, keep_src, keep_w, ts = src.dtype()](const BackwardContext& ctx) {
                   Tensor dsrc, dw;
                   if (ctx.needs_grad(1) || ctx.needs_grad(2)) {
                     // dy at each source's destination row, [M, D], in fp32 for the products.
                     const Tensor g = as_dtype(kernels::gather_rows(ctx.grad(), index), DType::f32);
                     if (ctx.needs_grad(1))
                       dsrc = as_dtype(kernels::mul(g, as_dtype(keep_w.get(), DType::f32).unsqueeze(1)), ts);
                     if (ctx.needs_grad(2))
                       dw = kernels::sum(kernels::mul(g, as_dtype(keep_src.get(), DType::f32)), -1);
                   }
                   return std::vector<Tensor>{ctx.grad(), dsrc, dw};
                 });
}

}  // namespace daedalus::ops
