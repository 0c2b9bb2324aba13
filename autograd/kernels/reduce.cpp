// Reductions: dispatcher and CPU kernels.
//
// Every reduction becomes one problem on a contiguous [outer, n, inner] array: sum over n. When the
// reduced dims form one run of x's dims, that is x itself (or, for a transposed x, x's memory seen in
// memory order, see in_memory_order); otherwise x is permuted to [kept..., reduced...] and copied,
// giving [K, R, 1]. Every way visits the reduced elements of one output in the same logical
// (row-major) order, so the bits of the result do not depend on x's strides either.
#include "autograd/kernels/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string_view>
#include <utility>
#include <vector>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

using kernels::ReduceKind;

namespace {

// Tunables: elements of the reduced extent per partial result (this fixes the summation order, so it
// must not depend on the thread count), and kept columns per task when the reduced run is not innermost.
constexpr int64_t kReduceBlock = 4096;
constexpr int64_t kReduceTile = 256;

std::string_view kind_name(ReduceKind kind) {
  constexpr std::string_view names[] = {"sum", "mean", "max", "amax"};
  return names[size_t(kind)];
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The accumulators. add folds one element in, combine folds a block's partial result in.
struct SumAcc {
  using Acc = double;
  static Acc init() { return 0.0; }
  static void add(Acc& a, float v) { a += double(v); }
  static void combine(Acc& a, Acc b) { a += b; }
};

struct MaxAcc {  // NaN wins: once a is NaN nothing replaces it
  using Acc = float;
  static Acc init() { return -std::numeric_limits<float>::infinity(); }
  static void add(Acc& a, float v) {
    if (v > a || std::isnan(v)) a = v;
  }
  static void combine(Acc& a, Acc b) { add(a, b); }
};

struct AbsMaxAcc {
  using Acc = float;
  static Acc init() { return 0.0f; }
  static void add(Acc& a, float v) { MaxAcc::add(a, std::fabs(v)); }
  static void combine(Acc& a, Acc b) { MaxAcc::add(a, b); }
};

// x: contiguous [outer, n, inner] -> [outer, inner] accumulators. The reduced extent is cut into
// blocks of kReduceBlock; each block is folded in index order, then the block results in block order.
// Tasks own disjoint (row, block, column tile) parts of the partial buffer: no sharing, no atomics.
template <typename T, typename Op>
std::vector<typename Op::Acc> reduce_3d(const T* x, int64_t outer, int64_t n, int64_t inner) {
  using Acc = typename Op::Acc;
  const int64_t blocks = std::max<int64_t>(1, ceil_div(n, kReduceBlock));
  const int64_t tiles = std::max<int64_t>(1, ceil_div(inner, kReduceTile));
  const int64_t tasks = outer * blocks * tiles;
  std::vector<Acc> partial(static_cast<size_t>(outer * blocks * inner));
#pragma omp parallel for schedule(static) if (tasks > 1 && outer * n * inner >= kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t tile = task % tiles, b = (task / tiles) % blocks, o = task / (tiles * blocks);
    const int64_t i0 = tile * kReduceTile, ni = std::min(kReduceTile, inner - i0);
    const int64_t k0 = b * kReduceBlock, k1 = std::min(n, k0 + kReduceBlock);
    Acc* acc = partial.data() + (o * blocks + b) * inner + i0;
    if (inner == 1) {
      Acc a = Op::init();
      const T* row = x + o * n;
      for (int64_t k = k0; k < k1; ++k) Op::add(a, to_float(row[k]));
      acc[0] = a;
    } else {
      for (int64_t i = 0; i < ni; ++i) acc[i] = Op::init();
      for (int64_t k = k0; k < k1; ++k) {
        const T* row = x + (o * n + k) * inner + i0;
        for (int64_t i = 0; i < ni; ++i) Op::add(acc[i], to_float(row[i]));
      }
    }
  }
  if (blocks == 1) return partial;
  std::vector<Acc> out(static_cast<size_t>(outer * inner));
#pragma omp parallel for schedule(static) if (outer * inner * blocks >= kParallelThreshold)
  for (int64_t oi = 0; oi < outer * inner; ++oi) {
    const int64_t o = oi / inner, i = oi % inner;
    Acc a = partial[static_cast<size_t>(o * blocks * inner + i)];
    for (int64_t b = 1; b < blocks; ++b) Op::combine(a, partial[static_cast<size_t>((o * blocks + b) * inner + i)]);
    out[static_cast<size_t>(oi)] = a;
  }
  return out;
}

template <typename Op>
std::vector<double> reduce_any(std::string_view op, const Tensor& x, int64_t outer, int64_t n, int64_t inner) {
  return dispatch_float(op, x.dtype(), [&]<typename T>() {
    const std::vector<typename Op::Acc> acc = reduce_3d<T, Op>(static_cast<const T*>(x.data_ptr()), outer, n, inner);
    return std::vector<double>(acc.begin(), acc.end());
  });
}

// A view of x with its dims permuted into memory order, and the matching mask, when x is a permutation
// of a contiguous tensor (a transpose, say) and the permutation keeps the relative order of the kept
// dims and of the reduced dims: reducing that view needs no copy, visits the reduced elements in the
// same order and yields the outputs in the same order as reducing x. Otherwise x and the mask as given.
std::pair<Tensor, std::vector<bool>> in_memory_order(const Tensor& x, const std::vector<bool>& reduced) {
  if (x.is_contiguous() || x.numel() == 0) return {x, reduced};
  std::vector<int> mem(size_t(x.dim()));
  std::iota(mem.begin(), mem.end(), 0);
  std::stable_sort(mem.begin(), mem.end(), [&](int a, int b) { return x.stride(a) > x.stride(b); });
  const Tensor view = x.permute(mem);
  if (!view.is_contiguous()) return {x, reduced};
  std::vector<bool> mask(mem.size());
  int last_kept = -1, last_reduced = -1;
  for (size_t i = 0; i < mem.size(); ++i) {
    const int d = mem[i];
    mask[i] = reduced[size_t(d)];
    if (x.size(d) == 1) continue;
    int& last = mask[i] ? last_reduced : last_kept;
    if (d < last) return {x, reduced};
    last = d;
  }
  return {view, mask};
}

// The reduction of x over the dims where reduced[d] is true, as one problem on a contiguous array
// src [outer, n, inner]: reduce over n. Device-agnostic (views and copies only); both the CPU and the
// CUDA kernels start from it.
struct ReducePlan {
  Tensor src;
  int64_t outer = 1, n = 1, inner = 1;
};

ReducePlan plan_reduction(const Tensor& x_in, const std::vector<bool>& reduced_in) {
  const auto [x, reduced] = in_memory_order(x_in, reduced_in);
  const Shape& shape = x.shape();
  const int nd = x.dim();
  // The reduced dims (ignoring size-1 dims, which are neither kept nor reduced) form one run [first, last]?
  int first = -1, last = -1;
  for (int d = 0; d < nd; ++d) {
    if (shape[size_t(d)] == 1 || !reduced[size_t(d)]) continue;
    if (first < 0) first = d;
    last = d;
  }
  bool one_run = true;
  for (int d = first + 1; d < last; ++d)
    if (shape[size_t(d)] != 1 && !reduced[size_t(d)]) one_run = false;
  std::vector<int> order;  // kept dims, then reduced dims
  for (int d = 0; d < nd; ++d)
    if (!reduced[size_t(d)]) order.push_back(d);
  for (int d = 0; d < nd; ++d)
    if (reduced[size_t(d)]) order.push_back(d);
  const Tensor permuted = x.permute(order);

  ReducePlan p;
  if (first < 0) {  // nothing of size > 1 is reduced: a copy through the accumulator
    p.src = x.contiguous();
    p.outer = x.numel();
  } else if (permuted.is_contiguous() || !one_run) {
    p.src = permuted.contiguous();
    for (int d = 0; d < nd; ++d) (reduced[size_t(d)] ? p.n : p.outer) *= shape[size_t(d)];
  } else {
    p.src = x.contiguous();
    for (int d = 0; d < nd; ++d) (d < first ? p.outer : d <= last ? p.n : p.inner) *= shape[size_t(d)];
  }
  return p;
}

}  // namespace

// out (contiguous; x's shape with reduced dims set to 1, any element count-compatible shape) = the
// reduction of the planned [outer, n, inner] problem. out may have a different dtype than x.
void reduce(ReduceKind kind, const ReducePlan& plan, const Tensor& out) {
  const std::string_view op = kind_name(kind);
  const Tensor& src = plan.src;
  const int64_t outer = plan.outer, n = plan.n, inner = plan.inner;
  std::vector<double> acc;
  switch (kind) {
    case ReduceKind::sum:
    case ReduceKind::mean: acc = reduce_any<SumAcc>(op, src, outer, n, inner); break;
    case ReduceKind::max: acc = reduce_any<MaxAcc>(op, src, outer, n, inner); break;
    case ReduceKind::amax: acc = reduce_any<AbsMaxAcc>(op, src, outer, n, inner); break;
  }
  DAEDALUS_ASSERT(int64_t(acc.size()) == out.numel() && out.is_contiguous());
  const double count = double(n);
  dispatch_float(op, out.dtype(), [&]<typename T>() {
    T* y = static_cast<T*>(out.data_ptr());
    const int64_t m = out.numel();
    if (kind == ReduceKind::mean) {
      for (int64_t i = 0; i < m; ++i) y[i] = round_from_double<T>(acc[size_t(i)] / count);
    } else {
      for (int64_t i = 0; i < m; ++i) y[i] = round_from_double<T>(acc[size_t(i)]);
    }
  });
}

}  // namespace cpu

namespace kernels {

namespace {

// Reduces x over the dims flagged in `reduced`; the result has x's shape with those dims set to 1.
Tensor reduce_keepdim(ReduceKind kind, const Tensor& x, const std::vector<bool>& reduced, DType out_dtype) {
  const Device device = common_device(cpu::kind_name(kind), {&x});
  Shape shape = x.shape();
  for (size_t d = 0; d < shape.size(); ++d)
    if (reduced[d]) shape[d] = 1;
  Tensor out = Tensor::empty(shape, out_dtype, device);
  const cpu::ReducePlan p = cpu::plan_reduction(x, reduced);  // views and copies on x's device
  switch (device.type) {
    case DeviceType::cpu: cpu::reduce(kind, p, out); break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL(cpu::kind_name(kind), reduce(kind, p.src, p.outer, p.n, p.inner, out));
      break;
  }
  return out;
}

Tensor reduce_dim(ReduceKind kind, const Tensor& x, int dim, bool keepdim) {
  const std::string_view op = cpu::kind_name(kind);
  DAEDALUS_CHECK(x.defined(), "{}: undefined tensor operand", op);
  DAEDALUS_CHECK(dim >= -x.dim() && dim < x.dim(), "{}: dimension {} out of range for x of shape {}", op, dim,
                 shape_str(x.shape()));
  const int d = dim < 0 ? dim + x.dim() : dim;
  DAEDALUS_CHECK(kind != ReduceKind::max || x.size(d) > 0, "max: dimension {} of x {} is empty", dim,
                 shape_str(x.shape()));
  std::vector<bool> reduced(size_t(x.dim()), false);
  reduced[size_t(d)] = true;
  Tensor out = reduce_keepdim(kind, x, reduced, x.dtype());
  return keepdim ? out : out.squeeze(d);
}

Tensor reduce_all(ReduceKind kind, const Tensor& x) {
  DAEDALUS_CHECK(x.defined(), "{}_all: undefined tensor operand", cpu::kind_name(kind));
  const std::vector<bool> reduced(size_t(x.dim()), true);
  return reduce_keepdim(kind, x, reduced, DType::f32).view({});
}

}  // namespace

Tensor sum(const Tensor& x, int dim, bool keepdim) { return reduce_dim(ReduceKind::sum, x, dim, keepdim); }
Tensor mean(const Tensor& x, int dim, bool keepdim) { return reduce_dim(ReduceKind::mean, x, dim, keepdim); }
Tensor max(const Tensor& x, int dim, bool keepdim) { return reduce_dim(ReduceKind::max, x, dim, keepdim); }
Tensor amax(const Tensor& x, int dim, bool keepdim) { return reduce_dim(ReduceKind::amax, x, dim, keepdim); }

Tensor sum_all(const Tensor& x) { return reduce_all(ReduceKind::sum, x); }
Tensor amax_all(const Tensor& x) { return reduce_all(ReduceKind::amax, x); }

Tensor sum_to_shape(const Tensor& x, const Shape& shape) {
  DAEDALUS_CHECK(x.defined(), "sum_to_shape: undefined tensor operand");
  const Shape& from = x.shape();
  if (shape == from) return x;
  DAEDALUS_CHECK(shape.size() <= from.size() && broadcast_shapes("sum_to_shape", shape, from) == from,
                 "sum_to_shape: shape {} does not broadcast to x's shape {}", shape_str(shape), shape_str(from));
  const size_t lead = from.size() - shape.size();
  std::vector<bool> reduced(from.size());
  for (size_t d = 0; d < from.size(); ++d) reduced[d] = d < lead || (shape[d - lead] == 1 && from[d] != 1);
  return reduce_keepdim(ReduceKind::sum, x, reduced, x.dtype()).view(shape);
}

}  // namespace kernels

}  // namespace daedalus
