// CUDA twins of autograd/kernels/embedding: row gather (forward) and the deterministic scatter-add
// of gradient rows (backward).
//
// Backward without atomics or a device sort: the ids are on the host already (the dispatcher copies
// them for the range check), so the host lists each touched vocabulary row's source positions in
// increasing order (a stable counting sort, O(M + V)) and uploads that list. Then one thread owns
// one (row, column): it sums its sources in that order in double from 0 and rounds once to fp32 —
// the CPU's exact order and arithmetic, so the result is bit-identical to the CPU's. Rows that no
// id names are left at zero.
#include <cuda_runtime.h>

#include <vector>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/strided.cuh"

namespace daedalus::cuda {

namespace {

// out [m, d] contiguous = weight[ids[i], :] (weight strides rs, cs): an exact copy.
template <typename T, typename I>
__global__ void embedding_kernel(T* out, const T* weight, int64_t rs, int64_t cs, const I* ids, int64_t m, int64_t d) {
  const int64_t n = m * d;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k / d, j = k % d;
    out[k] = weight[int64_t(ids[i]) * rs + j * cs];
  }
}

// Block (x = k, y = column tile) sums the sources of touched row rows[k] for its columns:
// dw[rows[k], j] = sum over s in [start[k], start[k + 1]) of dy[sources[s], j], in s order.
template <typename S>
__global__ void embedding_backward_kernel(float* dw, int64_t d, const S* dy, int64_t rs, int64_t cs,
                                          const int64_t* rows, const int64_t* start, const int64_t* sources,
                                          int64_t touched) {
  const int64_t j = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  for (int64_t k = blockIdx.x; k < touched; k += gridDim.x) {
    double acc = 0.0;
    for (int64_t s = start[k]; s < start[k + 1]; ++s) acc += double(to_float(dy[sources[s] * rs + j * cs]));
    dw[rows[k] * d + j] = float(acc);
  }
}

}  // namespace

void embedding(const Tensor& out, const Tensor& weight, const Tensor& flat_ids) {
  const int64_t m = out.size(0), d = out.size(1);
  if (m * d == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(out.device().index));
  const Tensor ids = flat_ids.contiguous();
  dispatch_float("embedding", weight.dtype(), [&]<typename T>() {
    dispatch_index("embedding", ids.dtype(), [&]<typename I>() {
      embedding_kernel<T, I><<<blocks_for(m * d), kThreads>>>(
          static_cast<T*>(out.data_ptr()), static_cast<const T*>(weight.data_ptr()), weight.stride(0), weight.stride(1),
          static_cast<const I*>(ids.data_ptr()), m, d);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

void embedding_backward(const Tensor& dw, const Tensor& dy_rows, const Tensor& host_ids) {
  const int64_t vocab = dw.size(0), d = dw.size(1), m = host_ids.numel();
  if (m == 0 || d == 0) return;
  // Stable counting sort on the host: the sources of each touched row, in increasing position.
  std::vector<int64_t> count(static_cast<size_t>(vocab + 1), 0), sources(static_cast<size_t>(m));
  std::vector<int64_t> rows, start;
  dispatch_index("embedding_backward", host_ids.dtype(), [&]<typename I>() {
    const I* ids = static_cast<const I*>(host_ids.data_ptr());
    for (int64_t i = 0; i < m; ++i) ++count[size_t(ids[i]) + 1];
    for (int64_t v = 0; v < vocab; ++v) count[size_t(v + 1)] += count[size_t(v)];
    std::vector<int64_t> cursor(count.begin(), count.end() - 1);
    for (int64_t i = 0; i < m; ++i) sources[size_t(cursor[size_t(ids[i])]++)] = i;
  });
  for (int64_t v = 0; v < vocab; ++v) {
    if (count[size_t(v + 1)] == count[size_t(v)]) continue;
    rows.push_back(v);
    start.push_back(count[size_t(v)]);
  }
  start.push_back(m);
  const int64_t touched = int64_t(rows.size());
  const Device device = dw.device();
  const Tensor rows_d = Tensor::from_vector(rows, {touched}, device);
  const Tensor start_d = Tensor::from_vector(start, {touched + 1}, device);
  const Tensor sources_d = Tensor::from_vector(sources, {m}, device);

  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const int64_t tiles = (d + kThreads - 1) / kThreads;
  DAEDALUS_CHECK(tiles <= 65535, "embedding_backward: embedding dim {} is too large for the CUDA kernel", d);
  const dim3 grid(unsigned(touched < 65535 * 16 ? touched : 65535 * 16), unsigned(tiles));
  dispatch_float("embedding_backward", dy_rows.dtype(), [&]<typename S>() {
    embedding_backward_kernel<S><<<grid, kThreads>>>(dw.data<float>(), d, static_cast<const S*>(dy_rows.data_ptr()),
                                                     dy_rows.stride(0), dy_rows.stride(1), rows_d.data<int64_t>(),
                                                     start_d.data<int64_t>(), sources_d.data<int64_t>(), touched);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace daedalus::cuda
