// CUDA twins of autograd/kernels/index: the index range check, row gather and row scatter-add.
//
// The range checks are deferred (autograd/cuda/device_checks.h): they queue a check kernel and
// return; a bad index surfaces as the CPU check's InputError at the next synchronize() or
// device-to-host copy. Until then gather_rows writes zeros for out-of-range rows instead of
// reading outside x, and scatter_add_rows skips out-of-range sources.
//
// scatter_add_rows is deterministic the CPU's way, and the host never waits for it: its plan is
// built on the device. A stable radix sort (CUB) of (destination row, source i) pairs by row lists
// each destination row's sources in increasing i — the CPU's counting-sort order — and a binary
// search gives each row its segment. One thread owns one (destination row, column) element,
// starts from its old value, adds its sources in that order in double and rounds once. No
// atomics; rows without sources are never written. Each product weight·src is exact in double
// and each sum rounds the same way in the same order as the CPU kernel, so the result is
// bit-identical to the CPU's.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <bit>
#include <cstdint>

#include "autograd/cuda/accumulate.cuh"
#include "autograd/cuda/device_checks.h"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"
#include "autograd/kernels/index.h"

namespace daedalus::cuda {

namespace {

// out [m, d] contiguous = x[index] for x [n, d] with strides (rs, cs); E: an unsigned integer of the
// element's size (a gather is a copy of bits). A row whose index is outside [0, n) (reported by the
// deferred range check) is written as zeros: x is never read out of bounds.
template <typename E, typename I>
__global__ void gather_rows_kernel(E* out, const E* x, int64_t n, int64_t rs, int64_t cs, const I* index, int64_t m,
                                   int64_t d) {
  const int64_t total = m * d;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / d, j = t % d;
    const int64_t row = int64_t(index[i]);
    out[t] = row >= 0 && row < n ? x[row * rs + j * cs] : E(0);
  }
}

// The sort's input: key = destination row, with out-of-range rows mapped to n (sorted last and
// never searched for), value = i.
template <typename I>
__global__ void scatter_keys_kernel(const I* index, int64_t m, uint32_t n, uint32_t* keys, int32_t* sources) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = int64_t(index[i]);
    keys[i] = row >= 0 && row < int64_t(n) ? uint32_t(row) : n;
    sources[i] = int32_t(i);
  }
}

// start[r] (r in [0, n]) = the first position of the sorted keys that is >= r, so that row r's
// sources are sorted_sources[start[r] .. start[r + 1]).
__global__ void scatter_segments_kernel(const uint32_t* sorted_keys, int64_t m, uint32_t n, int32_t* start) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r <= int64_t(n);
       r += int64_t(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = m;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (sorted_keys[mid] < uint32_t(r)) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    start[r] = int32_t(lo);
  }
}

// One thread per (destination row q, column j); rows without sources are left untouched.
template <typename T, typename S>
__global__ void scatter_add_rows_kernel(T* dst, int64_t drs, int64_t dcs, const S* src, int64_t srs, int64_t scs,
                                        const float* weight, const int32_t* start, const int32_t* sources, int64_t n,
                                        int64_t d) {
  const int64_t total = n * d;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = t / d, j = t % d;
    const int32_t begin = start[q], end = start[q + 1];
    if (begin == end) continue;
    T* y = dst + q * drs + j * dcs;
    double acc = double(to_float(*y));
    for (int32_t s = begin; s < end; ++s) {
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
  enqueue_range_check(index, limit, /*ignore=*/std::nullopt,
                      DeviceCheckDescription{.kind = DeviceCheckKind::index_range,
                                             .op = std::string(op),
                                             .name = std::string(name),
                                             .shape = {},
                                             .limit = limit,
                                             .ignore = 0,
                                             .context = std::string(context)});
}

void gather_rows(const Tensor& out, const Tensor& x, const Tensor& index) {
  const int64_t m = out.size(0), d = out.size(1);
  if (m * d == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(out.device().index));
  const cudaStream_t stream = compute_stream(out.device().index);
  dispatch_index("gather_rows", index.dtype(), [&]<typename I>() {
    dispatch_bits(x.element_size(), [&]<typename E>() {
      gather_rows_kernel<E, I><<<blocks_for(m * d), kThreads, 0, stream>>>(
          static_cast<E*>(out.data_ptr()), static_cast<const E*>(x.data_ptr()), x.size(0), x.stride(0), x.stride(1),
          static_cast<const I*>(index.data_ptr()), m, d);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src, const Tensor& weight) {
  const int64_t n = dst.size(0), d = dst.size(1), m = index.numel();
  if (m == 0 || d == 0 || n == 0) return;  // (n == 0: every source is out of range, reported by the check)
  DAEDALUS_CHECK(n < int64_t(UINT32_MAX) && m <= int64_t(INT32_MAX),
                 "scatter_add_rows: dst {} with {} sources exceeds the CUDA plan's 32-bit rows and positions",
                 shape_str(dst.shape()), m);
  const Device device = dst.device();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = compute_stream(device.index);

  // The plan: (row, i) pairs sorted by row, stably, then each row's segment.
  const Tensor keys = Tensor::empty({m}, DType::i32, device), sorted_keys = Tensor::empty({m}, DType::i32, device);
  const Tensor sources = Tensor::empty({m}, DType::i32, device), sorted = Tensor::empty({m}, DType::i32, device);
  const Tensor start = Tensor::empty({n + 1}, DType::i32, device);
  auto* k_in = reinterpret_cast<uint32_t*>(keys.data_ptr());
  auto* k_out = reinterpret_cast<uint32_t*>(sorted_keys.data_ptr());
  dispatch_index("scatter_add_rows", index.dtype(), [&]<typename I>() {
    scatter_keys_kernel<I><<<blocks_for(m), kThreads, 0, stream>>>(static_cast<const I*>(index.data_ptr()), m,
                                                                   uint32_t(n), k_in, sources.data<int32_t>());
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
  const int end_bit = std::max(1, int(std::bit_width(uint64_t(n))));  // keys lie in [0, n]
  size_t temp_bytes = 0;
  DAEDALUS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, k_in, k_out, sources.data<int32_t>(),
                                                      sorted.data<int32_t>(), int(m), 0, end_bit, stream));
  const Tensor temp = Tensor::empty({int64_t(temp_bytes / 8 + 1)}, DType::i64, device);
  DAEDALUS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, k_in, k_out, sources.data<int32_t>(),
                                                      sorted.data<int32_t>(), int(m), 0, end_bit, stream));
  scatter_segments_kernel<<<blocks_for(n + 1), kThreads, 0, stream>>>(k_out, m, uint32_t(n), start.data<int32_t>());
  DAEDALUS_CUDA_CHECK_LAUNCH();

  const float* w = weight.defined() ? weight.data<float>() : nullptr;
  dispatch_float("scatter_add_rows", dst.dtype(), [&]<typename T>() {
    dispatch_float("scatter_add_rows", src.dtype(), [&]<typename S>() {
      scatter_add_rows_kernel<T, S><<<blocks_for(n * d), kThreads, 0, stream>>>(
          static_cast<T*>(dst.data_ptr()), dst.stride(0), dst.stride(1), static_cast<const S*>(src.data_ptr()),
          src.stride(0), src.stride(1), w, start.data<int32_t>(), sorted.data<int32_t>(), n, d);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace daedalus::cuda
