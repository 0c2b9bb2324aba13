// Row gather / scatter-add by index (MoE permute and unpermute): dispatcher and CPU kernels.
//
// scatter_add_rows never lets two threads touch one destination row: a stable counting sort lists
// each destination row's sources in increasing i, and tasks own (destination row, column tile)
// pairs. That is what makes repeated indices deterministic without atomics.
#include "autograd/kernels/index.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "autograd/device_checks.h"
#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/reduce.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

namespace {

constexpr int64_t kScatterTile = 512;  // columns of one destination row per task (a double buffer on the stack)

}  // namespace

void check_index_range(std::string_view op, const Tensor& index, std::string_view name, int64_t limit,
                       std::string_view context) {
  const Tensor idx = index.contiguous();
  dispatch_index(op, idx.dtype(), [&]<typename I>() {
    const I* p = static_cast<const I*>(idx.data_ptr());
    const int64_t n = idx.numel();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = int64_t(p[i]);
      if (v < 0 || v >= limit) DAEDALUS_FAIL("{}", index_range_message(op, name, idx.shape(), i, v, limit, context));
    }
  });
}

// out [M, D] contiguous = x[index]; index contiguous [M], already range-checked.
void gather_rows(const Tensor& out, const Tensor& x, const Tensor& index) {
  const int64_t m = out.size(0), d = out.size(1);
  const int64_t rs = x.stride(0), cs = x.stride(1);
  dispatch_index("gather_rows", index.dtype(), [&]<typename I>() {
    const I* idx = static_cast<const I*>(index.data_ptr());
    dispatch_all("gather_rows", x.dtype(), [&]<typename T>() {
      const T* in = static_cast<const T*>(x.data_ptr());
      T* o = static_cast<T*>(out.data_ptr());
      parallel_rows(m, d, [&](int64_t i) {
        const T* row = in + int64_t(idx[i]) * rs;
        T* y = o + i * d;
        if (cs == 1) {
          std::memcpy(y, row, size_t(d) * sizeof(T));
        } else {
          for (int64_t j = 0; j < d; ++j) y[j] = row[j * cs];
        }
      });
    });
  });
}

// dst [N, D] (strided) += weight * src [M, D] (strided) by index [M] contiguous, already range-checked;
// weight: contiguous fp32 [M] or undefined (all ones).
void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src, const Tensor& weight) {
  const int64_t n = dst.size(0), d = dst.size(1), m = index.numel();
  const int64_t drs = dst.stride(0), dcs = dst.stride(1), srs = src.stride(0), scs = src.stride(1);
  const float* w = weight.defined() ? weight.data<float>() : nullptr;

  // Sources of each destination row in increasing i: rows `sources[start[r] .. start[r + 1])`.
  std::vector<int64_t> start(static_cast<size_t>(n + 1), 0), sources(static_cast<size_t>(m));
  dispatch_index("scatter_add_rows", index.dtype(), [&]<typename I>() {
    const I* idx = static_cast<const I*>(index.data_ptr());
    for (int64_t i = 0; i < m; ++i) ++start[size_t(idx[i]) + 1];
    for (int64_t r = 0; r < n; ++r) start[size_t(r + 1)] += start[size_t(r)];
    std::vector<int64_t> cursor(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < m; ++i) sources[size_t(cursor[size_t(idx[i])]++)] = i;
  });
  std::vector<int64_t> rows;  // destination rows with at least one source
  for (int64_t r = 0; r < n; ++r)
    if (start[size_t(r + 1)] > start[size_t(r)]) rows.push_back(r);

  const int64_t tiles = std::max<int64_t>(1, (d + kScatterTile - 1) / kScatterTile);
  const int64_t tasks = int64_t(rows.size()) * tiles;
  dispatch_float("scatter_add_rows", dst.dtype(), [&]<typename T>() {
    dispatch_float("scatter_add_rows", src.dtype(), [&]<typename S>() {
      T* out = static_cast<T*>(dst.data_ptr());
      const S* in = static_cast<const S*>(src.data_ptr());
#pragma omp parallel for schedule(dynamic, 4) if (tasks > 1 && m * d >= kParallelThreshold)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t r = rows[size_t(task / tiles)];
        const int64_t j0 = (task % tiles) * kScatterTile, nj = std::min(kScatterTile, d - j0);
        double acc[kScatterTile];
        T* y = out + r * drs + j0 * dcs;
        for (int64_t j = 0; j < nj; ++j) acc[j] = double(to_float(y[j * dcs]));
        for (int64_t s = start[size_t(r)]; s < start[size_t(r + 1)]; ++s) {
          const int64_t i = sources[size_t(s)];
          const S* x = in + i * srs + j0 * scs;
          const double wi = w ? double(w[i]) : 1.0;
          for (int64_t j = 0; j < nj; ++j) acc[j] += wi * double(to_float(x[j * scs]));
        }
        for (int64_t j = 0; j < nj; ++j) y[j * dcs] = round_from_double<T>(acc[j]);
      }
    });
  });
}

}  // namespace cpu

namespace kernels {

void check_index_range(std::string_view op, const Tensor& index, std::string_view name, int64_t limit,
                       std::string_view context) {
  const Device device = common_device(op, {&index});
  switch (device.type) {
    case DeviceType::cpu: cpu::check_index_range(op, index, name, limit, context); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL(op, check_index_range(op, index, name, limit, context)); break;
  }
}

Tensor gather_rows(const Tensor& x, const Tensor& index) {
  const Device device = common_device("gather_rows", {&x, &index});
  check_dim("gather_rows", x, "x", 2);
  check_dim("gather_rows", index, "index", 1);
  check_index_range("gather_rows", index, "index", x.size(0), fmt::format("x {}", shape_str(x.shape())));
  Tensor out = Tensor::empty({index.size(0), x.size(1)}, x.dtype(), device);
  const Tensor idx = index.contiguous();
  switch (device.type) {
    case DeviceType::cpu: cpu::gather_rows(out, x, idx); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("gather_rows", gather_rows(out, x, idx)); break;
  }
  return out;
}

namespace {

void scatter_add_rows_impl(const Tensor& dst, const Tensor& index, const Tensor& src, const Tensor& weight) {
  constexpr std::string_view op = "scatter_add_rows";
  const Device device =
      weight.defined() ? common_device(op, {&dst, &index, &src, &weight}) : common_device(op, {&dst, &index, &src});
  check_dim(op, dst, "dst", 2);
  check_dim(op, index, "index", 1);
  check_dim(op, src, "src", 2);
  DAEDALUS_CHECK(src.size(0) == index.size(0) && src.size(1) == dst.size(1),
                 "{}: src {} must be [index rows, dst row width] = [{}, {}] (index {}, dst {})", op,
                 shape_str(src.shape()), index.size(0), dst.size(1), shape_str(index.shape()), shape_str(dst.shape()));
  for (const Tensor* t : {&dst, &src})
    DAEDALUS_CHECK(t->dtype() == DType::f32 || t->dtype() == DType::bf16, "{}: {} must be fp32 or bf16, got {}", op,
                   t == &dst ? "dst" : "src", t->describe());
  for (int d = 0; d < 2; ++d)
    DAEDALUS_CHECK(dst.size(d) <= 1 || dst.stride(d) != 0, "{}: dst {} is an expanded view (stride 0 in dim {})", op,
                   shape_str(dst.shape()), d);
  if (weight.defined()) {
    check_dim(op, weight, "weight", 1);
    check_dtype(op, weight, "weight", DType::f32);
    DAEDALUS_CHECK(weight.size(0) == index.size(0), "{}: weight {} and index {} must have one entry per source row", op,
                   shape_str(weight.shape()), shape_str(index.shape()));
  }
  // Deferred on CUDA: out-of-range sources are skipped until the error surfaces.
  check_index_range(op, index, "index", dst.size(0), fmt::format("dst {}", shape_str(dst.shape())));
  const Tensor idx = index.contiguous();
  const Tensor w = weight.defined() ? weight.contiguous() : Tensor();
  switch (device.type) {
    case DeviceType::cpu: cpu::scatter_add_rows(dst, idx, src, w); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL(op, scatter_add_rows(dst, idx, src, w)); break;
  }
}

}  // namespace

void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src) {
  scatter_add_rows_impl(dst, index, src, Tensor());
}

void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src, const Tensor& weight) {
  DAEDALUS_CHECK(weight.defined(), "scatter_add_rows: undefined weight (use the overload without weight)");
  scatter_add_rows_impl(dst, index, src, weight);
}

}  // namespace kernels

}  // namespace daedalus
