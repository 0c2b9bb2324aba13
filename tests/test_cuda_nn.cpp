// CUDA twins of the layer kernels (RMSNorm, RoPE, softmax, activations, embedding, cross-entropy)
// against their CPU references, fp32 and bf16, on ragged shapes and strided views. Skips with a
// reason on machines without a CUDA device; scripts/gpu-check runs it on one.
//
// Tolerances, from what may legitimately differ between the two devices:
//  - Sums in double in another order (the GPU's fixed-tree block reductions): differences near
//    2^-50 relative, invisible after the fp32 rounding except at a rounding boundary -> one fp32
//    ulp, rtol 1e-6 covers it.
//  - expf on the GPU is within 2 ulp of the CPU's; softmax and cross-entropy compose a few such
//    steps: rtol 1e-6 (~8 ulp). Results that are differences (log-softmax near 0, p - 1 at the
//    target, 1 + x (1 - s) near silu's minimum) also get an absolute term of the size of those
//    ulps at the scale of the operands, stated at each check.
//  - bf16: the float results above may straddle a bf16 rounding boundary, one bf16 step, which is
//    at most 2^-7 relative (kBf16Step).
//  - Operations with the same arithmetic in the same order (RoPE with the CPU's table, the
//    embedding gather, embedding backward's ordered double sums) must match bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/kernels/activation.h"
#include "autograd/kernels/cross_entropy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/embedding.h"
#include "autograd/kernels/rmsnorm.h"
#include "autograd/kernels/rope.h"
#include "autograd/kernels/softmax.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::all_close;
using testing::bytes;
using testing::kRaggedSizes;
using testing::random_tensor;
using testing::random_view;

constexpr double kBf16Step = 0x1p-7;  // one bf16 step relative to the value, at most

// rtol for a float result that differs from the CPU's by a few fp32 ulps (rtol_f32), by dtype.
double rtol_for(DType d, double rtol_f32) { return d == DType::f32 ? rtol_f32 : kBf16Step; }

Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

class CudaNn : public testing::CudaTest {};

// ---- RMSNorm --------------------------------------------------------------------------------------

TEST_F(CudaNn, RmsNormForwardMatchesCpu) {
  for (DType d : {DType::f32, DType::bf16}) {
    for (DType wd : {DType::f32, DType::bf16}) {
      for (int64_t n : kRaggedSizes) {
        for (int layout : {0, 1, 2}) {
          const uint64_t seed = 100 + uint64_t(n) * 3 + uint64_t(layout);
          const Tensor x = random_view(37, n, seed, d, layout, 2.0);
          const Tensor w = random_tensor({n}, seed + 1, wd);
          const kernels::RmsNormOutput cpu = kernels::rmsnorm(x, w, 1e-6);
          const kernels::RmsNormOutput out = kernels::rmsnorm(x.to(gpu), w.to(gpu), 1e-6);
          ASSERT_EQ(out.y.device(), gpu);
          // rstd: the sum of squares in double in another order, then one fp32 rounding.
          EXPECT_TRUE(all_close(host(out.rstd), cpu.rstd, 1e-6, 0))
              << dtype_name(d) << " w " << dtype_name(wd) << " n=" << n << " layout " << layout;
          // y = x * rstd * w in float: the same products, given rstd within one ulp.
          EXPECT_TRUE(all_close(host(out.y), cpu.y, rtol_for(d, 1e-6), 0))
              << dtype_name(d) << " w " << dtype_name(wd) << " n=" << n << " layout " << layout;
        }
      }
    }
  }
}

TEST_F(CudaNn, RmsNormBackwardMatchesCpu) {
  // 130 rows: more than the 64 blocks of the dweight reduction, so several rows per block.
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : kRaggedSizes) {
      for (int layout : {0, 1}) {
        const uint64_t seed = 200 + uint64_t(n) * 3 + uint64_t(layout);
        const Tensor x = random_view(130, n, seed, d, layout);
        const Tensor dy = random_view(130, n, seed + 1, d, layout);
        const Tensor w = random_tensor({n}, seed + 2, DType::f32);
        const Tensor rstd = kernels::rmsnorm(x, w, 1e-6).rstd;  // the same rstd on both devices
        const kernels::RmsNormGrads cpu = kernels::rmsnorm_backward(dy, x, w, rstd);
        const kernels::RmsNormGrads out = kernels::rmsnorm_backward(dy.to(gpu), x.to(gpu), w.to(gpu), rstd.to(gpu));
        ASSERT_EQ(out.dx.device(), gpu);
        // dx: the row's dot product in double in another order; the two terms of dx may cancel, so
        // an absolute term of 2^-40 (far above the double reordering error, far below an fp32 ulp
        // of the terms, which are O(1)).
        EXPECT_TRUE(all_close(host(out.dx), cpu.dx, rtol_for(d, 1e-6), 0x1p-40))
            << dtype_name(d) << " n=" << n << " layout " << layout;
        // dweight: the CPU's block split and order, FMAs excluded: expected bit-identical; rtol
        // 1e-6 leaves room for one fp32 ulp should a compiler fuse differently on either side.
        EXPECT_TRUE(all_close(host(out.dweight), cpu.dweight, 1e-6, 0)) << dtype_name(d) << " n=" << n;
      }
    }
  }
}

TEST_F(CudaNn, RmsNormBackwardWithFewRowsAndNoRows) {
  const Tensor x = random_tensor({3, 65}, 1), dy = random_tensor({3, 65}, 2), w = random_tensor({65}, 3);
  const Tensor rstd = kernels::rmsnorm(x, w, 1e-6).rstd;
  const kernels::RmsNormGrads cpu = kernels::rmsnorm_backward(dy, x, w, rstd);
  const kernels::RmsNormGrads out = kernels::rmsnorm_backward(dy.to(gpu), x.to(gpu), w.to(gpu), rstd.to(gpu));
  EXPECT_TRUE(all_close(host(out.dweight), cpu.dweight, 1e-6, 0));
  const Tensor empty = Tensor::zeros({0, 65}, DType::f32, gpu);
  const kernels::RmsNormGrads none =
      kernels::rmsnorm_backward(empty, empty, w.to(gpu), Tensor::zeros({0}, DType::f32, gpu));
  EXPECT_TRUE(all_close(host(none.dweight), std::vector<double>(65, 0.0), 0, 0));
}

// ---- RoPE ---------------------------------------------------------------------------------------

TEST_F(CudaNn, RopeMatchesCpuForBothLayoutsAndDirections) {
  // The GPU gets the CPU's cos/sin table and computes the same two float products and one add per
  // output, so the results are expected bit-identical; the check allows 2^-22 relative plus 2^-22
  // absolute (4 fp32 ulps of the O(1) products), which would still admit an FMA on either side
  // (a CPU build with -march=native) and nothing more; bf16: one bf16 step, as everywhere.
  const Tensor positions64 = Tensor::from_values({0, 7, 100, 4096, 12345}, {5}, DType::i64);
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : kRaggedSizes) {
      const int64_t dim = n + 1;  // even
      // x [B=2, T=5, H=3, D] as a transposed view of [2, 3, 5, D]: strided.
      const Tensor x = random_tensor({2, 3, 5, dim}, 300 + uint64_t(n), d).transpose(1, 2);
      for (DType pd : {DType::i32, DType::i64}) {
        const Tensor pos = positions64.to(pd);
        for (auto layout : {kernels::RopeLayout::interleaved, kernels::RopeLayout::half}) {
          for (bool inverse : {false, true}) {
            const Tensor cpu = kernels::rope(x, pos, 10000.0, layout, inverse);
            const Tensor out = kernels::rope(x.to(gpu), pos.to(gpu), 10000.0, layout, inverse);
            ASSERT_EQ(out.device(), gpu);
            EXPECT_TRUE(all_close(host(out), cpu, rtol_for(d, 0x1p-22), 0x1p-22))
                << dtype_name(d) << " D=" << dim << " layout " << int(layout) << " inverse " << inverse;
          }
        }
      }
    }
  }
}

// The CUDA table is uploaded once per (device, positions, theta, D) and cached: repeated calls give
// the same bits, and a call whose table differs in any of those (other positions of the same
// length, another length, theta or D) gets its own table, checked against the CPU like above.
TEST_F(CudaNn, RopeTableCacheIsKeyedOnEverythingTheTableDependsOn) {
  const Tensor x = random_tensor({2, 9, 3, 16}, 310);
  const auto check = [&](const Tensor& pos, double theta, int64_t dim, const std::string& what) {
    const Tensor xs = x.slice(1, 0, pos.size(0)).slice(3, 0, dim).contiguous();
    const Tensor cpu = kernels::rope(xs, pos, theta, kernels::RopeLayout::interleaved);
    // Host positions (no copy) and device positions give the same table, hence the same bits.
    const Tensor from_host = kernels::rope(xs.to(gpu), pos, theta, kernels::RopeLayout::interleaved);
    const Tensor from_device = kernels::rope(xs.to(gpu), pos.to(gpu), theta, kernels::RopeLayout::interleaved);
    const Tensor again = kernels::rope(xs.to(gpu), pos, theta, kernels::RopeLayout::interleaved);
    ASSERT_EQ(from_host.device(), gpu);
    EXPECT_TRUE(all_close(host(from_host), cpu, 0x1p-22, 0x1p-22)) << what;  // tolerance: see the test above
    EXPECT_EQ(testing::bytes(host(from_device)), testing::bytes(host(from_host))) << what;
    EXPECT_EQ(testing::bytes(host(again)), testing::bytes(host(from_host))) << what;
  };
  const auto range = [](int64_t first, int64_t n) {
    std::vector<double> v;
    for (int64_t i = 0; i < n; ++i) v.push_back(double(first + i));
    return Tensor::from_values(v, {n}, DType::i64);
  };
  for (int round = 0; round < 2; ++round) {  // the second round hits the cache for every case
    check(range(0, 5), 10000.0, 16, "T=5");
    check(range(0, 9), 10000.0, 16, "T=9");
    check(range(0, 7), 10000.0, 16, "T=7");
    check(range(3, 5), 10000.0, 16, "T=5 from position 3");
    check(range(0, 5), 500.0, 16, "theta 500");
    check(range(0, 5), 10000.0, 8, "D=8");
  }
  // More distinct tables than the cache keeps: the evicted ones are rebuilt, still right.
  for (int64_t first = 0; first < 12; ++first) check(range(first, 4), 10000.0, 16, "eviction");
  check(range(0, 5), 10000.0, 16, "T=5 after eviction");
}

// ---- softmax ------------------------------------------------------------------------------------

TEST_F(CudaNn, SoftmaxAndLogSoftmaxMatchCpu) {
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : kRaggedSizes) {
      for (int layout : {0, 1, 2}) {
        const Tensor x = random_view(9, n, 400 + uint64_t(n) * 3 + uint64_t(layout), d, layout, 3.0);
        const Tensor xg = x.to(gpu);
        // exp terms within 2 ulp of the CPU's, the sum in another order: rtol 1e-6 for softmax;
        // the result can be as small as exp(-25) here, still relative.
        EXPECT_TRUE(all_close(host(kernels::softmax(xg)), kernels::softmax(x), rtol_for(d, 1e-6), 0))
            << dtype_name(d) << " n=" << n << " layout " << layout;
        // log_softmax = x - lse: lse carries ~1e-7 absolute error (a log of a sum known to a few
        // ulps), which is large relative to entries near 0: atol 1e-6.
        EXPECT_TRUE(all_close(host(kernels::log_softmax(xg)), kernels::log_softmax(x), rtol_for(d, 1e-6), 1e-6))
            << dtype_name(d) << " n=" << n << " layout " << layout;
      }
    }
  }
}

TEST_F(CudaNn, SoftmaxHandlesLargeInfiniteAndNanRowsLikeCpu) {
  // Row 0: large finite logits; row 1: all -inf (NaN, as on the CPU); row 2: one NaN; row 3: one
  // -inf among finite values (probability exactly 0, log-probability -inf).
  const double inf = INFINITY, nan = NAN;
  const std::vector<double> v = {1000, 1001, 999, 1000.5, -inf, -inf, -inf, -inf, 1, nan, 2, 3, 0.5, -inf, 2, -1};
  for (DType d : {DType::f32, DType::bf16}) {
    const Tensor x = Tensor::from_values(v, {4, 4}, d);
    EXPECT_TRUE(all_close(host(kernels::softmax(x.to(gpu))), kernels::softmax(x), rtol_for(d, 1e-6), 0));
    EXPECT_TRUE(all_close(host(kernels::log_softmax(x.to(gpu))), kernels::log_softmax(x), rtol_for(d, 1e-6), 1e-6));
  }
}

TEST_F(CudaNn, SoftmaxBackwardsMatchCpu) {
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : kRaggedSizes) {
      for (int layout : {0, 1}) {
        const uint64_t seed = 500 + uint64_t(n) * 3 + uint64_t(layout);
        const Tensor x = random_view(9, n, seed, d, layout, 2.0);
        const Tensor dy = random_view(9, n, seed + 1, d, layout);
        // The same y on both devices; only the row sum's order differs (double, products exact),
        // then one rounding from the same double expression. y (dy - dot) may cancel: atol 2^-40,
        // far above the double reordering error.
        const Tensor y = kernels::softmax(x);
        EXPECT_TRUE(all_close(host(kernels::softmax_backward(y.to(gpu), dy.to(gpu))), kernels::softmax_backward(y, dy),
                              rtol_for(d, 1e-6), 0x1p-40))
            << dtype_name(d) << " n=" << n << " layout " << layout;
        // dy - exp(y) sum: exp in double (within an ulp of the CPU's double exp), same cancellation.
        const Tensor ly = kernels::log_softmax(x);
        EXPECT_TRUE(all_close(host(kernels::log_softmax_backward(ly.to(gpu), dy.to(gpu))),
                              kernels::log_softmax_backward(ly, dy), rtol_for(d, 1e-6), 0x1p-40))
            << dtype_name(d) << " n=" << n << " layout " << layout;
      }
    }
  }
}

// ---- activations --------------------------------------------------------------------------------

TEST_F(CudaNn, ActivationBackwardsAndSwigluMatchCpu) {
  // Inputs of std 4 reach the saturated tails (|x| up to ~16) and silu's minimum near -1.28, where
  // 1 + x (1 - s) cancels: an expf difference of 2 ulp there is ~2.4e-7 absolute before the
  // multiplication by s and dy (|dy| < ~5): atol 2e-6. Elsewhere a few expf ulps: rtol 1e-6.
  constexpr double kAtol = 2e-6;
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : kRaggedSizes) {
      const uint64_t seed = 600 + uint64_t(n);
      // Transposed views: [n, 5] read through strides.
      const Tensor a = random_tensor({5, n}, seed, d, 4.0).t();
      const Tensor b = random_tensor({5, n}, seed + 1, d).t();
      const Tensor dy = random_tensor({n, 5}, seed + 2, d);
      const Tensor ag = a.to(gpu), bg = b.to(gpu), dyg = dy.to(gpu);
      const double rtol = rtol_for(d, 1e-6);
      EXPECT_TRUE(all_close(host(kernels::silu_backward(ag, dyg)), kernels::silu_backward(a, dy), rtol, kAtol))
          << dtype_name(d) << " n=" << n;
      const Tensor s = kernels::unary(kernels::UnaryOp::sigmoid, a);
      EXPECT_TRUE(
          all_close(host(kernels::sigmoid_backward(s.to(gpu), dyg)), kernels::sigmoid_backward(s, dy), rtol, kAtol))
          << dtype_name(d) << " n=" << n;
      EXPECT_TRUE(all_close(host(kernels::swiglu(ag, bg)), kernels::swiglu(a, b), rtol, kAtol))
          << dtype_name(d) << " n=" << n;
      const kernels::SwigluGrads cpu = kernels::swiglu_backward(a, b, dy);
      const kernels::SwigluGrads out = kernels::swiglu_backward(ag, bg, dyg);
      ASSERT_EQ(out.dgate.device(), gpu);
      EXPECT_TRUE(all_close(host(out.dgate), cpu.dgate, rtol, kAtol)) << dtype_name(d) << " n=" << n;
      EXPECT_TRUE(all_close(host(out.dup), cpu.dup, rtol, kAtol)) << dtype_name(d) << " n=" << n;
    }
  }
}

// ---- embedding ----------------------------------------------------------------------------------

// ids [3, m] with values (i * 37 + 11) % vocab: repeats once m * 3 > vocab.
Tensor repeating_ids(int64_t m, int64_t vocab, DType dtype) {
  std::vector<double> v(static_cast<size_t>(3 * m));
  for (size_t i = 0; i < v.size(); ++i) v[i] = double((int64_t(i) * 37 + 11) % vocab);
  return Tensor::from_values(v, {3, m}, dtype);
}

TEST_F(CudaNn, EmbeddingForwardIsAnExactGather) {
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : kRaggedSizes) {
      // weight [V = 50, D = n] as a transposed view; ids [3, 7] and a transposed [7, 3] view.
      const Tensor w = random_tensor({n, 50}, 700 + uint64_t(n), d).t();
      for (DType id : {DType::i32, DType::i64}) {
        const Tensor ids = repeating_ids(7, 50, id);
        for (const Tensor& idx : {ids, ids.t()}) {
          const Tensor cpu = kernels::embedding(w, idx);
          const Tensor out = kernels::embedding(w.to(gpu), idx.to(gpu));
          ASSERT_EQ(out.device(), gpu);
          ASSERT_EQ(out.shape(), cpu.shape());
          EXPECT_EQ(bytes(out), bytes(cpu)) << dtype_name(d) << " n=" << n;
        }
      }
    }
  }
}

TEST_F(CudaNn, EmbeddingBackwardIsBitIdenticalWithRepeatedIds) {
  // Sources ordered as on the CPU (increasing position per vocabulary row) and summed in double
  // from 0: bit-identical. cancelling_sources makes the order visible: each row gets +2^60 first
  // and -2^60 last, which absorbs the normal value between them (0 in the CPU's order); any other
  // order would keep it.
  const int64_t vocab = 40;
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : kRaggedSizes) {
      for (DType id : {DType::i32, DType::i64}) {
        const int64_t m = 3 * 31;  // positions; ids cover 31 of the 40 rows, several times each
        const Tensor ids = testing::cyclic_index(m, 31, id).view({3, 31});
        // Plain normal rows (values to compare), and cancelling ones (the order made visible).
        for (const Tensor& dy_rows : {random_tensor({m, n}, 800 + uint64_t(n), d),
                                      testing::cancelling_sources(m, n, 31, 850 + uint64_t(n), d)}) {
          for (bool transposed : {false, true}) {
            // dy [3, 31, n] contiguous, or the same values through a strided (transposed) layout.
            const Tensor dy = transposed ? dy_rows.t().contiguous().t().view({3, 31, n}) : dy_rows.view({3, 31, n});
            const Tensor cpu = kernels::embedding_backward(dy, ids, vocab);
            const Tensor out = kernels::embedding_backward(dy.to(gpu), ids.to(gpu), vocab);
            ASSERT_EQ(out.device(), gpu);
            EXPECT_EQ(bytes(out), bytes(cpu)) << dtype_name(d) << " n=" << n << " transposed " << transposed;
            EXPECT_TRUE(all_close(host(out), cpu, 0, 0)) << dtype_name(d) << " n=" << n;
            // Rows 31..39 never occur: zero.
            EXPECT_TRUE(all_close(host(out).slice(0, 31, vocab), std::vector<double>(size_t(9 * n), 0.0), 0, 0));
          }
        }
      }
    }
  }
}

TEST_F(CudaNn, EmbeddingRangeErrorsNameThePositionForDeviceIds) {
  const Tensor w = random_tensor({10, 4}, 1).to(gpu);
  const Tensor ids = Tensor::from_values({1, 2, 10, 3}, {2, 2}, DType::i64).to(gpu);
  // The forward's check is deferred: it surfaces at the next synchronization point.
  testing::expect_error(
      [&] {
        kernels::embedding(w, ids);
        synchronize(gpu);
      },
      {"embedding: ids[1, 0] = 10 is out of range [0, 10) (weight [10, 4])"});
  testing::expect_error(
      [&] {
        kernels::embedding_backward(Tensor::zeros({2, 2, 4}, DType::f32, gpu), ids, 10);
      },
      {"embedding_backward: ids[1, 0] = 10 is out of range [0, 10) (vocab_size 10)"});
  EXPECT_NO_THROW(synchronize(gpu));  // reported once
  const Tensor good = Tensor::from_values({1, 2, 9, 3}, {2, 2}, DType::i64);
  EXPECT_EQ(testing::bytes(host(kernels::embedding(w, good.to(gpu)))),
            testing::bytes(kernels::embedding(host(w), good)));
}

// ---- cross-entropy ------------------------------------------------------------------------------

// targets [rows]: (r * 7 + 3) % vocab, with every fifth row ignore_index.
Tensor ce_targets(int64_t rows, int64_t vocab, int64_t ignore_index, DType dtype) {
  std::vector<double> v(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) v[size_t(r)] = r % 5 == 2 ? double(ignore_index) : double((r * 7 + 3) % vocab);
  return Tensor::from_values(v, {rows}, dtype);
}

TEST_F(CudaNn, CrossEntropyForwardAndBackwardMatchCpu) {
  const int64_t rows = 23;
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t vocab : kRaggedSizes) {
      for (int layout : {0, 1}) {
        for (DType td : {DType::i32, DType::i64}) {
          for (int64_t ignore : {int64_t(-100), int64_t(0)}) {  // 0: a class index can be the ignored one
            const Tensor logits =
                random_view(rows, vocab, 900 + uint64_t(vocab) * 3 + uint64_t(layout), d, layout, 3.0);
            const Tensor targets = ce_targets(rows, vocab, ignore, td);
            const kernels::CrossEntropyOutput cpu = kernels::cross_entropy(logits, targets, ignore);
            const kernels::CrossEntropyOutput out = kernels::cross_entropy(logits.to(gpu), targets.to(gpu), ignore);
            const std::string what = std::string(dtype_name(d)) + " V=" + std::to_string(vocab) + " layout " +
                                     std::to_string(layout) + " ignore " + std::to_string(ignore);
            ASSERT_EQ(out.loss.device(), gpu);
            EXPECT_EQ(out.valid, cpu.valid) << what;
            // lse = m + log(sum): ~2^-23 absolute from the exp sum, on values of a few units.
            EXPECT_TRUE(all_close(host(out.lse), cpu.lse, 1e-6, 1e-6)) << what;
            // The mean of (lse - target logit): the same absolute error per row, averaged.
            EXPECT_TRUE(all_close(host(out.loss), cpu.loss, 1e-6, 1e-6)) << what;

            // Backward from the same lse on both devices. p = exp(x - lse) within 2 ulp; at the
            // target p - 1 may cancel: atol 2^-21 * scale. A global `valid` (e.g. over ranks) too.
            for (int64_t valid : {cpu.valid, int64_t(1000)}) {
              const double dloss = 1.7, scale = valid > 0 ? dloss / double(valid) : 0.0;
              const Tensor dcpu = kernels::cross_entropy_backward(logits, targets, cpu.lse, dloss, ignore, valid);
              const Tensor dgpu = kernels::cross_entropy_backward(logits.to(gpu), targets.to(gpu), cpu.lse.to(gpu),
                                                                  dloss, ignore, valid);
              ASSERT_EQ(dgpu.device(), gpu);
              EXPECT_TRUE(all_close(host(dgpu), dcpu, rtol_for(d, 1e-6), 0x1p-21 * scale)) << what;
              // Ignored rows are exactly zero.
              const Tensor dh = host(dgpu);
              EXPECT_TRUE(all_close(dh.select(0, 2), std::vector<double>(size_t(vocab), 0.0), 0, 0)) << what;
            }
          }
        }
      }
    }
  }
}

TEST_F(CudaNn, CrossEntropyWithNoValidRowsOrNoRowsIsZero) {
  const Tensor logits = random_tensor({4, 65}, 5);
  const Tensor all_ignored = Tensor::from_values({-100, -100, -100, -100}, {4}, DType::i64);
  const kernels::CrossEntropyOutput out = kernels::cross_entropy(logits.to(gpu), all_ignored.to(gpu));
  EXPECT_EQ(out.valid, 0);
  EXPECT_EQ(host(out.loss).item(), 0.0);
  EXPECT_TRUE(all_close(host(out.lse), kernels::cross_entropy(logits, all_ignored).lse, 1e-6, 1e-6));
  const Tensor d = kernels::cross_entropy_backward(logits.to(gpu), all_ignored.to(gpu), out.lse, 1.0, -100, 0);
  EXPECT_TRUE(all_close(host(d), std::vector<double>(4 * 65, 0.0), 0, 0));

  const kernels::CrossEntropyOutput none =
      kernels::cross_entropy(Tensor::zeros({0, 65}, DType::f32, gpu), Tensor::zeros({0}, DType::i64, gpu));
  EXPECT_EQ(none.valid, 0);
  EXPECT_EQ(host(none.loss).item(), 0.0);
}

TEST_F(CudaNn, CrossEntropyTargetErrorsForDeviceTargets) {
  const Tensor logits = random_tensor({3, 10}, 6).to(gpu);
  const Tensor targets = Tensor::from_values({1, 10, 2}, {3}, DType::i32).to(gpu);
  testing::expect_error([&] { kernels::cross_entropy(logits, targets); },
                        {"cross_entropy: target 10 at row 1 is outside [0, V) with V = 10 (ignore_index is -100)"});
  // The backward's check is deferred (no host copy of the targets): it surfaces at the next
  // synchronization, with the CPU's message, and is reported once.
  const Tensor lse = Tensor::zeros({3}, DType::f32, gpu);
  testing::expect_error(
      [&] {
        kernels::cross_entropy_backward(logits, targets, lse, 1.0, -100, 2);
        synchronize(gpu);
      },
      {"cross_entropy_backward: target 10 at row 1 is outside [0, V) with V = 10 (ignore_index is -100)"});
  EXPECT_NO_THROW(synchronize(gpu));
  const Tensor ok = Tensor::from_values({1, -100, 9}, {3}, DType::i64).to(gpu);
  EXPECT_NO_THROW(host(kernels::cross_entropy_backward(logits, ok, lse, 1.0, -100, 2)));
}

}  // namespace
}  // namespace daedalus
