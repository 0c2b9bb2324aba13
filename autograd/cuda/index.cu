// CUDA twins of autograd/kernels/index: the index range check, row gather and row scatter-add.
//
// scatter_add_rows is deterministic the CPU's way: a plan built on the host from a copy of the
// index (small: [M]) lists, for each destination row that has sources, its sources in increasing
// i; one thread owns one (destination row, column) element, starts from its old value, adds its
// sources in that order in double and rounds once. No atomics; rows without sources are never
// written. Each product weight·src is exact in double and each sum rounds the same way in the same
// order as the CPU kernel, so the result is bit-identical to the CPU's.
// Cost: the plan needs the index on the host, a device synchronization per call (the range check
// that precedes it in the dispatcher already synchronizes too).
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "autograd/cuda/accumulate.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"
#include "autograd/kernels/index.h"

namespace daedalus::cuda {

namespace {

// first[0] = min over out-of-range elements of their row-major position (stays INT64_MAX if none).
// min is order-independent: the answer is the first offending element whatever the schedule.
template <typename I>
__global__ void index_range_kernel(const I* index, Layout layout, int64_t n, int64_t limit, unsigned long long* first) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = int64_t(index[element_offset(layout, i)]);
    if (v < 0 || v >= limit) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

// out [m, d] contiguous = x[index] for x [n, d] with strides (rs, cs); E: an unsigned integer of the
// element's size (a gather is a copy of bits).
template <typename E, typename I>
__global__ void gather_rows_kernel(E* out, const E* x, int64_t rs, int64_t cs, const I* index, int64_t m, int64_t d) {
  const int64_t total = m * d;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / d, j = t % d;
    out[t] = x[int64_t(index[i]) * rs + j * cs];
  }
}

// plan = [rows (R) | seg (R + 1) | sources (M)]: destination row rows[q] takes sources
// sources[seg[q] .. seg[q + 1]), in increasing order. One thread per (q, column j).
template <typename T, typename S>
__global__ void scatter_add_rows_kernel(T* dst, int64_t drs, int64_t dcs, const S* src, int64_t srs, int64_t scs,
                                        const float* weight, const int64_t* plan, int64_t r, int64_t d) {
  const int64_t* rows = plan;
  const int64_t* seg = plan + r;
  const int64_t* sources = plan + 2 * r + 1;
  const int64_t total = r * d;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = t / d, j = t % d;
    T* y = dst + rows[q] * drs + j * dcs;
    double acc = double(to_float(*y));
    for (int64_t s = seg[q]; s < seg[q + 1]; ++s) {
      const int64_t i = sources[s];
      const double w = weight != nullptr ? double(weight[i]) : 1.0;
      acc += w * double(to_float(src[i * srs + j * scs]));
    }
    *y = round_from_double_device<T>(acc);
  }
}

// Calls fn.template operator()<E>() with E an unsigned integer as wide as one element.
template <typename Fn>
void dispatch_bits(size_t element_size, Fn&& fn) {
  switch (element_size) {
    case 1: fn.template operator()<uint8_t>(); break;
    case 2: fn.template operator()<uint16_t>(); break;
    case 4: fn.template operator()<uint32_t>(); break;
    default:
      DAEDALUS_ASSERT(element_size == 8);
      fn.template operator()<uint64_t>();
      break;
  }
}

}  // namespace

void check_index_range(std::string_view op, const Tensor& index, std::string_view name, int64_t limit,
                       std::string_view context) {
  const int64_t n = index.numel();
  if (n == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(index.device().index));
  const cudaStream_t stream = compute_stream(index.device().index);
  const Tensor first = Tensor::from_vector<int64_t>({INT64_MAX}, {1}, index.device());
  dispatch_index(op, index.dtype(), [&]<typename I>() {
    index_range_kernel<I><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const I*>(index.data_ptr()),
                                                                  layout_of(index), n, limit,
                                                                  static_cast<unsigned long long*>(first.data_ptr()));
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
  int64_t bad = 0;
  copy_bytes(&bad, Device::cpu(), first.data_ptr(), first.device(), sizeof(bad));
  if (bad == INT64_MAX) return;
  // Found one: the CPU check on a host copy produces the exact message (and throws).
  kernels::check_index_range(op, index.to(Device::cpu()), name, limit, context);
  DAEDALUS_ASSERT(false && "the device found an out-of-range index that the host copy does not have");
}

void gather_rows(const Tensor& out, const Tensor& x, const Tensor& index) {
  const int64_t m = out.size(0), d = out.size(1);
  if (m * d == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(out.device().index));
  const cudaStream_t stream = compute_stream(out.device().index);
  dispatch_index("gather_rows", index.dtype(), [&]<typename I>() {
    dispatch_bits(x.element_size(), [&]<typename E>() {
      gather_rows_kernel<E, I><<<blocks_for(m * d), kThreads, 0, stream>>>(
          static_cast<E*>(out.data_ptr()), static_cast<const E*>(x.data_ptr()), x.stride(0), x.stride(1),
          static_cast<const I*>(index.data_ptr()), m, d);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src, const Tensor& weight) {
  const int64_t n = dst.size(0), d = dst.size(1), m = index.numel();
  if (m == 0 || d == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(dst.device().index));
  const cudaStream_t stream = compute_stream(dst.device().index);

  // The plan, by a stable counting sort of the index on the host.
  std::vector<int64_t> count(static_cast<size_t>(n + 1), 0);
  std::vector<int64_t> idx(static_cast<size_t>(m));
  const Tensor host_index = index.to(Device::cpu());
  dispatch_index("scatter_add_rows", host_index.dtype(), [&]<typename I>() {
    const I* p = static_cast<const I*>(host_index.data_ptr());
    for (int64_t i = 0; i < m; ++i) idx[size_t(i)] = int64_t(p[i]);
  });
  for (int64_t v : idx) ++count[size_t(v) + 1];
  for (int64_t r = 0; r < n; ++r) count[size_t(r + 1)] += count[size_t(r)];  // count[r]: first slot of row r
  std::vector<int64_t> rows, seg;
  for (int64_t r = 0; r < n; ++r) {
    if (count[size_t(r + 1)] == count[size_t(r)]) continue;
    rows.push_back(r);
    seg.push_back(count[size_t(r)]);
  }
  seg.push_back(m);
  const int64_t r = int64_t(rows.size());
  std::vector<int64_t> plan(rows);
  plan.insert(plan.end(), seg.begin(), seg.end());
  plan.resize(size_t(2 * r + 1 + m));
  std::vector<int64_t> cursor(count.begin(), count.end() - 1);
  for (int64_t i = 0; i < m; ++i) plan[size_t(2 * r + 1 + cursor[size_t(idx[size_t(i)])]++)] = i;
  const Tensor device_plan = Tensor::from_vector(plan, {int64_t(plan.size())}, dst.device());

  const float* w = weight.defined() ? weight.data<float>() : nullptr;
  dispatch_float("scatter_add_rows", dst.dtype(), [&]<typename T>() {
    dispatch_float("scatter_add_rows", src.dtype(), [&]<typename S>() {
      scatter_add_rows_kernel<T, S><<<blocks_for(r * d), kThreads, 0, stream>>>(
          static_cast<T*>(dst.data_ptr()), dst.stride(0), dst.stride(1), static_cast<const S*>(src.data_ptr()),
          src.stride(0), src.stride(1), w, device_plan.data<int64_t>(), r, d);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace daedalus::cuda
