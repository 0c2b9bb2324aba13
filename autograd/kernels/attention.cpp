// Scaled-dot-product attention: the dispatchers with their operand checks, and the CPU kernels
// (blocked online softmax around oneDNN block GEMMs, flash-attention style).
//
// Every block GEMM runs on one thread inside the OpenMP region that owns its output rows (oneDNN
// does not thread inside an active parallel region), so the order of every sum is fixed by the
// block sizes alone: the results do not depend on the thread count or on scheduling.
#include "autograd/kernels/attention.h"
#include "autograd/kernels/attention_backend.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <mutex>
#include <string_view>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/gemm.h"

namespace daedalus {

namespace {

// Tunables: rows of a query block and of a key block. Each block GEMM is one oneDNN call; at
// 128 x 128 (a 64 KiB fp32 score block, in L2 with its operands) the calls run near oneDNN's
// large-matrix rate. bench_attention (MLA shape, 2 cores): 64 x 64 gave half the forward
// throughput (61 against 122 GFLOP/s fp32), 128 x 64, 256 x 128 and 128 x 256 10-25% less.
constexpr int64_t kBlockQ = 128;
constexpr int64_t kBlockK = 128;

// One attention problem: q, k [B, H, T, Dqk], v [B, H, T, Dv].
struct AttentionDims {
  int64_t B = 0, H = 0, T = 0, Dqk = 0, Dv = 0;
  double scale = 1.0;
  bool causal = true;
  const int64_t* doc_start = nullptr;  // [B, T]: the first key row b's query i sees; null: key 0

  int64_t heads() const { return B * H; }
  int64_t query_blocks() const { return (T + kBlockQ - 1) / kBlockQ; }
  int64_t key_blocks() const { return (T + kBlockK - 1) / kBlockK; }
  int64_t first_key(int64_t b, int64_t i) const { return doc_start != nullptr ? doc_start[b * T + i] : 0; }
  // Query row i of batch entry b sees keys [lo, hi) of the key block [j0, j0 + bk) (block offsets).
  std::pair<int64_t, int64_t> visible(int64_t b, int64_t i, int64_t j0, int64_t bk) const {
    const int64_t hi = causal ? std::clamp(i - j0 + 1, int64_t{0}, bk) : bk;
    return {std::clamp(first_key(b, i) - j0, int64_t{0}, hi), hi};
  }
  // The first key block that the query block starting at row i0 visits (doc_start is
  // non-decreasing along a row, so the block's first row has the smallest).
  int64_t key_begin(int64_t b, int64_t i0) const { return first_key(b, i0) / kBlockK * kBlockK; }
  // The keys that the query block ending at row i1 (exclusive) sees: [.., key_end).
  int64_t key_end(int64_t i1) const { return causal ? i1 : T; }
};

}  // namespace

namespace cpu {

namespace {

// ---- numerics -----------------------------------------------------------------------------------

// e^x in float for x <= 88 (a score minus its row's running max or its lse, so x <= 0 in practice),
// within 2 ulp: Cephes' expf (x = n ln2 + r with |r| <= ln2/2, a degree-7 polynomial in r, times
// 2^n). Written without branches so that loops over it vectorize (a float clamp would not): below
// -87 the result is masked to 0 instead of a subnormal; NaN stays NaN.
inline float exp_approx(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 = kLn2Hi + kLn2Lo; n · kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 · 2^23: t + kRound holds round(t) in its low bits
  const float shifted = x * kLog2e + kRound;
  const float n = shifted - kRound;
  // round(t) mod 2^32 (unsigned: defined for any x; exact when |x| < 2^21).
  const uint32_t ni = std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(kRound);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float e = p * std::bit_cast<float>((ni + 127u) << 23);
  const uint32_t keep = 0u - static_cast<uint32_t>(!(x < -87.0f));  // all ones, or 0 below -87
  return std::bit_cast<float>(std::bit_cast<uint32_t>(e) & keep);
}

constexpr int kLanes = 16;  // interleaved partial results: vectorizable, in a fixed order

// max_c s[c] over c < n (-inf when n == 0). The maximum is exact, so any order gives the same.
float row_max(const float* s, int64_t n) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t c = 0; c < n; ++c) m = std::max(m, s[c]);
  return m;
}

// s[c] = e^(s[c] - shift) for c < n, in place; returns their sum (kLanes partial sums, then added
// in lane order, so the result does not depend on how the loop is vectorized).
float exp_row(float* s, int64_t n, float shift) {
  float lane[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    for (int u = 0; u < kLanes; ++u) {
      const float e = exp_approx(s[c + u] - shift);
      s[c + u] = e;
      lane[u] += e;
    }
  }
  for (int u = 0; c < n; ++c, ++u) {
    s[c] = exp_approx(s[c] - shift);
    lane[u] += s[c];
  }
  float sum = 0.0f;
  for (float x : lane) sum += x;
  return sum;
}

// dst [rows, cols] bf16 (contiguous) = src [rows, cols] fp32 (contiguous rows, leading dim ld)
// rounded to nearest even.
void round_to_bf16(bf16* dst, const float* src, int64_t ld, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = from_float<bf16>(src[r * ld + c]);
}

// ---- layout -------------------------------------------------------------------------------------

// Rows [r0, r1) of head (b, h) of a [B, H, T, D] tensor: a [r1 - r0, D] view.
Tensor rows_of(const Tensor& t, int64_t b, int64_t h, int64_t r0, int64_t r1) {
  return t.select(0, b).select(0, h).slice(0, r0, r1);
}

// Row i of head (b, h) of a [B, H, T, D] fp32 tensor whose last dim has unit stride.
const float* row_ptr(const Tensor& t, int64_t b, int64_t h, int64_t i) {
  return static_cast<const float*>(t.data_ptr()) + b * t.stride(0) + h * t.stride(1) + i * t.stride(2);
}

// Per-thread scratch: one [threads, Σ sizes] tensor (through the allocator, so memory statistics
// see it), each thread's row cut into buffers of the given sizes on 64-byte boundaries.
int64_t whole_lines(int64_t n, DType dtype) {
  const int64_t per_line = 64 / int64_t(dtype_size(dtype));
  return (n + per_line - 1) / per_line * per_line;
}

Tensor scratch(std::initializer_list<int64_t> sizes, DType dtype) {
  int64_t total = 0;
  for (int64_t n : sizes) total += whole_lines(n, dtype);
  return total == 0 ? Tensor() : Tensor::empty({omp_get_max_threads(), total}, dtype);
}

// Hands out one thread's buffers, in the order their sizes were given to scratch().
class Arena {
 public:
  Arena(const Tensor& scratch, int thread) : row_(scratch.defined() ? scratch.select(0, thread) : Tensor()) {}
  Tensor take(int64_t n) {
    if (!row_.defined()) return Tensor();  // a dtype this pass does not use
    Tensor buffer = row_.slice(0, used_, used_ + n);
    used_ += whole_lines(n, row_.dtype());
    return buffer;
  }

 private:
  Tensor row_;
  int64_t used_ = 0;
};

// The first `rows * cols` elements of a buffer as a contiguous [rows, cols] matrix.
Tensor matrix(const Tensor& buffer, int64_t rows, int64_t cols) {
  return buffer.slice(0, 0, rows * cols).view({rows, cols});
}

// Runs fn(item, thread) for items [0, n) on OpenMP threads, dynamically scheduled (causal items
// differ in cost). Each item runs whole on one thread. The first exception is rethrown here.
template <typename Fn>
void parallel_items(int64_t n, Fn&& fn) {
  std::exception_ptr error;
  std::mutex mutex;
#pragma omp parallel
  {
    const int thread = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n; ++item) {
      try {
        fn(item, thread);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

// ---- block steps shared by the passes -----------------------------------------------------------

// s [bq, bk] (contiguous) holds the scaled scores of query rows i0.. of batch entry b against keys
// j0..; replaces them by P = e^(s - lse_i) where the key is visible and 0 where it is masked.
void probabilities(float* s, int64_t bq, int64_t bk, const float* lse, int64_t b, int64_t i0, int64_t j0,
                   const AttentionDims& d) {
  for (int64_t r = 0; r < bq; ++r) {
    float* row = s + r * bk;
    const auto [lo, hi] = d.visible(b, i0 + r, j0, bk);
    exp_row(row + lo, hi - lo, lse[r]);
    std::fill(row, row + lo, 0.0f);
    std::fill(row + hi, row + bk, 0.0f);
  }
}

// dp [bq, bk] := p ∘ (dp - delta_r): the gradient of the scaled scores, dS.
void score_gradient(float* dp, const float* p, int64_t bq, int64_t bk, const float* delta) {
  for (int64_t r = 0; r < bq; ++r)
    for (int64_t c = 0; c < bk; ++c) dp[r * bk + c] = p[r * bk + c] * (dp[r * bk + c] - delta[r]);
}

// An fp32 [rows, cols] block as the operand of a GEMM against `dtype` data: itself for fp32, else
// rounded into `buffer` (bf16).
Tensor operand(const Tensor& block, DType dtype, const Tensor& buffer) {
  if (dtype == DType::f32) return block;
  const Tensor m = matrix(buffer, block.size(0), block.size(1));
  round_to_bf16(static_cast<bf16*>(m.data_ptr()), static_cast<const float*>(block.data_ptr()), block.stride(0),
                block.size(0), block.size(1));
  return m;
}

// dst [rows, cols] (q's dtype) = acc [rows, cols] fp32, rounded once; nothing when acc is dst.
void store(const Tensor& dst, const Tensor& acc) {
  if (acc.shares_storage(dst)) return;
  const float* src = static_cast<const float*>(acc.data_ptr());
  round_to_bf16(static_cast<bf16*>(dst.data_ptr()), src, acc.stride(0), acc.size(0), acc.size(1));
}

}  // namespace

// q, k, v [B, H, T, D*] of one float dtype with unit last strides; out [B, H, T, Dv] and
// lse [B, H, T] fp32 contiguous.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                       const AttentionDims& d) {
  const DType dtype = q.dtype();
  const Tensor f32 = scratch({kBlockQ * kBlockK, kBlockQ, kBlockQ}, DType::f32);                   // S/P, m, l
  const Tensor b16 = dtype == DType::bf16 ? scratch({kBlockQ * kBlockK}, DType::bf16) : Tensor();  // P in bf16
  const int64_t heads = d.heads(), nq = d.query_blocks();
  float* lse_all = static_cast<float*>(lse.data_ptr());

  parallel_items(heads * nq, [&](int64_t item, int thread) {
    const int64_t head = item % heads, qb = nq - 1 - item / heads;  // the longest causal rows first
    const int64_t b = head / d.H, h = head % d.H;
    const int64_t i0 = qb * kBlockQ, i1 = std::min(d.T, i0 + kBlockQ), bq = i1 - i0;
    Arena a32(f32, thread), a16(b16, thread);
    const Tensor s_buffer = a32.take(kBlockQ * kBlockK);
    float* m = static_cast<float*>(a32.take(kBlockQ).data_ptr());  // running max of each row
    float* l = static_cast<float*>(a32.take(kBlockQ).data_ptr());  // running Σ e^(s - m)
    const Tensor p_buffer = a16.take(kBlockQ * kBlockK);
    std::fill(m, m + bq, -INFINITY);
    std::fill(l, l + bq, 0.0f);

    const Tensor qi = rows_of(q, b, h, i0, i1);
    const Tensor oi = rows_of(out, b, h, i0, i1);  // [bq, Dv]: the accumulator, rescaled as m grows
    float* o = static_cast<float*>(oi.data_ptr());
    const int64_t j_begin = d.key_begin(b, i0);
    for (int64_t j0 = j_begin; j0 < d.key_end(i1); j0 += kBlockK) {
      const int64_t j1 = std::min(d.T, j0 + kBlockK), bk = j1 - j0;
      const Tensor s = matrix(s_buffer, bq, bk);
      kernels::gemm(qi, rows_of(k, b, h, j0, j1).t(), s, d.scale);
      float* sp = static_cast<float*>(s.data_ptr());
      for (int64_t r = 0; r < bq; ++r) {
        float* row = sp + r * bk;
        const auto [lo, hi] = d.visible(b, i0 + r, j0, bk);
        const float m_new = std::max(m[r], row_max(row + lo, hi - lo));
        if (hi > lo) {
          // O and l were summed against e^(s - m): rescale them to the new max (the first block
          // has no history: its GEMM overwrites O; a row that saw no key yet has O = 0, m = -inf).
          const float rescale = std::exp(m[r] - m_new);
          l[r] = l[r] * rescale + exp_row(row + lo, hi - lo, m_new);
          if (j0 > j_begin && rescale != 1.0f)
            for (int64_t c = 0; c < d.Dv; ++c) o[r * d.Dv + c] *= rescale;
          m[r] = m_new;
        }
        std::fill(row, row + lo, 0.0f);
        std::fill(row + hi, row + bk, 0.0f);
      }
      kernels::gemm(operand(s, dtype, p_buffer), rows_of(v, b, h, j0, j1), oi, 1.0, j0 == j_begin ? 0.0 : 1.0);
    }
    // Every row saw its first visible key (key 0, or its document's first) in some block, so l >= 1.
    for (int64_t r = 0; r < bq; ++r) {
      for (int64_t c = 0; c < d.Dv; ++c) o[r * d.Dv + c] /= l[r];
      lse_all[head * d.T + i0 + r] = m[r] + std::log(l[r]);
    }
  });
}

// q, k, v as for the forward; out, dout [B, H, T, Dv] fp32 with unit last strides; lse [B, H, T]
// fp32 contiguous; dq, dk, dv contiguous in q's dtype.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv,
                        const AttentionDims& d) {
  const DType dtype = q.dtype();
  const bool bf16_acc = dtype == DType::bf16;  // gradients accumulate in fp32 scratch, rounded at the end
  const int64_t heads = d.heads();
  const float* lse_all = static_cast<const float*>(lse.data_ptr());

  // delta_i = Σ_c dO[i, c] · out[i, c] = Σ_j P[i, j] · dP[i, j], in double, rounded once. dO is
  // taken as the GEMMs see it (rounded to bf16 for bf16 inputs): then delta matches the dP it is
  // subtracted from, and each row of dS still sums to ~0, as the softmax's gradient must (with
  // the unrounded dO a one-key row would get a gradient of 2^-8 · |dO||v| instead of 0).
  const Tensor delta = Tensor::empty({d.B, d.H, d.T});
  float* delta_all = static_cast<float*>(delta.data_ptr());
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < heads * d.T; ++row) {
    const int64_t b = row / (d.H * d.T), h = row / d.T % d.H, i = row % d.T;
    const float* go = row_ptr(dout, b, h, i);
    const float* o = row_ptr(out, b, h, i);
    double sum = 0.0;
    for (int64_t c = 0; c < d.Dv; ++c) {
      const float g = dtype == DType::bf16 ? to_float(from_float<bf16>(go[c])) : go[c];
      sum += double(g) * double(o[c]);
    }
    delta_all[row] = float(sum);
  }

  // Pass 1: dK and dV of one key block, summed over the query blocks that see it.
  {
    const Tensor f32 =
        scratch({kBlockQ * kBlockK, kBlockQ * kBlockK, bf16_acc ? kBlockK * d.Dqk : 0, bf16_acc ? kBlockK * d.Dv : 0},
                DType::f32);  // S/P, dP/dS, dK and dV accumulators
    const Tensor b16 =
        bf16_acc ? scratch({kBlockQ * kBlockK, kBlockQ * kBlockK, kBlockQ * d.Dv}, DType::bf16) : Tensor();
    const int64_t nk = d.key_blocks(), nq = d.query_blocks();
    parallel_items(heads * nk, [&](int64_t item, int thread) {
      const int64_t head = item % heads, kb = item / heads;  // the first key blocks (most queries) first
      const int64_t b = head / d.H, h = head % d.H;
      const int64_t j0 = kb * kBlockK, j1 = std::min(d.T, j0 + kBlockK), bk = j1 - j0;
      Arena a32(f32, thread), a16(b16, thread);
      const Tensor s_buffer = a32.take(kBlockQ * kBlockK), dp_buffer = a32.take(kBlockQ * kBlockK);
      const Tensor dk_acc = bf16_acc ? matrix(a32.take(kBlockK * d.Dqk), bk, d.Dqk) : rows_of(dk, b, h, j0, j1);
      const Tensor dv_acc = bf16_acc ? matrix(a32.take(kBlockK * d.Dv), bk, d.Dv) : rows_of(dv, b, h, j0, j1);
      const Tensor p16 = a16.take(kBlockQ * kBlockK), ds16 = a16.take(kBlockQ * kBlockK),
                   do16 = a16.take(kBlockQ * d.Dv);
      const Tensor kj = rows_of(k, b, h, j0, j1), vj = rows_of(v, b, h, j0, j1);

      const int64_t first = d.causal ? j0 / kBlockQ : 0;  // the first query block that sees key j0
      for (int64_t qb = first; qb < nq; ++qb) {
        const int64_t i0 = qb * kBlockQ, i1 = std::min(d.T, i0 + kBlockQ), bq = i1 - i0;
        const double beta = qb == first ? 0.0 : 1.0;  // the first block overwrites the accumulators
        const Tensor qi = rows_of(q, b, h, i0, i1);
        const Tensor s = matrix(s_buffer, bq, bk), dp = matrix(dp_buffer, bq, bk);
        kernels::gemm(qi, kj.t(), s, d.scale);
        float* p = static_cast<float*>(s.data_ptr());
        probabilities(p, bq, bk, lse_all + head * d.T + i0, b, i0, j0, d);
        const Tensor go = operand(rows_of(dout, b, h, i0, i1), dtype, do16);
        kernels::gemm(operand(s, dtype, p16).t(), go, dv_acc, 1.0, beta);  // dV += Pᵀ·dO
        kernels::gemm(go, vj.t(), dp);                                     // dP = dO·Vᵀ
        score_gradient(static_cast<float*>(dp.data_ptr()), p, bq, bk, delta_all + head * d.T + i0);
        kernels::gemm(operand(dp, dtype, ds16).t(), qi, dk_acc, d.scale, beta);  // dK += scale·dSᵀ·Q
      }
      store(rows_of(dk, b, h, j0, j1), dk_acc);
      store(rows_of(dv, b, h, j0, j1), dv_acc);
    });
  }

  // Pass 2: dQ of one query block, summed over the key blocks it sees.
  {
    const Tensor f32 = scratch({kBlockQ * kBlockK, kBlockQ * kBlockK, bf16_acc ? kBlockQ * d.Dqk : 0},
                               DType::f32);  // S/P, dP/dS, dQ accumulator
    const Tensor b16 = bf16_acc ? scratch({kBlockQ * kBlockK, kBlockQ * d.Dv}, DType::bf16) : Tensor();
    const int64_t nq = d.query_blocks();
    parallel_items(heads * nq, [&](int64_t item, int thread) {
      const int64_t head = item % heads, qb = nq - 1 - item / heads;  // the longest causal rows first
      const int64_t b = head / d.H, h = head % d.H;
      const int64_t i0 = qb * kBlockQ, i1 = std::min(d.T, i0 + kBlockQ), bq = i1 - i0;
      Arena a32(f32, thread), a16(b16, thread);
      const Tensor s_buffer = a32.take(kBlockQ * kBlockK), dp_buffer = a32.take(kBlockQ * kBlockK);
      const Tensor dq_acc = bf16_acc ? matrix(a32.take(kBlockQ * d.Dqk), bq, d.Dqk) : rows_of(dq, b, h, i0, i1);
      const Tensor ds16 = a16.take(kBlockQ * kBlockK), do16 = a16.take(kBlockQ * d.Dv);
      const Tensor qi = rows_of(q, b, h, i0, i1);
      const Tensor go = operand(rows_of(dout, b, h, i0, i1), dtype, do16);

      const int64_t j_begin = d.key_begin(b, i0);
      for (int64_t j0 = j_begin; j0 < d.key_end(i1); j0 += kBlockK) {
        const int64_t j1 = std::min(d.T, j0 + kBlockK), bk = j1 - j0;
        const Tensor kj = rows_of(k, b, h, j0, j1);
        const Tensor s = matrix(s_buffer, bq, bk), dp = matrix(dp_buffer, bq, bk);
        kernels::gemm(qi, kj.t(), s, d.scale);
        float* p = static_cast<float*>(s.data_ptr());
        probabilities(p, bq, bk, lse_all + head * d.T + i0, b, i0, j0, d);
        kernels::gemm(go, rows_of(v, b, h, j0, j1).t(), dp);  // dP = dO·Vᵀ
        score_gradient(static_cast<float*>(dp.data_ptr()), p, bq, bk, delta_all + head * d.T + i0);
        kernels::gemm(operand(dp, dtype, ds16), kj, dq_acc, d.scale, j0 == j_begin ? 0.0 : 1.0);  // dQ += scale·dS·K
      }
      store(rows_of(dq, b, h, i0, i1), dq_acc);
    });
  }
}

}  // namespace cpu

namespace kernels {

namespace {

// A view the CPU kernels can walk row by row: unit stride along the last dim (else a copy).
Tensor unit_last_stride(const Tensor& t) { return t.stride(-1) == 1 || t.size(-1) <= 1 ? t : t.contiguous(); }

// Checks q, k, v and returns the problem; messages name the op and the shapes involved.
AttentionDims check_qkv(std::string_view op, const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                        bool causal) {
  DAEDALUS_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "{}: q {}, k {} and v {}: each must be 4-d [B, H, T, D]",
                 op, shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  check_float(op, q, "q");
  DAEDALUS_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(),
                 "{}: q {}, k {} and v {}: dtypes differ (all fp32 or all bf16)", op, q.describe(), k.describe(),
                 v.describe());
  DAEDALUS_CHECK(k.size(3) == q.size(3), "{}: q {} and k {}: qk head dims {} and {} differ", op, shape_str(q.shape()),
                 shape_str(k.shape()), q.size(3), k.size(3));
  for (int dim = 0; dim < 3; ++dim) {
    static constexpr const char* kNames[] = {"batch sizes", "head counts", "sequence lengths"};
    DAEDALUS_CHECK(k.size(dim) == q.size(dim), "{}: q {} and k {}: {} {} and {} differ", op, shape_str(q.shape()),
                   shape_str(k.shape()), kNames[dim], q.size(dim), k.size(dim));
    DAEDALUS_CHECK(v.size(dim) == k.size(dim), "{}: k {} and v {}: {} {} and {} differ", op, shape_str(k.shape()),
                   shape_str(v.shape()), kNames[dim], k.size(dim), v.size(dim));
  }
  DAEDALUS_CHECK(std::isfinite(scale), "{}: scale must be finite, got {}", op, scale);
  return AttentionDims{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), scale, causal};
}

// doc_start as the kernels take it: undefined, or int64 [B, T] contiguous on `device`. A CPU
// tensor is checked (0 <= doc_start[b, i] <= i, non-decreasing along each row); a CUDA one is
// taken as it is (the model builds it from host positions that were checked).
Tensor check_doc_start(std::string_view op, const Tensor& doc_start, const AttentionDims& d, const Device& device) {
  if (!doc_start.defined()) return doc_start;
  DAEDALUS_CHECK(doc_start.shape() == Shape({d.B, d.T}), "{}: doc_start {}: expected [B, T] = [{}, {}]", op,
                 shape_str(doc_start.shape()), d.B, d.T);
  DAEDALUS_CHECK(d.causal, "{}: a document mask needs causal attention", op);
  const Tensor starts = doc_start.to(DType::i64).to(device).contiguous();
  if (device.type == DeviceType::cpu) {
    const int64_t* s = starts.data<int64_t>();
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t i = 0; i < d.T; ++i) {
        const int64_t v = s[b * d.T + i];
        DAEDALUS_CHECK(v >= 0 && v <= i && (i == 0 || v >= s[b * d.T + i - 1]),
                       "{}: doc_start[{}, {}] = {}: expected non-decreasing values in [0, {}]", op, b, i, v, i);
      }
  }
  return starts;
}

}  // namespace

AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                                  const Tensor& doc_start) {
  const Device device = common_device("attention", {&q, &k, &v});
  AttentionDims d = check_qkv("attention", q, k, v, scale, causal);
  const Tensor starts = check_doc_start("attention", doc_start, d, device);
  if (starts.defined() && device.type == DeviceType::cpu) d.doc_start = starts.data<int64_t>();
  AttentionOutput result{Tensor::empty({d.B, d.H, d.T, d.Dv}, DType::f32, device),
                         Tensor::empty({d.B, d.H, d.T}, DType::f32, device)};
  switch (device.type) {
    case DeviceType::cpu:
      cpu::attention_forward(unit_last_stride(q), unit_last_stride(k), unit_last_stride(v), result.out, result.lse, d);
      break;
    case DeviceType::cuda:
      // cuDNN when DAEDALUS_ATTENTION=cudnn and it takes this problem (kernels/attention_backend.h).
      if (use_cudnn_attention(q, v, starts) && cudnn_attention_forward(q, k, v, result.out, result.lse, scale, causal))
        break;
      DAEDALUS_CUDA_KERNEL("attention", attention_forward(q, k, v, result.out, result.lse, scale, causal, starts));
      break;
  }
  return result;
}

AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                  const Tensor& lse, const Tensor& dout, double scale, bool causal,
                                  const Tensor& doc_start) {
  constexpr std::string_view op = "attention_backward";
  const Device device = common_device(op, {&q, &k, &v, &out, &lse, &dout});
  AttentionDims d = check_qkv(op, q, k, v, scale, causal);
  const Tensor starts = check_doc_start(op, doc_start, d, device);
  if (starts.defined() && device.type == DeviceType::cpu) d.doc_start = starts.data<int64_t>();
  const Shape out_shape{d.B, d.H, d.T, d.Dv}, lse_shape{d.B, d.H, d.T};
  DAEDALUS_CHECK(out.shape() == out_shape, "{}: out {} for q {} and v {}: expected {}", op, shape_str(out.shape()),
                 shape_str(q.shape()), shape_str(v.shape()), shape_str(out_shape));
  DAEDALUS_CHECK(dout.shape() == out_shape, "{}: dout {} and out {}: shapes differ", op, shape_str(dout.shape()),
                 shape_str(out.shape()));
  DAEDALUS_CHECK(lse.shape() == lse_shape, "{}: lse {} for q {}: expected {}", op, shape_str(lse.shape()),
                 shape_str(q.shape()), shape_str(lse_shape));
  check_dtype(op, out, "out", DType::f32);
  check_dtype(op, lse, "lse", DType::f32);
  check_dtype(op, dout, "dout", DType::f32);
  AttentionGrads grads{Tensor::empty(q.shape(), q.dtype(), device), Tensor::empty(k.shape(), k.dtype(), device),
                       Tensor::empty(v.shape(), v.dtype(), device)};
  switch (device.type) {
    case DeviceType::cpu:
      cpu::attention_backward(unit_last_stride(q), unit_last_stride(k), unit_last_stride(v), unit_last_stride(out),
                              lse.contiguous(), unit_last_stride(dout), grads.dq, grads.dk, grads.dv, d);
      break;
    case DeviceType::cuda:
      // The same rule as the forward's; either backward takes either forward's lse (both natural-log).
      if (use_cudnn_attention(q, v, starts) &&
          cudnn_attention_backward(q, k, v, out, lse.contiguous(), dout, grads.dq, grads.dk, grads.dv, scale, causal))
        break;
      DAEDALUS_CUDA_KERNEL(op, attention_backward(q, k, v, out, lse.contiguous(), dout, grads.dq, grads.dk, grads.dv,
                                                  scale, causal, starts));
      break;
  }
  return grads;
}

}  // namespace kernels

}  // namespace daedalus
