// Views and joins on the tape.
#include "autograd/ops/shape.h"

#include "autograd/kernels/reduce.h"

namespace daedalus::ops {

Var reshape(const Var& x, const Shape& shape) {
  return record1("reshape", {x}, x.value().reshape(shape),
                 [in = x.shape()](const BackwardContext& ctx) { return std::vector<Tensor>{ctx.grad().reshape(in)}; });
}

Var transpose(const Var& x, int d0, int d1) {
  return record1("transpose", {x}, x.value().transpose(d0, d1),
                 [d0, d1](const BackwardContext& ctx) { return std::vector<Tensor>{ctx.grad().transpose(d0, d1)}; });
}

Var expand(const Var& x, const Shape& shape) {
  return record1("expand", {x}, x.value().expand(shape), [in = x.shape()](const BackwardContext& ctx) {
    return std::vector<Tensor>{kernels::sum_to_shape(ctx.grad(), in)};
  });
}

Var permute(const Var& x, const std::vector<int>& order) {
  std::vector<int> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const int d = order[i] < 0 ? order[i] + int(order.size()) : order[i];
    DAEDALUS_CHECK(d >= 0 && d < int(order.size()), "permute: dimension {} out of range for shape {}", order[i],
                   shape_str(x.shape()));
    inverse[size_t(d)] = int(i);
  }
  return record1("permute", {x}, x.value().permute(order),
                 [inverse](const BackwardContext& ctx) { return std::vector<Tensor>{ctx.grad().permute(inverse)}; });
}

Var slice(const Var& x, int d, int64_t start, int64_t end, int64_t step) {
  return record1("slice", {x}, x.value().slice(d, start, end, step),
                 [in = x.shape(), dtype = x.dtype(), d, start, end, step](const BackwardContext& ctx) {
                   Tensor g = Tensor::zeros(in, dtype, ctx.grad().device());
                   g.slice(d, start, end, step).copy_(ctx.grad());
                   return std::vector<Tensor>{g};
                 });
}

Var concat(const std::vector<Var>& parts, int d) {
  DAEDALUS_CHECK(!parts.empty(), "concat: no tensors to join");
  const Tensor& first = parts[0].value();
  const int dim = d < 0 ? d + first.dim() : d;
  DAEDALUS_CHECK(dim >= 0 && dim < first.dim(), "concat: dimension {} out of range for shape {}", d,
                 shape_str(first.shape()));
  Shape shape = first.shape();
  shape[size_t(dim)] = 0;
  std::vector<int64_t> sizes;
  for (const Var& p : parts) {
    Shape expect = first.shape(), got = p.shape();
    DAEDALUS_CHECK(got.size() == expect.size() && p.dtype() == first.dtype(),
                   "concat: parts {} and {} differ in rank or dtype", first.describe(), p.value().describe());
    expect[size_t(dim)] = got[size_t(dim)];
    DAEDALUS_CHECK(got == expect, "concat: shapes {} and {} differ outside dimension {}", shape_str(first.shape()),
                   shape_str(got), dim);
    sizes.push_back(got[size_t(dim)]);
    shape[size_t(dim)] += got[size_t(dim)];
  }
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  int64_t at = 0;
  for (const Var& p : parts) {
    out.slice(dim, at, at + p.shape()[size_t(dim)]).copy_(p.value());
    at += p.shape()[size_t(dim)];
  }
  return record1("concat", parts, out, [sizes, dim](const BackwardContext& ctx) {
    std::vector<Tensor> grads;
    int64_t offset = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (ctx.needs_grad(i))
        grads.push_back(ctx.grad().slice(dim, offset, offset + sizes[i]));
      else
        grads.emplace_back();
      offset += sizes[i];
    }
    return grads;
  });
}

std::vector<Var> split(const Var& x, const std::vector<int64_t>& sizes, int d) {
  const int dim = d < 0 ? d + x.value().dim() : d;
  DAEDALUS_CHECK(dim >= 0 && dim < x.value().dim(), "split: dimension {} out of range for shape {}", d,
                 shape_str(x.shape()));
  int64_t total = 0;
  for (int64_t s : sizes) {
    DAEDALUS_CHECK(s >= 0, "split: negative size {} for shape {}", s, shape_str(x.shape()));
    total += s;
  }
  DAEDALUS_CHECK(total == x.shape()[size_t(dim)], "split: sizes sum to {} but dimension {} of {} has {}", total, dim,
                 shape_str(x.shape()), x.shape()[size_t(dim)]);
  std::vector<Tensor> pieces;
  int64_t at = 0;
  for (int64_t s : sizes) {
    pieces.push_back(x.value().slice(dim, at, at + s));
    at += s;
  }
  return record("split", {x}, pieces, [in = x.shape(), dtype = x.dtype(), sizes, dim](const BackwardContext& ctx) {
    Tensor g = Tensor::empty(in, dtype, ctx.grad(0).device());
    int64_t offset = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      g.slice(dim, offset, offset + sizes[i]).copy_(ctx.grad(i));
      offset += sizes[i];
    }
    return std::vector<Tensor>{g};
  });
}

}  // namespace daedalus::ops
