// CUDA twin of autograd/kernels/reduce: sum, mean, max, amax of a contiguous [outer, n, inner] array
// over n (the dispatcher plans every reduction into that form, on the device, see reduce.cpp).
//
// Determinism: the reduced extent is cut into chunks whose length depends on n alone; each chunk is
// folded by a fixed set of threads in a fixed order (one warp per chunk, lanes striding, then a warp
// tree, when inner == 1; one thread per column walking the chunk in index order otherwise), and the
// chunk partials of one output are folded by a second fixed warp tree. No atomics, nothing depends
// on the launch configuration or timing: the same bits on every run.
//
// Numerics: sums accumulate in double (like the CPU) and round once on store, so they differ from
// the CPU result only by the order of the double additions: |gpu - cpu| <= 1 ulp of the output +
// 2·n·2^-53·sum|x| (the second term is far below the first unless the sum cancels). max and amax
// are exact; NaN propagates as on the CPU. Where the maximum is a zero of either sign, max may
// return the other zero than the CPU (-0.0 == +0.0; different fold order).
#include <cuda_runtime.h>

#include <algorithm>

#include "autograd/cuda/accumulate.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"

namespace daedalus::cuda {

using kernels::ReduceKind;

namespace {

// Tunables. A chunk holds at least kMinChunk elements of the reduced extent, and there are at most
// kMaxChunks chunks per output: the chunk length is a function of n only.
constexpr int64_t kMinChunk = 4096;
constexpr int64_t kMaxChunks = 4096;
constexpr int kWarpsPerBlock = kThreads / 32;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct SumOp {
  using Acc = double;
  __device__ static Acc init() { return 0.0; }
  __device__ static void add(Acc& a, float v) { a += double(v); }
  __device__ static void combine(Acc& a, Acc b) { a += b; }
};

struct MaxOp {  // NaN wins: once a is NaN nothing replaces it
  using Acc = float;
  __device__ static Acc init() { return -INFINITY; }
  __device__ static void add(Acc& a, float v) {
    if (v > a || isnan(v)) a = v;
  }
  __device__ static void combine(Acc& a, Acc b) { add(a, b); }
};

struct AbsMaxOp {
  using Acc = float;
  __device__ static Acc init() { return 0.0f; }
  __device__ static void add(Acc& a, float v) { MaxOp::add(a, fabsf(v)); }
  __device__ static void combine(Acc& a, Acc b) { MaxOp::add(a, b); }
};

// The final value of one output from its accumulator: mean divides by n, then one rounding.
template <typename O, typename Acc>
__device__ __forceinline__ O finish(Acc a, bool mean, double count) {
  if constexpr (std::is_same_v<Acc, double>) {
    return round_from_double_device<O>(mean ? a / count : a);
  } else {
    return from_float<O>(a);  // max/amax: the value itself, exact in x's dtype
  }
}

// inner == 1: one warp per (row o, chunk c) segment of x [outer, n]; lane l folds elements
// k0 + l, k0 + l + 32, ... in order, then the warp tree. Writes the finished output when there is one
// chunk, else the partial [outer, chunks].
template <typename Op, typename T, typename O>
__global__ void reduce_rows_kernel(const T* x, int64_t outer, int64_t n, int64_t chunk, int64_t chunks,
                                   typename Op::Acc* partial, O* out, bool mean) {
  using Acc = typename Op::Acc;
  const int lane = threadIdx.x % 32;
  const int64_t segments = outer * chunks;
  const int64_t warp_stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t s = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32; s < segments; s += warp_stride) {
    const int64_t o = s / chunks, c = s % chunks;
    const int64_t k0 = c * chunk, k1 = k0 + chunk < n ? k0 + chunk : n;
    const T* row = x + o * n;
    Acc a = Op::init();
    for (int64_t k = k0 + lane; k < k1; k += 32) Op::add(a, to_float(row[k]));
    a = warp_tree(a, [](Acc& p, Acc q) { Op::combine(p, q); });
    if (lane == 0) {
      if (chunks == 1) {
        out[o] = finish<O>(a, mean, double(n));
      } else {
        partial[s] = a;
      }
    }
  }
}

// inner > 1: one thread per (row o, chunk c, column i) of x [outer, n, inner], folding its chunk in
// index order (consecutive threads read consecutive columns). Output or partial [outer, chunks, inner].
template <typename Op, typename T, typename O>
__global__ void reduce_columns_kernel(const T* x, int64_t outer, int64_t n, int64_t inner, int64_t chunk,
                                      int64_t chunks, typename Op::Acc* partial, O* out, bool mean) {
  using Acc = typename Op::Acc;
  const int64_t tasks = outer * chunks * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < tasks; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t % inner, c = (t / inner) % chunks, o = t / (inner * chunks);
    const int64_t k0 = c * chunk, k1 = k0 + chunk < n ? k0 + chunk : n;
    const T* col = x + o * n * inner + i;
    Acc a = Op::init();
    for (int64_t k = k0; k < k1; ++k) Op::add(a, to_float(col[k * inner]));
    if (chunks == 1) {
      out[o * inner + i] = finish<O>(a, mean, double(n));
    } else {
      partial[t] = a;
    }
  }
}

// partial [outer, chunks, inner] -> out [outer, inner]: one warp per output, lane l folds chunks
// l, l + 32, ... in order, then the warp tree.
template <typename Op, typename O>
__global__ void reduce_partials_kernel(const typename Op::Acc* partial, int64_t outer, int64_t chunks, int64_t inner,
                                       O* out, bool mean, double count) {
  using Acc = typename Op::Acc;
  const int lane = threadIdx.x % 32;
  const int64_t outputs = outer * inner;
  const int64_t warp_stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t w = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32; w < outputs; w += warp_stride) {
    const int64_t o = w / inner, i = w % inner;
    const Acc* p = partial + o * chunks * inner + i;
    Acc a = Op::init();
    for (int64_t c = lane; c < chunks; c += 32) Op::combine(a, p[c * inner]);
    a = warp_tree(a, [](Acc& u, Acc v) { Op::combine(u, v); });
    if (lane == 0) out[w] = finish<O>(a, mean, count);
  }
}

template <typename Op>
void launch_reduce(ReduceKind kind, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  constexpr const char* names[] = {"sum", "mean", "max", "amax"};
  const char* name = names[int(kind)];
  const bool mean = kind == ReduceKind::mean;
  const int64_t chunk = std::max(kMinChunk, ceil_div(n, kMaxChunks));
  const int64_t chunks = std::max<int64_t>(1, ceil_div(n, chunk));
  using Acc = typename Op::Acc;
  Tensor partial;  // [outer, chunks, inner] accumulators when a row spans several chunks
  if (chunks > 1)
    partial = Tensor::empty({ceil_div(outer * chunks * inner * int64_t(sizeof(Acc)), 8)}, DType::i64, x.device());
  Acc* p = chunks > 1 ? static_cast<Acc*>(partial.data_ptr()) : nullptr;
  const cudaStream_t stream = compute_stream(x.device().index);
  dispatch_float(name, x.dtype(), [&]<typename T>() {
    dispatch_float(name, out.dtype(), [&]<typename O>() {
      const T* px = static_cast<const T*>(x.data_ptr());
      O* po = static_cast<O*>(out.data_ptr());
      if (inner == 1) {
        reduce_rows_kernel<Op, T, O>
            <<<blocks_for(outer * chunks * 32), kThreads, 0, stream>>>(px, outer, n, chunk, chunks, p, po, mean);
      } else {
        reduce_columns_kernel<Op, T, O><<<blocks_for(outer * chunks * inner), kThreads, 0, stream>>>(
            px, outer, n, inner, chunk, chunks, p, po, mean);
      }
      DAEDALUS_CUDA_CHECK_LAUNCH();
      if (chunks > 1) {
        reduce_partials_kernel<Op, O>
            <<<blocks_for(outer * inner * 32), kThreads, 0, stream>>>(p, outer, chunks, inner, po, mean, double(n));
        DAEDALUS_CUDA_CHECK_LAUNCH();
      }
    });
  });
}

}  // namespace

void reduce(ReduceKind kind, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  DAEDALUS_ASSERT(x.is_contiguous() && out.is_contiguous() && out.numel() == outer * inner &&
                  x.numel() == outer * n * inner);
  if (out.numel() == 0) return;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(out.device().index));
  switch (kind) {
    case ReduceKind::sum:
    case ReduceKind::mean: launch_reduce<SumOp>(kind, x, outer, n, inner, out); break;
    case ReduceKind::max: launch_reduce<MaxOp>(kind, x, outer, n, inner, out); break;
    case ReduceKind::amax: launch_reduce<AbsMaxOp>(kind, x, outer, n, inner, out); break;
  }
}

}  // namespace daedalus::cuda
