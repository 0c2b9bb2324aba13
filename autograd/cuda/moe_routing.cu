// CUDA twins of autograd/kernels/moe_routing: the router's expert choice, the expert order of the
// (token, slot) pairs with capacity drops, and the auxiliary loss's per-sequence counts — on the
// device, with one host wait per order_by_expert (its 2·E counts, copied by the dispatcher).
//
//   group_limited_topk   one thread per token runs routing::route_token (moe_routing_core.h, the
//                        code the CPU twin runs), reading the token's E scores k + 2 times.
//   order_by_expert      load: an integer histogram (atomics on integers: order-free, exact);
//                        capacity: a stable radix sort (CUB) of the pairs by routing::capacity_key
//                        (expert, then gate descending), each pair's rank in its expert = its
//                        position minus the expert's start; the order: a stable radix sort of the
//                        pairs by expert with dropped pairs keyed E (last), and the kept histogram.
//                        A stable sort by a key has one answer, so this equals the CPU's counting
//                        sort bit for bit.
//   expert_counts_per_sequence   an integer histogram per sequence, then count · scale in fp32.
// Performance (no GPU has run this yet): the per-token kernel is O((k + 1)·E) reads per thread
// (E = 256, k = 8: ~2,300 L1-cached loads), the sorts are O(N·k) passes; a warp-per-token variant
// is the obvious next step if it shows in a profile.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <bit>
#include <cstdint>

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"
#include "autograd/kernels/moe_routing_core.h"

namespace daedalus::cuda {

namespace {

__global__ void route_kernel(const float* scores, const float* bias, routing::GroupLimit g, int64_t n, int64_t* ids) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x)
    routing::route_token(scores + t * g.experts, bias, g, ids + t * g.k);
}

// counts[e] += 1 for each in-range id (the load); sources[p] = p.
__global__ void load_kernel(const int64_t* ids, int64_t pairs, int64_t e, unsigned long long* counts,
                            int64_t* sources) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[p];
    if (id >= 0 && id < e) atomicAdd(counts + id, 1ull);
    sources[p] = p;
  }
}

__global__ void capacity_keys_kernel(const int64_t* ids, const float* gates, int64_t pairs, int64_t e,
                                     uint64_t* keys) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[p];
    keys[p] = routing::capacity_key(id >= 0 && id < e ? id : e, gates[p]);  // out of range: last, never kept
  }
}

// start[j] = Σ_{i<j} counts[i] for j in [0, e]: E is small (<= a few hundred), one thread.
__global__ void exclusive_scan_kernel(const unsigned long long* counts, int64_t e, int64_t* start) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int64_t sum = 0;
  for (int64_t j = 0; j < e; ++j) {
    start[j] = sum;
    sum += int64_t(counts[j]);
  }
  start[e] = sum;
}

// Position i of the capacity order: kept iff its rank within its expert is below the capacity.
__global__ void capacity_kept_kernel(const uint64_t* sorted_keys, const int64_t* sorted_pairs, const int64_t* start,
                                     int64_t pairs, int64_t e, int64_t capacity, float* kept) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t expert = routing::capacity_key_expert(sorted_keys[i]);
    kept[sorted_pairs[i]] = expert < e && i - start[expert] < capacity ? 1.0f : 0.0f;
  }
}

// The order's keys: the expert of a kept pair, e for a dropped (or out-of-range) one; counts the
// kept pairs per expert into kept_counts.
__global__ void order_keys_kernel(const int64_t* ids, const float* kept, int64_t pairs, int64_t e, uint32_t* keys,
                                  int64_t* sources, unsigned long long* kept_counts) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[p];
    const bool keep = id >= 0 && id < e && kept[p] != 0.0f;
    keys[p] = keep ? uint32_t(id) : uint32_t(e);
    if (keep) atomicAdd(kept_counts + id, 1ull);
    sources[p] = p;
  }
}

__global__ void token_of_pair_kernel(const int64_t* pair, int64_t pairs, int64_t k, int64_t* token) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pairs; i += int64_t(gridDim.x) * blockDim.x)
    token[i] = pair[i] / k;
}

__global__ void fill_kernel(float* x, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = v;
}

__global__ void sequence_counts_kernel(const int64_t* ids, int64_t n, int64_t k, int64_t seq_len, int64_t e,
                                       unsigned int* counts) {
  const int64_t pairs = n * k;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = ids[p];
    if (id >= 0 && id < e) atomicAdd(counts + (p / k / seq_len) * e + id, 1u);
  }
}

__global__ void scale_counts_kernel(const unsigned int* counts, int64_t n, float scale, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __fmul_rn(float(counts[i]), scale);
}

// A stable ascending radix sort of (keys, values) over the low end_bit bits, scratch from the allocator.
template <typename K>
void sort_pairs(const K* keys_in, K* keys_out, const int64_t* values_in, int64_t* values_out, int64_t n, int end_bit,
                Device device, cudaStream_t stream) {
  size_t temp_bytes = 0;
  DAEDALUS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, values_in, values_out,
                                                      int(n), 0, end_bit, stream));
  const Tensor temp = Tensor::empty({int64_t(temp_bytes / 8 + 1)}, DType::i64, device);
  DAEDALUS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, keys_in, keys_out, values_in,
                                                      values_out, int(n), 0, end_bit, stream));
}

}  // namespace

void group_limited_topk(const Tensor& ids, const Tensor& scores, const Tensor& bias, const routing::GroupLimit& g) {
  const int64_t n = scores.size(0);
  DAEDALUS_CUDA_CHECK(cudaSetDevice(scores.device().index));
  const cudaStream_t stream = compute_stream(scores.device().index);
  route_kernel<<<blocks_for(n), kThreads, 0, stream>>>(scores.data<float>(), bias.data<float>(), g, n,
                                                       ids.data<int64_t>());
  DAEDALUS_CUDA_CHECK_LAUNCH();
}

void order_by_expert(const Tensor& ids, int64_t e, const Tensor& gates, int64_t capacity, const Tensor& pair,
                     const Tensor& token, const Tensor& kept, const Tensor& counts) {
  const Device device = ids.device();
  const int64_t pairs = ids.numel(), k = ids.size(1);
  DAEDALUS_CHECK(pairs <= int64_t(INT32_MAX), "order_by_expert: {} pairs exceed the CUDA sort's 2^31 - 1 items",
                 pairs);
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = compute_stream(device.index);
  auto* load = reinterpret_cast<unsigned long long*>(counts.data_ptr());
  DAEDALUS_CUDA_CHECK(cudaMemsetAsync(load, 0, size_t(2 * e) * sizeof(int64_t), stream));
  if (pairs == 0) return;
  const int64_t* id = ids.data<int64_t>();
  float* keep = kept.data<float>();
  const Tensor sources = Tensor::empty({pairs}, DType::i64, device);
  load_kernel<<<blocks_for(pairs), kThreads, 0, stream>>>(id, pairs, e, load, sources.data<int64_t>());
  DAEDALUS_CUDA_CHECK_LAUNCH();
  if (capacity >= 0) {
    const Tensor keys = Tensor::empty({pairs}, DType::i64, device), sorted_keys = Tensor::empty({pairs}, DType::i64, device);
    const Tensor sorted = Tensor::empty({pairs}, DType::i64, device), start = Tensor::empty({e + 1}, DType::i64, device);
    auto* k_in = reinterpret_cast<uint64_t*>(keys.data_ptr());
    auto* k_out = reinterpret_cast<uint64_t*>(sorted_keys.data_ptr());
    capacity_keys_kernel<<<blocks_for(pairs), kThreads, 0, stream>>>(id, gates.data<float>(), pairs, e, k_in);
    DAEDALUS_CUDA_CHECK_LAUNCH();
    const int end_bit = 32 + int(std::bit_width(uint64_t(e)));  // experts in [0, e] above the 32 gate bits
    sort_pairs(k_in, k_out, sources.data<int64_t>(), sorted.data<int64_t>(), pairs, end_bit, device, stream);
    exclusive_scan_kernel<<<1, 1, 0, stream>>>(load, e, start.data<int64_t>());
    DAEDALUS_CUDA_CHECK_LAUNCH();
    capacity_kept_kernel<<<blocks_for(pairs), kThreads, 0, stream>>>(k_out, sorted.data<int64_t>(),
                                                                      start.data<int64_t>(), pairs, e, capacity, keep);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  } else {
    fill_kernel<<<blocks_for(pairs), kThreads, 0, stream>>>(keep, pairs, 1.0f);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  }
  const Tensor keys = Tensor::empty({pairs}, DType::i32, device), sorted_keys = Tensor::empty({pairs}, DType::i32, device);
  auto* k_in = reinterpret_cast<uint32_t*>(keys.data_ptr());
  order_keys_kernel<<<blocks_for(pairs), kThreads, 0, stream>>>(id, keep, pairs, e, k_in, sources.data<int64_t>(),
                                                                 load + e);
  DAEDALUS_CUDA_CHECK_LAUNCH();
  const int end_bit = std::max(1, int(std::bit_width(uint64_t(e))));  // keys in [0, e]
  sort_pairs(k_in, reinterpret_cast<uint32_t*>(sorted_keys.data_ptr()), sources.data<int64_t>(), pair.data<int64_t>(),
             pairs, end_bit, device, stream);
  token_of_pair_kernel<<<blocks_for(pairs), kThreads, 0, stream>>>(pair.data<int64_t>(), pairs, k,
                                                                   token.data<int64_t>());
  DAEDALUS_CUDA_CHECK_LAUNCH();
}

void expert_counts_per_sequence(const Tensor& out, const Tensor& ids, int64_t seq_len, int64_t e, float scale) {
  const Device device = ids.device();
  const int64_t n = ids.size(0), k = ids.size(1), cells = out.numel();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = compute_stream(device.index);
  const Tensor counts = Tensor::empty({cells}, DType::i32, device);
  auto* c = reinterpret_cast<unsigned int*>(counts.data_ptr());
  DAEDALUS_CUDA_CHECK(cudaMemsetAsync(c, 0, size_t(cells) * sizeof(unsigned int), stream));
  if (n * k > 0) {
    sequence_counts_kernel<<<blocks_for(n * k), kThreads, 0, stream>>>(ids.data<int64_t>(), n, k, seq_len, e, c);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  }
  scale_counts_kernel<<<blocks_for(cells), kThreads, 0, stream>>>(c, cells, scale, out.data<float>());
  DAEDALUS_CUDA_CHECK_LAUNCH();
}

}  // namespace daedalus::cuda
