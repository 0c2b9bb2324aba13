// CUDA twin of autograd/kernels/attention: flash-style scaled-dot-product attention, forward and
// backward, for MLA's head dims (Dqk != Dv, each up to kMaxHeadDim = 256).
//
// Shared-memory tiled fp32-FMA kernels (no tensor cores yet): tiles of q, k, v, dO are staged in
// shared memory as fp32 (bf16 inputs widened exactly), every product accumulates in fp32 FMAs.
// The bf16 rounding points are the CPU kernel's: P before P·V and Pᵀ·dO, dO before its products,
// dS before dS·K and dSᵀ·Q; the softmax statistics and every accumulator stay fp32.
//
// Thread layout (kThreads = 256): thread t is (group g = t / 16, lane c = t % 16). In a score
// tile a thread owns R consecutive rows g·R.. and the columns c + 16·j (j < C), so the 16 lanes
// of a row group share its rows (softmax row reductions are 16-lane shuffles); in an output
// accumulator [rows, D] it owns the same rows and the columns c + 16·j, j < kCols. Shared rows
// read along the head dim by 16 lanes at once have an odd leading dimension (D | 1): no bank
// conflicts.
//
// Kernels (grid x: tiles of the owning sequence dim, grid y: B·H heads):
//   forward     query tile 64, key tiles of 64: online softmax (running max m, sum l, rescaled O)
//   row_terms   delta_i = Σ_c dO[i, c] · out[i, c] (dO as the products see it), in double
//   dk_dv       key tile 32, query tiles of 64: dV += Pᵀ·dO, dK += scale · dSᵀ·Q
//   dq          query tile 64, key tiles of 32: dQ += scale · dS·K
// Each output element is owned by one thread and summed in a fixed order: no atomics, the
// results are deterministic. No [T, T] matrix exists; per block at most ~210 KiB of shared memory
// (both head dims 256), ~145 KiB for DeepSeek-V3's 192/128.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "autograd/check.h"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"

namespace daedalus::cuda {

namespace {

inline constexpr int kThreads = 256;  // 16 row groups x 16 lanes
inline constexpr int kLanes = 16;     // lanes per row group; columns c + 16·j
inline constexpr int kMaxHeadDim = 256;
inline constexpr int kFwdQ = 64, kFwdK = 64;  // forward: query tile, key tile
inline constexpr int kDkvK = 32, kDkvQ = 64;  // dK/dV pass: key tile (owned), query tile (walked)
inline constexpr int kDqQ = 64, kDqK = 32;    // dQ pass: query tile (owned), key tile (walked)
static_assert(kFwdQ == kThreads / kLanes * 4 && kFwdK == kLanes * 4, "forward: 4 x 4 scores per thread");
static_assert(kDkvK == kThreads / kLanes * 2 && kDkvQ == kLanes * 4, "dk_dv: 2 keys x 4 queries per thread");
static_assert(kDqQ == kThreads / kLanes * 4 && kDqK == kLanes * 2, "dq: 4 queries x 2 keys per thread");
static_assert(kFwdQ == kFwdK, "causal forward: every row of a query tile sees a key in each tile it visits");

// A [B, H, T, D] operand read through its strides.
struct Heads {
  const void* data;
  int64_t stride[4];
};

Heads heads_of(const Tensor& t) { return Heads{t.data_ptr(), {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}}; }

struct Dims {
  int64_t H, T;
  int Dqk, Dv;
  float scale;
  bool causal;
  const int64_t* doc_start;  // [B, T] on the device: the first key each query sees; null: key 0
};

// A product operand as the CPU kernel's GEMMs see it: fp32 as is, rounded to bf16 for bf16 inputs.
template <typename T>
__device__ __forceinline__ float as_operand(float x) {
  if constexpr (std::is_same_v<T, bf16>) return to_float(from_float<bf16>(x));
  return x;
}

// dst [rows, ld] (fp32, shared) = rows r0.. of head (b, h) of x (elements of type S), columns
// [0, D), as operands of T-precision products (as_operand: dO, fp32 data, rounds for bf16 inputs);
// rows at or past T are zeros.
template <typename S, typename T = float>
__device__ void load_rows(float* dst, int ld, const Heads& x, int64_t b, int64_t h, int64_t r0, int rows, int64_t T_len,
                          int D) {
  // One warp per row, its lanes along the head dim: coalesced reads when the last stride is 1, no
  // integer division.
  constexpr int kWarps = kThreads / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < rows; r += kWarps) {
    const int64_t t = r0 + r;
    float* row = dst + r * ld;
    if (t < T_len) {
      const S* src = static_cast<const S*>(x.data) + b * x.stride[0] + h * x.stride[1] + t * x.stride[2];
      for (int c = lane; c < D; c += 32) row[c] = as_operand<T>(to_float(src[c * x.stride[3]]));
    } else {
      for (int c = lane; c < D; c += 32) row[c] = 0.0f;
    }
  }
}

// src [rows] of a [B·H, T] fp32 row term for head `head`, rows r0..; zeros past T.
__device__ void load_row_terms(float* dst, const float* src, int64_t head, int64_t r0, int rows, int64_t T_len) {
  for (int r = threadIdx.x; r < rows; r += kThreads) dst[r] = r0 + r < T_len ? src[head * T_len + r0 + r] : 0.0f;
}

// acc[i][j] += Σ_{d < n} a[i·lda + d] · b[(lane + 16 j)·ldb + d]: R rows of A against C rows of B,
// both read along d (the "A·Bᵀ" of scores, S = Q·Kᵀ and dP = dO·Vᵀ).
template <int R, int C>
__device__ __forceinline__ void tile_abt(float (&acc)[R][C], const float* a, int lda, const float* b, int ldb, int n) {
  const int lane = threadIdx.x % kLanes;
#pragma unroll 4
  for (int d = 0; d < n; ++d) {
    float x[R], y[C];
#pragma unroll
    for (int i = 0; i < R; ++i) x[i] = a[i * lda + d];
#pragma unroll
    for (int j = 0; j < C; ++j) y[j] = b[(lane + kLanes * j) * ldb + d];
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
      for (int j = 0; j < C; ++j) acc[i][j] = fmaf(x[i], y[j], acc[i][j]);
  }
}

// acc[i][j] += Σ_{k < n} a[i·lda + k] · b[k·ldb + lane + 16 j] for the columns lane + 16 j < cols:
// R rows of A times B [n, cols] (the accumulations O += P·V, dV += Pᵀ·dO, dK += dSᵀ·Q, dQ += dS·K).
template <int R, int C>
__device__ __forceinline__ void tile_ab(float (&acc)[R][C], const float* a, int lda, const float* b, int ldb, int n,
                                        int cols) {
  const int lane = threadIdx.x % kLanes;
#pragma unroll 2
  for (int k = 0; k < n; ++k) {
    float x[R];
#pragma unroll
    for (int i = 0; i < R; ++i) x[i] = a[i * lda + k];
#pragma unroll
    for (int j = 0; j < C; ++j) {
      const int col = lane + kLanes * j;
      if (col < cols) {
        const float y = b[k * ldb + col];
#pragma unroll
        for (int i = 0; i < R; ++i) acc[i][j] = fmaf(x[i], y, acc[i][j]);
      }
    }
  }
}

// Reductions over the 16 lanes of a row group (xor butterflies: every lane gets the same bits).
__device__ __forceinline__ float group_max(float x) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset, kLanes));
  return x;
}
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset, kLanes);
  return x;
}

// Query row i of batch entry b sees key j (the causal mask, and the document mask when given).
__device__ __forceinline__ bool visible(int64_t b, int64_t i, int64_t j, const Dims& d) {
  return i < d.T && j < d.T && (!d.causal || j <= i) && (d.doc_start == nullptr || j >= d.doc_start[b * d.T + i]);
}

// Row-major shared buffers with odd leading dims; sizes in floats.
__host__ __device__ constexpr int odd_ld(int D) { return D | 1; }

size_t forward_smem(int Dqk, int Dv) {
  return sizeof(float) * (size_t(2 * kFwdQ) * odd_ld(Dqk) + size_t(kFwdK) * odd_ld(Dv) + kFwdQ * (kFwdK + 1));
}
size_t dk_dv_smem(int Dqk, int Dv) {
  return sizeof(float) * (size_t(kDkvK + kDkvQ) * (odd_ld(Dqk) + odd_ld(Dv)) + 2 * kDkvK * (kDkvQ + 1) + 2 * kDkvQ);
}
size_t dq_smem(int Dqk, int Dv) {
  return sizeof(float) * (size_t(kDqQ + kDqK) * (odd_ld(Dqk) + odd_ld(Dv)) + kDqQ * (kDqK + 1) + 2 * kDqQ);
}

// ---- forward --------------------------------------------------------------------------------------

// out [B·H, T, Dv] and lse [B·H, T] fp32 contiguous. Block (x, y): query tile (longest causal
// rows first) of head y. kCols · 16 >= Dv.
template <typename T, int kCols>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(Heads q, Heads k, Heads v, float* out, float* lse, Dims d) {
  extern __shared__ float smem[];
  const int ldq = odd_ld(d.Dqk), ldv = odd_ld(d.Dv), ldp = kFwdK + 1;
  float* qs = smem;              // [kFwdQ, ldq]
  float* ks = qs + kFwdQ * ldq;  // [kFwdK, ldq]
  float* vs = ks + kFwdK * ldq;  // [kFwdK, ldv]
  float* ps = vs + kFwdK * ldv;  // [kFwdQ, ldp]: P of the current key tile
  const int group = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const int64_t head = blockIdx.y, b = head / d.H, h = head % d.H;
  const int64_t i0 = int64_t(gridDim.x - 1 - blockIdx.x) * kFwdQ;
  const int r0 = group * 4;  // this thread's rows r0.. r0 + 3 of the tile

  load_rows<T>(qs, ldq, q, b, h, i0, kFwdQ, d.T, d.Dqk);
  float o[4][kCols] = {};
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) m[i] = -INFINITY, l[i] = 0.0f;

  const int64_t key_end = d.causal ? std::min(d.T, i0 + kFwdQ) : d.T;
  for (int64_t j0 = 0; j0 < key_end; j0 += kFwdK) {
    __syncthreads();  // the previous tile's k, v and P are consumed
    load_rows<T>(ks, ldq, k, b, h, j0, kFwdK, d.T, d.Dqk);
    load_rows<T>(vs, ldv, v, b, h, j0, kFwdK, d.T, d.Dv);
    __syncthreads();
    float s[4][4] = {};
    tile_abt<4, 4>(s, qs + r0 * ldq, ldq, ks, ldq, d.Dqk);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = i0 + r0 + i;
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s[i][j] = visible(b, row, j0 + lane + kLanes * j, d) ? d.scale * s[i][j] : -INFINITY;
        tile_max = fmaxf(tile_max, s[i][j]);
      }
      const float m_new = fmaxf(m[i], group_max(tile_max));
      const float shift = m_new == -INFINITY ? 0.0f : m_new;  // a row that has seen no key yet (padding)
      const float rescale = expf(m[i] - shift);               // 0 for the first tile (m = -inf)
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = expf(s[i][j] - shift);  // masked: e^-inf = 0
        sum += p;
        ps[(r0 + i) * ldp + lane + kLanes * j] = as_operand<T>(p);
      }
      l[i] = l[i] * rescale + group_sum(sum);
      m[i] = m_new;
#pragma unroll
      for (int c = 0; c < kCols; ++c) o[i][c] *= rescale;
    }
    __syncthreads();
    tile_ab<4, kCols>(o, ps + r0 * ldp, ldp, vs, ldv, kFwdK, d.Dv);
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t row = i0 + r0 + i;
    if (row >= d.T) continue;
    // Every real row saw its first visible key (key 0, or its document's first), so l >= 1.
    float* dst = out + (head * d.T + row) * d.Dv;
#pragma unroll
    for (int c = 0; c < kCols; ++c)
      if (lane + kLanes * c < d.Dv) dst[lane + kLanes * c] = o[i][c] / l[i];
    if (lane == 0) lse[head * d.T + row] = m[i] + logf(l[i]);
  }
}

// ---- backward -------------------------------------------------------------------------------------

// delta [B·H·T] = Σ_c dO[i, c] · out[i, c] with dO as the products take it (bf16-rounded for bf16
// inputs, as the CPU kernel: each row of dS then sums to ~0). One warp per row, in double.
template <typename T>
__global__ void attention_row_terms_kernel(Heads out, Heads dout, float* delta, int64_t rows, Dims d) {
  const int64_t row = (int64_t(blockIdx.x) * kThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps leave together
  const int64_t head = row / d.T, i = row % d.T, b = head / d.H, h = head % d.H;
  const float* o = static_cast<const float*>(out.data) + b * out.stride[0] + h * out.stride[1] + i * out.stride[2];
  const float* g = static_cast<const float*>(dout.data) + b * dout.stride[0] + h * dout.stride[1] + i * dout.stride[2];
  double sum = 0.0;
  for (int c = lane; c < d.Dv; c += 32)
    sum += double(as_operand<T>(g[c * dout.stride[3]])) * double(o[c * out.stride[3]]);
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) delta[row] = float(sum);
}

// dk [B·H, T, Dqk], dv [B·H, T, Dv] contiguous in T. Block (x, y): key tile x of head y, summed over
// the query tiles that see it. kCols · 16 >= max(Dqk, Dv).
template <typename T, int kCols>
__global__ void __launch_bounds__(kThreads, 1)
    attention_dk_dv_kernel(Heads q, Heads k, Heads v, Heads dout, const float* lse, const float* delta, T* dk, T* dv,
                           Dims d) {
  extern __shared__ float smem[];
  const int ldq = odd_ld(d.Dqk), ldv = odd_ld(d.Dv), ldp = kDkvQ + 1;
  float* ks = smem;                  // [kDkvK, ldq]
  float* vs = ks + kDkvK * ldq;      // [kDkvK, ldv]
  float* qs = vs + kDkvK * ldv;      // [kDkvQ, ldq]
  float* dos = qs + kDkvQ * ldq;     // [kDkvQ, ldv]
  float* pt = dos + kDkvQ * ldv;     // [kDkvK, ldp]: Pᵀ (as the products take it)
  float* dst = pt + kDkvK * ldp;     // [kDkvK, ldp]: dSᵀ (as the products take it)
  float* lse_s = dst + kDkvK * ldp;  // [kDkvQ]
  float* delta_s = lse_s + kDkvQ;    // [kDkvQ]
  const int group = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const int64_t head = blockIdx.y, b = head / d.H, h = head % d.H;
  const int64_t j0 = int64_t(blockIdx.x) * kDkvK;
  const int r0 = group * 2;  // this thread's keys r0, r0 + 1 of the tile

  load_rows<T>(ks, ldq, k, b, h, j0, kDkvK, d.T, d.Dqk);
  load_rows<T>(vs, ldv, v, b, h, j0, kDkvK, d.T, d.Dv);
  float dk_acc[2][kCols] = {}, dv_acc[2][kCols] = {};

  for (int64_t i0 = d.causal ? j0 / kDkvQ * kDkvQ : 0; i0 < d.T; i0 += kDkvQ) {
    __syncthreads();  // the previous query tile is consumed (and k, v are loaded)
    load_rows<T>(qs, ldq, q, b, h, i0, kDkvQ, d.T, d.Dqk);
    load_rows<float, T>(dos, ldv, dout, b, h, i0, kDkvQ, d.T, d.Dv);
    load_row_terms(lse_s, lse, head, i0, kDkvQ, d.T);
    load_row_terms(delta_s, delta, head, i0, kDkvQ, d.T);
    __syncthreads();
    float s[2][4] = {}, dp[2][4] = {};
    tile_abt<2, 4>(s, ks + r0 * ldq, ldq, qs, ldq, d.Dqk);   // Sᵀ = K·Qᵀ
    tile_abt<2, 4>(dp, vs + r0 * ldv, ldv, dos, ldv, d.Dv);  // dPᵀ = V·dOᵀ
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int qr = lane + kLanes * j;
        const float p = visible(b, i0 + qr, j0 + r0 + i, d) ? expf(d.scale * s[i][j] - lse_s[qr]) : 0.0f;
        pt[(r0 + i) * ldp + qr] = as_operand<T>(p);
        dst[(r0 + i) * ldp + qr] = as_operand<T>(p * (dp[i][j] - delta_s[qr]));
      }
    }
    __syncthreads();
    tile_ab<2, kCols>(dv_acc, pt + r0 * ldp, ldp, dos, ldv, kDkvQ, d.Dv);   // dV += Pᵀ·dO
    tile_ab<2, kCols>(dk_acc, dst + r0 * ldp, ldp, qs, ldq, kDkvQ, d.Dqk);  // dK += dSᵀ·Q
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t key = j0 + r0 + i;
    if (key >= d.T) continue;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int col = lane + kLanes * c;
      if (col < d.Dqk) dk[(head * d.T + key) * d.Dqk + col] = from_float<T>(d.scale * dk_acc[i][c]);
      if (col < d.Dv) dv[(head * d.T + key) * d.Dv + col] = from_float<T>(dv_acc[i][c]);
    }
  }
}

// dq [B·H, T, Dqk] contiguous in T. Block (x, y): query tile (longest causal rows first) of head y,
// summed over the key tiles it sees. kCols · 16 >= Dqk.
template <typename T, int kCols>
__global__ void __launch_bounds__(kThreads, 1)
    attention_dq_kernel(Heads q, Heads k, Heads v, Heads dout, const float* lse, const float* delta, T* dq, Dims d) {
  extern __shared__ float smem[];
  const int ldq = odd_ld(d.Dqk), ldv = odd_ld(d.Dv), lds = kDqK + 1;
  float* qs = smem;                // [kDqQ, ldq]
  float* dos = qs + kDqQ * ldq;    // [kDqQ, ldv]
  float* ks = dos + kDqQ * ldv;    // [kDqK, ldq]
  float* vs = ks + kDqK * ldq;     // [kDqK, ldv]
  float* ds = vs + kDqK * ldv;     // [kDqQ, lds]: dS (as the products take it)
  float* lse_s = ds + kDqQ * lds;  // [kDqQ]
  float* delta_s = lse_s + kDqQ;   // [kDqQ]
  const int group = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const int64_t head = blockIdx.y, b = head / d.H, h = head % d.H;
  const int64_t i0 = int64_t(gridDim.x - 1 - blockIdx.x) * kDqQ;
  const int r0 = group * 4;  // this thread's rows r0.. r0 + 3 of the tile

  load_rows<T>(qs, ldq, q, b, h, i0, kDqQ, d.T, d.Dqk);
  load_rows<float, T>(dos, ldv, dout, b, h, i0, kDqQ, d.T, d.Dv);
  load_row_terms(lse_s, lse, head, i0, kDqQ, d.T);
  load_row_terms(delta_s, delta, head, i0, kDqQ, d.T);
  float dq_acc[4][kCols] = {};

  const int64_t key_end = d.causal ? std::min(d.T, i0 + kDqQ) : d.T;
  for (int64_t j0 = 0; j0 < key_end; j0 += kDqK) {
    __syncthreads();  // the previous key tile and dS are consumed (and q, dO are loaded)
    load_rows<T>(ks, ldq, k, b, h, j0, kDqK, d.T, d.Dqk);
    load_rows<T>(vs, ldv, v, b, h, j0, kDqK, d.T, d.Dv);
    __syncthreads();
    float s[4][2] = {}, dp[4][2] = {};
    tile_abt<4, 2>(s, qs + r0 * ldq, ldq, ks, ldq, d.Dqk);   // S = Q·Kᵀ
    tile_abt<4, 2>(dp, dos + r0 * ldv, ldv, vs, ldv, d.Dv);  // dP = dO·Vᵀ
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int kc = lane + kLanes * j;
        const float p = visible(b, i0 + r0 + i, j0 + kc, d) ? expf(d.scale * s[i][j] - lse_s[r0 + i]) : 0.0f;
        ds[(r0 + i) * lds + kc] = as_operand<T>(p * (dp[i][j] - delta_s[r0 + i]));
      }
    }
    __syncthreads();
    tile_ab<4, kCols>(dq_acc, ds + r0 * lds, lds, ks, ldq, kDqK, d.Dqk);  // dQ += dS·K
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t row = i0 + r0 + i;
    if (row >= d.T) continue;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int col = lane + kLanes * c;
      if (col < d.Dqk) dq[(head * d.T + row) * d.Dqk + col] = from_float<T>(d.scale * dq_acc[i][c]);
    }
  }
}

// ---- launchers ------------------------------------------------------------------------------------

// Calls fn.template operator()<kCols>() with the smallest instantiated column count covering D.
template <typename Fn>
void dispatch_cols(int D, Fn&& fn) {
  if (D <= 64) return fn.template operator()<4>();
  if (D <= 128) return fn.template operator()<8>();
  if (D <= 192) return fn.template operator()<12>();
  return fn.template operator()<16>();
}

// Opts the kernel into `bytes` of dynamic shared memory (past the 48 KiB default), checking the
// device's limit first.
template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes, const char* op, int device) {
  int limit = 0;
  DAEDALUS_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  DAEDALUS_CHECK(bytes <= size_t(limit), "{}: needs {} bytes of shared memory per block, the device allows {}", op,
                 bytes, limit);
  DAEDALUS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

Dims dims_of(const Tensor& q, const Tensor& v, double scale, bool causal, const Tensor& doc_start, const char* op) {
  DAEDALUS_CHECK(q.size(3) <= kMaxHeadDim && v.size(3) <= kMaxHeadDim,
                 "{}: q {} and v {}: the CUDA kernels take head dims up to {}", op, shape_str(q.shape()),
                 shape_str(v.shape()), kMaxHeadDim);
  DAEDALUS_CHECK(q.size(0) * q.size(1) <= 65535, "{}: q {}: at most 65535 heads (B·H) per call", op,
                 shape_str(q.shape()));
  return Dims{q.size(1),
              q.size(2),
              int(q.size(3)),
              int(v.size(3)),
              float(scale),
              causal,
              doc_start.defined() ? doc_start.data<int64_t>() : nullptr};
}

unsigned tiles(int64_t T, int tile) { return unsigned((T + tile - 1) / tile); }

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                       double scale, bool causal, const Tensor& doc_start) {
  constexpr const char* op = "attention";
  const Dims d = dims_of(q, v, scale, causal, doc_start, op);
  const int64_t heads = q.size(0) * q.size(1);
  if (heads == 0 || d.T == 0) return;
  const int device = q.device().index;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device));
  const cudaStream_t stream = compute_stream(device);
  const size_t smem = forward_smem(d.Dqk, d.Dv);
  const dim3 grid(tiles(d.T, kFwdQ), unsigned(heads));
  dispatch_float(op, q.dtype(), [&]<typename T>() {
    dispatch_cols(d.Dv, [&]<int kCols>() {
      set_smem(attention_forward_kernel<T, kCols>, smem, op, device);
      attention_forward_kernel<T, kCols><<<grid, kThreads, smem, stream>>>(heads_of(q), heads_of(k), heads_of(v),
                                                                           static_cast<float*>(out.data_ptr()),
                                                                           static_cast<float*>(lse.data_ptr()), d);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, double scale,
                        bool causal, const Tensor& doc_start) {
  constexpr const char* op = "attention_backward";
  const Dims d = dims_of(q, v, scale, causal, doc_start, op);
  const int64_t heads = q.size(0) * q.size(1);
  if (heads == 0 || d.T == 0) return;
  DAEDALUS_CHECK(lse.is_contiguous() && dq.is_contiguous() && dk.is_contiguous() && dv.is_contiguous(),
                 "{}: lse, dq, dk and dv must be contiguous", op);
  const int device = q.device().index;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device));
  const cudaStream_t stream = compute_stream(device);
  const Tensor delta = Tensor::empty({heads * d.T}, DType::f32, q.device());
  const float* lse_p = static_cast<const float*>(lse.data_ptr());
  const float* delta_p = static_cast<const float*>(delta.data_ptr());
  dispatch_float(op, q.dtype(), [&]<typename T>() {
    const int64_t rows = heads * d.T;
    attention_row_terms_kernel<T><<<unsigned((rows * 32 + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        heads_of(out), heads_of(dout), static_cast<float*>(delta.data_ptr()), rows, d);
    DAEDALUS_CUDA_CHECK_LAUNCH();

    dispatch_cols(std::max(d.Dqk, d.Dv), [&]<int kCols>() {
      const size_t smem = dk_dv_smem(d.Dqk, d.Dv);
      set_smem(attention_dk_dv_kernel<T, kCols>, smem, op, device);
      attention_dk_dv_kernel<T, kCols><<<dim3(tiles(d.T, kDkvK), unsigned(heads)), kThreads, smem, stream>>>(
          heads_of(q), heads_of(k), heads_of(v), heads_of(dout), lse_p, delta_p, static_cast<T*>(dk.data_ptr()),
          static_cast<T*>(dv.data_ptr()), d);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
    dispatch_cols(d.Dqk, [&]<int kCols>() {
      const size_t smem = dq_smem(d.Dqk, d.Dv);
      set_smem(attention_dq_kernel<T, kCols>, smem, op, device);
      attention_dq_kernel<T, kCols><<<dim3(tiles(d.T, kDqQ), unsigned(heads)), kThreads, smem, stream>>>(
          heads_of(q), heads_of(k), heads_of(v), heads_of(dout), lse_p, delta_p, static_cast<T*>(dq.data_ptr()), d);
      DAEDALUS_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace daedalus::cuda
