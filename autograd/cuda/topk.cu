// CUDA twin of autograd/kernels/topk: the k largest entries of each row of a contiguous x [rows, n],
// sorted descending, in the CPU kernel's total order.
//
// Every element becomes the CPU's 64-bit key, (order-preserving bits of the value) << 32 |
// (2^32 - 1 - index): keys are distinct and "larger key" is exactly "larger value, or equal value
// and lower index" (NaN above +inf, -0.0 == +0.0). Sorting the keys of a row descending and
// decoding the first k gives the CPU's answer, bit for bit, whatever the algorithm.
//   - n <= kBitonicMax (MoE routing, n <= 256): one block per row sorts the row's keys in shared
//     memory with a bitonic network, O(n log^2 n) compare-exchanges per row, one launch.
//   - longer rows (top-k sampling over a ~129k vocabulary): CUB's segmented radix sort of all the
//     keys of each row (64-bit keys: 8-11 passes over 8 bytes per element, in and out), then the
//     first k are decoded. That costs a full sort for any k, O(n) memory traffic per pass, and
//     16 bytes of scratch per element (rows are processed in batches of at most kMaxSortItems
//     elements); a radix *select* for small k would be cheaper and is not written yet.
#include <cuda_runtime.h>

#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "autograd/cuda/kernels.h"
#include "autograd/kernels/order_key.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"

namespace daedalus::cuda {

namespace {

// Tunables: the longest row the shared-memory bitonic sort takes (16 KiB of keys), its block size,
// and the most elements one segmented sort handles (2 GiB of key buffers at 8 + 8 bytes each).
constexpr int kBitonicMax = 2048;
constexpr int kBitonicThreads = 256;
constexpr int64_t kMaxSortItems = int64_t(1) << 27;

// One block per row: keys of x[row] padded with 0 (below every real key) to npad (a power of two),
// bitonic sort descending in shared memory, then the first k decoded.
template <typename T>
__global__ void topk_bitonic_kernel(const T* x, int64_t n, int64_t k, int npad, T* values, int64_t* indices) {
  extern __shared__ uint64_t keys[];
  const int64_t r = blockIdx.x;
  const T* row = x + r * n;
  for (int j = threadIdx.x; j < npad; j += blockDim.x) keys[j] = j < n ? codec::index_order_key(to_float(row[j]), j) : 0;
  __syncthreads();
  for (int size = 2; size <= npad; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < npad / 2; t += blockDim.x) {
        const int i = 2 * t - (t & (stride - 1)), j = i + stride;  // i has bit `stride` clear
        const bool descending = (i & size) == 0;                   // the last merge (size == npad) is all descending
        const uint64_t a = keys[i], b = keys[j];
        if ((a < b) == descending) {
          keys[i] = b;
          keys[j] = a;
        }
      }
      __syncthreads();
    }
  }
  for (int64_t c = threadIdx.x; c < k; c += blockDim.x) {
    const int64_t j = codec::index_of_order_key(keys[c]);
    indices[r * k + c] = j;
    values[r * k + c] = row[j];  // the original bits
  }
}

template <typename T>
__global__ void topk_keys_kernel(const T* x, int64_t n, int64_t total, uint64_t* keys) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x)
    keys[t] = codec::index_order_key(to_float(x[t]), t % n);
}

// sorted [rows, n] (descending keys of x [rows, n]) -> values, indices [rows, k].
template <typename T>
__global__ void topk_decode_kernel(const uint64_t* sorted, const T* x, int64_t rows, int64_t n, int64_t k, T* values,
                                   int64_t* indices) {
  const int64_t total = rows * k;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / k, c = t % k;
    const int64_t j = codec::index_of_order_key(sorted[r * n + c]);
    indices[t] = j;
    values[t] = x[r * n + j];
  }
}

int next_pow2(int64_t n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

// Rows longer than kBitonicMax: batches of rows through CUB's segmented radix sort.
template <typename T>
void topk_sorted(const T* x, int64_t rows, int64_t n, int64_t k, T* values, int64_t* indices, Device device) {
  const int64_t batch = std::max<int64_t>(1, std::min(rows, kMaxSortItems / n));
  DAEDALUS_CHECK(batch * n <= int64_t(INT32_MAX), "topk: rows of {} elements exceed the CUDA sort's 2^31 - 1 items", n);
  const Tensor keys_in = Tensor::empty({batch * n}, DType::i64, device);
  const Tensor keys_out = Tensor::empty({batch * n}, DType::i64, device);
  auto* in = reinterpret_cast<uint64_t*>(keys_in.data_ptr());
  auto* out = reinterpret_cast<uint64_t*>(keys_out.data_ptr());
  std::vector<int32_t> host_offsets(static_cast<size_t>(batch + 1));
  for (int64_t b = 0; b <= batch; ++b) host_offsets[size_t(b)] = int32_t(b * n);
  const Tensor offsets = Tensor::from_vector(host_offsets, {batch + 1}, device);
  const int32_t* off = offsets.data<int32_t>();
  const cudaStream_t stream = compute_stream(device.index);
  size_t temp_bytes = 0;
  DAEDALUS_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(nullptr, temp_bytes, in, out, int(batch * n),
                                                                        int(batch), off, off + 1, 0, 64, stream));
  const Tensor temp = Tensor::empty({int64_t(temp_bytes / 8 + 1)}, DType::i64, device);
  for (int64_t r0 = 0; r0 < rows; r0 += batch) {
    const int64_t nr = std::min(batch, rows - r0);
    topk_keys_kernel<T><<<blocks_for(nr * n), kThreads, 0, stream>>>(x + r0 * n, n, nr * n, in);
    DAEDALUS_CUDA_CHECK_LAUNCH();
    size_t bytes = temp_bytes;
    DAEDALUS_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeysDescending(temp.data_ptr(), bytes, in, out, int(nr * n),
                                                                          int(nr), off, off + 1, 0, 64, stream));
    topk_decode_kernel<T>
        <<<blocks_for(nr * k), kThreads, 0, stream>>>(out, x + r0 * n, nr, n, k, values + r0 * k, indices + r0 * k);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

void topk(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t k) {
  const int64_t n = x.size(-1), rows = n > 0 ? x.numel() / n : 0;
  if (rows == 0) return;
  DAEDALUS_ASSERT(x.is_contiguous() && values.is_contiguous() && indices.is_contiguous());
  DAEDALUS_CUDA_CHECK(cudaSetDevice(x.device().index));
  const cudaStream_t stream = compute_stream(x.device().index);
  dispatch_float("topk", x.dtype(), [&]<typename T>() {
    const T* px = static_cast<const T*>(x.data_ptr());
    T* pv = static_cast<T*>(values.data_ptr());
    int64_t* pi = indices.data<int64_t>();
    if (n <= kBitonicMax) {
      const int npad = next_pow2(n);
      const int threads = std::min(kBitonicThreads, std::max(32, npad / 2));
      DAEDALUS_CHECK(rows <= int64_t(INT32_MAX), "topk: {} rows exceed one CUDA grid", rows);
      topk_bitonic_kernel<T>
          <<<unsigned(rows), threads, size_t(npad) * sizeof(uint64_t), stream>>>(px, n, k, npad, pv, pi);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    } else {
      topk_sorted<T>(px, rows, n, k, pv, pi, x.device());
    }
  });
}

}  // namespace daedalus::cuda
