// Flash-style causal attention: forward and backward kernels against a double-precision reference
// that builds the full [T, T] softmax, the op through the gradient-check harness, bit-identical
// results for any thread count, memory that never holds a [T, T] matrix, and shape errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/kernels/attention.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/attention.h"
#include "tests/gradcheck.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::kU16;
using testing::kU32;

using testing::all_close;
using testing::error_of;
using testing::mentions;
using testing::random_tensor;

// ---- the reference: full softmax in double --------------------------------------------------------

struct Problem {
  int64_t B = 2, H = 3, T = 7, Dqk = 8, Dv = 8;
  bool causal = true;
  double scale() const { return 1.0 / std::sqrt(double(Dqk)); }
  std::string str() const {
    return "B=" + std::to_string(B) + " H=" + std::to_string(H) + " T=" + std::to_string(T) +
           " Dqk=" + std::to_string(Dqk) + " Dv=" + std::to_string(Dv) + (causal ? " causal" : " full");
  }
};

// Values of [B, H, T, D] tensors in row-major order; p is the full [B, H, T, T] probability matrix.
struct Reference {
  std::vector<double> out, lse, p;
};

Reference reference_forward(const Problem& pr, const std::vector<double>& q, const std::vector<double>& k,
                            const std::vector<double>& v) {
  const int64_t T = pr.T, Dqk = pr.Dqk, Dv = pr.Dv;
  Reference ref{std::vector<double>(size_t(pr.B * pr.H * T * Dv)), std::vector<double>(size_t(pr.B * pr.H * T)),
                std::vector<double>(size_t(pr.B * pr.H * T * T))};
  for (int64_t bh = 0; bh < pr.B * pr.H; ++bh) {
    for (int64_t i = 0; i < T; ++i) {
      const int64_t keys = pr.causal ? i + 1 : T;  // key j is hidden from query i when j > i
      std::vector<double> s(static_cast<size_t>(keys));
      double m = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < Dqk; ++c) dot += q[size_t((bh * T + i) * Dqk + c)] * k[size_t((bh * T + j) * Dqk + c)];
        s[size_t(j)] = pr.scale() * dot;
        m = std::max(m, s[size_t(j)]);
      }
      double sum = 0;
      for (double x : s) sum += std::exp(x - m);
      ref.lse[size_t(bh * T + i)] = m + std::log(sum);
      for (int64_t j = 0; j < keys; ++j) {
        const double p = std::exp(s[size_t(j)] - m) / sum;
        ref.p[size_t((bh * T + i) * T + j)] = p;
        for (int64_t c = 0; c < Dv; ++c) ref.out[size_t((bh * T + i) * Dv + c)] += p * v[size_t((bh * T + j) * Dv + c)];
      }
    }
  }
  return ref;
}

struct ReferenceGrads {
  std::vector<double> dq, dk, dv;
};

// The analytic gradient of out = P·V, P = softmax(scale · Q·Kᵀ + mask), from the reference's P:
//   dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP - rowsum(P ∘ dP)),  dQ = scale · dS·K,  dK = scale · dSᵀ·Q.
ReferenceGrads reference_backward(const Problem& pr, const std::vector<double>& q, const std::vector<double>& k,
                                  const std::vector<double>& v, const Reference& ref, const std::vector<double>& dout) {
  const int64_t T = pr.T, Dqk = pr.Dqk, Dv = pr.Dv;
  ReferenceGrads g{std::vector<double>(q.size()), std::vector<double>(k.size()), std::vector<double>(v.size())};
  for (int64_t bh = 0; bh < pr.B * pr.H; ++bh) {
    for (int64_t i = 0; i < T; ++i) {
      std::vector<double> dp(static_cast<size_t>(T));
      double row = 0;  // Σ_j P_ij dP_ij
      for (int64_t j = 0; j < T; ++j) {
        for (int64_t c = 0; c < Dv; ++c)
          dp[size_t(j)] += dout[size_t((bh * T + i) * Dv + c)] * v[size_t((bh * T + j) * Dv + c)];
        row += ref.p[size_t((bh * T + i) * T + j)] * dp[size_t(j)];
      }
      for (int64_t j = 0; j < T; ++j) {
        const double p = ref.p[size_t((bh * T + i) * T + j)];
        const double ds = p * (dp[size_t(j)] - row);
        for (int64_t c = 0; c < Dv; ++c) g.dv[size_t((bh * T + j) * Dv + c)] += p * dout[size_t((bh * T + i) * Dv + c)];
        for (int64_t c = 0; c < Dqk; ++c) {
          g.dq[size_t((bh * T + i) * Dqk + c)] += pr.scale() * ds * k[size_t((bh * T + j) * Dqk + c)];
          g.dk[size_t((bh * T + j) * Dqk + c)] += pr.scale() * ds * q[size_t((bh * T + i) * Dqk + c)];
        }
      }
    }
  }
  return g;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double e : x) m = std::max(m, std::fabs(e));
  return m;
}

// ---- inputs ---------------------------------------------------------------------------------------

// [B, H, T, D] values; transposed: stored as [B, T, H, D] (a projection's output) and viewed as
// [B, H, T, D] by a transpose, the layout MLA hands to attention.
Tensor heads(const Problem& pr, int64_t D, uint64_t seed, DType dtype, bool transposed, double std = 1.0) {
  if (transposed) return random_tensor({pr.B, pr.T, pr.H, D}, seed, dtype, std).transpose(1, 2);
  return random_tensor({pr.B, pr.H, pr.T, D}, seed, dtype, std);
}

struct Inputs {
  Tensor q, k, v;
};

Inputs inputs_for(const Problem& pr, DType dtype, bool transposed, uint64_t seed) {
  // std 1.5: scores of std ~2 give peaked rows, so the running max moves between key blocks.
  return {heads(pr, pr.Dqk, seed, dtype, transposed, 1.5), heads(pr, pr.Dqk, seed + 1, dtype, transposed, 1.5),
          heads(pr, pr.Dv, seed + 2, dtype, transposed)};
}

std::vector<Problem> ragged_problems() {
  std::vector<Problem> problems;
  for (bool causal : {true, false})
    // Ragged against the kernels' 128-row blocks: inside one block, one row past it, three blocks
    // with a short last one (the running max moves between key blocks).
    for (int64_t T : {1, 7, 65, 129, 300})
      for (int64_t Dqk : {8, 24})
        for (int64_t Dv : {8, 16}) problems.push_back(Problem{2, 3, T, Dqk, Dv, causal});
  return problems;
}

// ---- forward --------------------------------------------------------------------------------------

TEST(Attention, ForwardMatchesDoubleReferenceOnRaggedShapes) {
  // fp32: each score is a Dqk-term fp32 dot product, off by at most Dqk · 2^-24 · scale · Σ|q||k|
  // (~1e-5 for these inputs, ~1e-7 typically: the roundings are random), exp_approx adds 2 ulp
  // and P·V one fp32 sum. Every error is relative to a term P_ij |v_j|, so the output is off by
  // ~1e-6 · Σ_j P_ij |v_j| <= 1e-6 · max|v| (measured worst 6e-7 · max|v|): atol 5e-6 · max|v|,
  // far below what a wrong mask or a missed rescale costs (~1e-1). lse = m + log(l) carries the
  // score error and l's relative error as absolute errors (measured worst 2.5e-6): atol 2e-5.
  // bf16: q, k, v are exact for the reference; P is rounded to bf16 before P·V, so each term is off
  // by at most 2^-8 · P_ij |v_j| and the output by at most 2^-8 · Σ_j P_ij |v_j| <= 2^-8 · max|v|,
  // plus the fp32 errors above: atol 1.1 · 2^-8 · max|v| (measured worst 0.24 · 2^-8 · max|v|).
  // lse never sees a bf16 rounding: the fp32 atol.
  int n = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Problem& pr : ragged_problems()) {
      const bool transposed = n++ % 2 == 0;  // half of the cases read strided views in place
      const Inputs in = inputs_for(pr, dtype, transposed, uint64_t(n) * 10);
      const std::vector<double> vd = in.v.to_doubles();
      const Reference ref = reference_forward(pr, in.q.to_doubles(), in.k.to_doubles(), vd);
      const kernels::AttentionOutput got = kernels::attention_forward(in.q, in.k, in.v, pr.scale(), pr.causal);
      ASSERT_EQ(got.out.shape(), (Shape{pr.B, pr.H, pr.T, pr.Dv})) << pr.str();
      ASSERT_EQ(got.out.dtype(), DType::f32);
      ASSERT_EQ(got.lse.shape(), (Shape{pr.B, pr.H, pr.T})) << pr.str();
      const double out_atol = (dtype == DType::f32 ? 5e-6 : 1.1 * kU16) * max_abs(vd);
      EXPECT_TRUE(all_close(got.out, ref.out, 0, out_atol)) << dtype_name(dtype) << " " << pr.str();
      EXPECT_TRUE(all_close(got.lse, ref.lse, 0, 2e-5)) << dtype_name(dtype) << " " << pr.str();
    }
  }
}

TEST(Attention, LargeScoresStayFiniteAndAccurate) {
  // Scores of std ~30 (|s| up to ~150): the online softmax shifts by the running max, so nothing
  // overflows and rows where one key dominates come out as that key's value. fp32 scores this
  // large carry absolute errors of ~Dqk · 2^-24 · Σ|q||k| ≈ 1e-4, which the exponent turns
  // into relative errors of the same size on each P: atol 1e-3 · max|v| (and 1e-3 on lse).
  const Problem pr{1, 2, 129, 16, 8, true};
  const Inputs in = inputs_for(pr, DType::f32, /*transposed=*/false, 7);
  const Tensor q = random_tensor({pr.B, pr.H, pr.T, pr.Dqk}, 8, DType::f32, 20.0);
  const std::vector<double> vd = in.v.to_doubles();
  const Reference ref = reference_forward(pr, q.to_doubles(), in.k.to_doubles(), vd);
  const kernels::AttentionOutput got = kernels::attention_forward(q, in.k, in.v, pr.scale());
  EXPECT_TRUE(all_close(got.out, ref.out, 0, 1e-3 * max_abs(vd)));
  EXPECT_TRUE(all_close(got.lse, ref.lse, 0, 1e-3));
}

// ---- backward -------------------------------------------------------------------------------------

TEST(Attention, BackwardMatchesDoubleAnalyticGradient) {
  // Tolerances are relative to a gradient's scale, max(1, max|grad|): the terms that cancel in
  // dS = P ∘ (dP - D) are O(1) for these O(1) inputs, so a gradient that is exactly 0 (one key:
  // T = 1) is computed as rounding residue of that size.
  // fp32: every gradient sums products of P (relative error ~1e-6, see the forward) with fp32
  // GEMM results, each off by ~K · 2^-24 of the magnitudes it adds, and dS carries the
  // cancellation in dP - D. Measured worst 1.3e-6 of the scale: 1e-5 leaves a factor of seven.
  // bf16: P, dO and dS are rounded to bf16 before their GEMMs, each up to 2^-8 relative per term.
  // dV sees two roundings (P, dO); dQ and dK see dO's through dP and then dS's (q, k are exact):
  // 4 · 2^-8 of the scale bounds them while the sums of |terms| stay within a few times
  // max|grad|, as for these random inputs (measured worst 1.54 · 2^-8).
  int n = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Problem& pr : ragged_problems()) {
      if (pr.Dqk == 8 && pr.Dv == 16) continue;  // three head-dim pairs per T are enough here
      const bool transposed = n++ % 2 == 1;
      const Inputs in = inputs_for(pr, dtype, transposed, 1000 + uint64_t(n) * 10);
      const Tensor dout = random_tensor({pr.B, pr.H, pr.T, pr.Dv}, 2000 + uint64_t(n));
      const std::vector<double> qd = in.q.to_doubles(), kd = in.k.to_doubles(), vd = in.v.to_doubles();
      const Reference ref = reference_forward(pr, qd, kd, vd);
      const ReferenceGrads want = reference_backward(pr, qd, kd, vd, ref, dout.to_doubles());

      const kernels::AttentionOutput fwd = kernels::attention_forward(in.q, in.k, in.v, pr.scale(), pr.causal);
      const kernels::AttentionGrads got =
          kernels::attention_backward(in.q, in.k, in.v, fwd.out, fwd.lse, dout, pr.scale(), pr.causal);
      ASSERT_EQ(got.dq.dtype(), dtype);
      ASSERT_EQ(got.dk.shape(), (Shape{pr.B, pr.H, pr.T, pr.Dqk}));
      ASSERT_EQ(got.dv.shape(), (Shape{pr.B, pr.H, pr.T, pr.Dv}));
      const double rel = dtype == DType::f32 ? 1e-5 : 4 * kU16;
      auto atol = [&](const std::vector<double>& g) { return rel * std::max(1.0, max_abs(g)); };
      EXPECT_TRUE(all_close(got.dq, want.dq, 0, atol(want.dq))) << dtype_name(dtype) << " dq " << pr.str();
      EXPECT_TRUE(all_close(got.dk, want.dk, 0, atol(want.dk))) << dtype_name(dtype) << " dk " << pr.str();
      EXPECT_TRUE(all_close(got.dv, want.dv, 0, atol(want.dv))) << dtype_name(dtype) << " dv " << pr.str();
    }
  }
}

TEST(Attention, OpPassesGradcheck) {
  // Central differences of the op itself (gradcheck.h), default tolerances: attention is smooth
  // and these outputs are O(1). T = 9 fits in one block; T = 131 crosses a 128-row block boundary,
  // so the online rescaling and both backward passes see more than one block. Transposed: the
  // inputs arrive as non-contiguous views.
  for (bool transposed : {false, true}) {
    for (const Problem& pr :
         {Problem{1, 2, 9, 6, 5, true}, Problem{1, 1, 131, 3, 2, true}, Problem{1, 2, 9, 6, 5, false}}) {
      const Inputs in = inputs_for(pr, DType::f32, /*transposed=*/false, 31);
      testing::GradcheckOptions options;
      options.transposed = transposed;
      EXPECT_TRUE(testing::gradcheck(
          [&](const std::vector<Var>& x) { return ops::attention(x[0], x[1], x[2], pr.scale(), pr.causal); },
          {in.q, in.k, in.v}, options))
          << pr.str() << (transposed ? " transposed" : "");
    }
  }
}

TEST(Attention, OpSavesNoScoreMatrixAndGradsOnlyWhatIsAsked) {
  const Problem pr{1, 2, 130, 8, 4, true};
  const Inputs in = inputs_for(pr, DType::bf16, /*transposed=*/true, 41);
  int64_t saved = 0, largest = 0;
  Var q(in.q, true), k(in.k, false), v(in.v, true);
  Var out;
  {
    SavedTensorHook hook([&](const Tensor& t) {
      ++saved;
      largest = std::max(largest, t.numel());
      return std::function<Tensor()>([t] { return t; });
    });
    out = ops::attention(q, k, v, pr.scale());
  }
  EXPECT_EQ(saved, 5);                              // q, k, v, out, lse
  EXPECT_EQ(largest, pr.B * pr.H * pr.T * pr.Dqk);  // nothing of T x T
  EXPECT_EQ(out.dtype(), DType::f32);
  backward(ops::sum_all(out));
  ASSERT_TRUE(q.grad().defined());
  EXPECT_EQ(q.grad().dtype(), DType::bf16);
  EXPECT_EQ(q.grad().shape(), in.q.shape());
  EXPECT_FALSE(k.grad().defined());
  EXPECT_EQ(v.grad().dtype(), DType::bf16);
}

// ---- determinism and memory -----------------------------------------------------------------------

TEST(Attention, BitIdenticalForAnyThreadCount) {
  // Each thread owns whole output row blocks and sums them in a fixed order: the thread count
  // may change who computes a block, never how.
  const int before = omp_get_max_threads();
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Problem pr{2, 3, 300, 24, 16, true};  // three query and key blocks per head
    const Inputs in = inputs_for(pr, dtype, /*transposed=*/true, 51);
    const Tensor dout = random_tensor({pr.B, pr.H, pr.T, pr.Dv}, 52);
    std::vector<std::vector<uint8_t>> first;
    for (int threads : {1, 2, 4}) {
      omp_set_num_threads(threads);
      const kernels::AttentionOutput fwd = kernels::attention_forward(in.q, in.k, in.v, pr.scale());
      const kernels::AttentionGrads g =
          kernels::attention_backward(in.q, in.k, in.v, fwd.out, fwd.lse, dout, pr.scale());
      const std::vector<std::vector<uint8_t>> now{testing::bytes(fwd.out), testing::bytes(fwd.lse),
                                                  testing::bytes(g.dq), testing::bytes(g.dk), testing::bytes(g.dv)};
      if (first.empty()) {
        first = now;
      } else {
        for (size_t i = 0; i < now.size(); ++i)
          EXPECT_TRUE(now[i] == first[i])
              << dtype_name(dtype) << " output " << i << " differs with " << threads << " threads";
      }
    }
  }
  omp_set_num_threads(before);
}

TEST(Attention, ForwardAndBackwardNeverHoldAScoreMatrix) {
  // T = 2048: one fp32 [T, T] score matrix per head would be 16 MiB. The kernels may hold their
  // outputs (out, lse, dq, dk, dv), the [B, H, T] row terms and per-thread blocks of
  // 128 x 128 scores, nothing that grows with T²: the extra peak must stay under a quarter of one
  // T x T matrix (it is ~0.3 MiB with 2 threads: two 64 KiB blocks per thread and 16 KiB of row terms).
  // The per-thread blocks grow with the thread count, so it is pinned: the bound is about T.
  const int before = omp_get_max_threads();
  omp_set_num_threads(2);
  const Problem pr{1, 2, 2048, 64, 64, true};
  const Inputs in = inputs_for(pr, DType::f32, /*transposed=*/false, 61);
  const Tensor dout = random_tensor({pr.B, pr.H, pr.T, pr.Dv}, 62);
  Allocator& cpu = allocator_for(Device::cpu());
  const int64_t base = cpu.stats().current_bytes;
  cpu.reset_peak();
  int64_t outputs = 0;
  {
    const kernels::AttentionOutput fwd = kernels::attention_forward(in.q, in.k, in.v, pr.scale());
    const kernels::AttentionGrads g = kernels::attention_backward(in.q, in.k, in.v, fwd.out, fwd.lse, dout, pr.scale());
    for (const Tensor* t : {&fwd.out, &fwd.lse, &g.dq, &g.dk, &g.dv}) outputs += int64_t(t->nbytes());
  }
  const int64_t extra = cpu.stats().peak_bytes - base - outputs;
  RecordProperty("peak_extra_bytes", std::to_string(extra));
  std::printf("attention T=%lld: peak beyond inputs and outputs %lld bytes (one T x T fp32 matrix: %lld)\n",
              static_cast<long long>(pr.T), static_cast<long long>(extra), static_cast<long long>(pr.T * pr.T * 4));
  EXPECT_LT(extra, pr.T * pr.T * 4 / 4);
  omp_set_num_threads(before);
}

// ---- errors ---------------------------------------------------------------------------------------

TEST(Attention, ShapeAndDtypeErrorsNameTheOpAndBothShapes) {
  const Tensor q = random_tensor({2, 3, 7, 8}, 1), k = random_tensor({2, 3, 7, 8}, 2),
               v = random_tensor({2, 3, 7, 4}, 3);
  auto forward = [](const Tensor& a, const Tensor& b, const Tensor& c) {
    return [=] { kernels::attention_forward(a, b, c, 0.5); };
  };
  EXPECT_TRUE(mentions(error_of(forward(q, random_tensor({2, 3, 7, 6}, 4), v)),
                       {"attention", "[2, 3, 7, 8]", "[2, 3, 7, 6]", "head dims"}));
  EXPECT_TRUE(mentions(error_of(forward(q, k, random_tensor({2, 3, 5, 4}, 5))),
                       {"attention", "[2, 3, 7, 8]", "[2, 3, 5, 4]", "sequence lengths 7 and 5"}));
  EXPECT_TRUE(mentions(error_of(forward(q, random_tensor({2, 4, 7, 8}, 6), v)),
                       {"attention", "[2, 3, 7, 8]", "[2, 4, 7, 8]", "head counts"}));
  EXPECT_TRUE(mentions(error_of(forward(random_tensor({3, 7, 8}, 7), k, v)),
                       {"attention", "[3, 7, 8]", "[2, 3, 7, 8]", "4-d"}));
  EXPECT_TRUE(
      mentions(error_of(forward(q.to(DType::bf16), k, v)), {"attention", "bf16[2, 3, 7, 8]", "fp32[2, 3, 7, 8]"}));
  EXPECT_TRUE(
      mentions(error_of(forward(Tensor::zeros({2, 3, 7, 8}, DType::i32), k, v)), {"attention", "fp32 or bf16"}));
  // Through the op, and the backward's own operands.
  EXPECT_TRUE(mentions(error_of([&] {
                         ops::attention(Var(q, true), Var(random_tensor({2, 3, 7, 6}, 8)), Var(v), 0.5);
                       }),
                       {"attention", "[2, 3, 7, 8]", "[2, 3, 7, 6]"}));
  const kernels::AttentionOutput fwd = kernels::attention_forward(q, k, v, 0.5);
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::attention_backward(q, k, v, fwd.out, fwd.lse, Tensor::zeros({2, 3, 7, 5}), 0.5);
                       }),
                       {"attention_backward", "[2, 3, 7, 5]", "[2, 3, 7, 4]"}));
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::attention_backward(q, k, v, fwd.out, Tensor::zeros({2, 3, 6}), fwd.out, 0.5);
                       }),
                       {"attention_backward", "[2, 3, 6]", "[2, 3, 7]"}));
}

}  // namespace
}  // namespace daedalus

namespace daedalus {
namespace {

// [B, T] document starts of documents with the given lengths (each row's lengths sum to T).
Tensor doc_starts(const std::vector<std::vector<int64_t>>& lengths, int64_t T) {
  std::vector<int64_t> starts;
  for (const auto& row : lengths) {
    int64_t begin = 0;
    for (int64_t n : row) {
      for (int64_t i = 0; i < n; ++i) starts.push_back(begin);
      begin += n;
    }
    EXPECT_EQ(begin, T);
  }
  return Tensor::from_vector(starts, {int64_t(lengths.size()), T});
}

// Rows [s, e) of batch entry b of a [B, H, T, D] tensor, as a contiguous [1, H, e - s, D] tensor.
Tensor doc_rows(const Tensor& t, int64_t b, int64_t s, int64_t e) {
  return t.slice(0, b, b + 1).slice(2, s, e).contiguous();
}

// The block-diagonal causal mask: every document of a packed row gets exactly what it gets alone.
// Documents cross the 128-row query and key blocks (lengths 1, 140, 159 and 300; one row is a
// single document), so blocks are skipped, partly masked and shared by two documents. The packed
// and the lone runs sum the same products in blocks cut at different places: fp32 rounding of
// sums over <= 300 terms, within 2e-6 relative + 1e-6 absolute here (a wrong mask moves values by
// ~1e-1).
TEST(Attention, DocumentMaskEqualsEachDocumentAlone) {
  const int64_t B = 2, H = 2, T = 300, D = 16;
  const std::vector<std::vector<int64_t>> lengths = {{1, 140, 159}, {300}};
  const Tensor starts = doc_starts(lengths, T);
  const Tensor q = random_tensor({B, H, T, D}, 11, DType::f32, 1.5),
               k = random_tensor({B, H, T, D}, 12, DType::f32, 1.5);
  const Tensor v = random_tensor({B, H, T, D}, 13), dout = random_tensor({B, H, T, D}, 14);
  const double scale = 1.0 / std::sqrt(double(D));
  const kernels::AttentionOutput packed = kernels::attention_forward(q, k, v, scale, true, starts);
  const kernels::AttentionGrads grads =
      kernels::attention_backward(q, k, v, packed.out, packed.lse, dout, scale, true, starts);
  for (int64_t b = 0; b < B; ++b) {
    int64_t s = 0;
    for (int64_t n : lengths[size_t(b)]) {
      const int64_t e = s + n;
      const kernels::AttentionOutput alone =
          kernels::attention_forward(doc_rows(q, b, s, e), doc_rows(k, b, s, e), doc_rows(v, b, s, e), scale, true);
      const kernels::AttentionGrads g =
          kernels::attention_backward(doc_rows(q, b, s, e), doc_rows(k, b, s, e), doc_rows(v, b, s, e), alone.out,
                                      alone.lse, doc_rows(dout, b, s, e), scale, true);
      const std::string what =
          "row " + std::to_string(b) + " document [" + std::to_string(s) + ", " + std::to_string(e) + ")";
      EXPECT_TRUE(all_close(doc_rows(packed.out, b, s, e), alone.out, 2e-6, 1e-6)) << "out " << what;
      EXPECT_TRUE(all_close(packed.lse.slice(0, b, b + 1).slice(2, s, e).contiguous(), alone.lse, 2e-6, 1e-6))
          << "lse " << what;
      EXPECT_TRUE(all_close(doc_rows(grads.dq, b, s, e), g.dq, 2e-6, 1e-6)) << "dq " << what;
      EXPECT_TRUE(all_close(doc_rows(grads.dk, b, s, e), g.dk, 2e-6, 1e-6)) << "dk " << what;
      EXPECT_TRUE(all_close(doc_rows(grads.dv, b, s, e), g.dv, 2e-6, 1e-6)) << "dv " << what;
      s = e;
    }
  }
  // Without the mask the second document of row 0 sees the first: the comparison can fail.
  const kernels::AttentionOutput plain = kernels::attention_forward(q, k, v, scale, true);
  EXPECT_FALSE(all_close(doc_rows(plain.out, 0, 1, 141), doc_rows(packed.out, 0, 1, 141), 2e-6, 1e-6));
  // Bad starts are named.
  EXPECT_TRUE(mentions(error_of([&] {
                         kernels::attention_forward(q, k, v, scale, true, Tensor::zeros({B, T + 1}, DType::i64));
                       }),
                       {"doc_start", "[2, 301]"}));
  Tensor late = starts.clone();
  late.data<int64_t>()[5] = 6;  // after its own row
  EXPECT_TRUE(
      mentions(error_of([&] { kernels::attention_forward(q, k, v, scale, true, late); }), {"doc_start[0, 5] = 6"}));
}

}  // namespace
}  // namespace daedalus
