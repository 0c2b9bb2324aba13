// Expert dispatch and combine across ranks (parallel/dispatch.h), run under mpirun -np 2, 3, 4.
//
// Every rank derives the whole picture deterministically — its token count, its tokens' routing,
// its x from a rank-seeded generator — so each receiver can list exactly which (source rank,
// token) rows it must hold, and each sender can compute its combine output in double as the
// reference. Routing is ragged on purpose: token counts differ per rank, one configuration gives
// the last rank no tokens and routes nothing to rank 0's experts (nor to every third expert).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/check.h"
#include "autograd/generator.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/tape.h"
#include "autograd/tensor.h"
#include "fp8/quantized.h"
#include "parallel/communicator.h"
#include "parallel/dispatch.h"

namespace daedalus {
namespace {

using parallel::DispatchDtype;
using parallel::DispatchPlan;

struct Config {
  std::string name;
  int64_t experts_per_rank_times_p = 12;  // E: divisible by 2, 3 and 4
  int64_t k = 2;
  int64_t d = 256;
  bool ragged = false;  // last rank has no tokens; rank 0's experts and every third expert get none

  int64_t num_experts() const { return experts_per_rank_times_p; }
  int64_t tokens(int src, int p) const {
    if (ragged) return src == p - 1 ? 0 : 7 + 5 * src;
    return 9 + 4 * src;
  }
  // Distinct experts for the k slots of one token (adjacent choices often share a rank).
  int64_t route(int src, int64_t t, int64_t s, int p) const {
    const int64_t e_total = num_experts();
    const auto h = static_cast<int64_t>(src) * 7919 + t * 104729 + 13;
    if (!ragged) return (h + s * 5) % e_total;
    std::vector<int64_t> choices;
    for (int64_t e = e_total / p; e < e_total; ++e)
      if (e % 3 != 1) choices.push_back(e);
    return choices[static_cast<size_t>((h + s) % static_cast<int64_t>(choices.size()))];
  }
  Tensor expert_ids(int src, int p) const {
    const int64_t n = tokens(src, p);
    std::vector<int64_t> ids;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t s = 0; s < k; ++s) ids.push_back(route(src, t, s, p));
    return Tensor::from_vector(ids, {n, k});
  }
};

const Config kBalanced{"balanced", 12, 2, 256, false};
const Config kRagged{"ragged", 12, 3, 200, true};  // D = 200: a partial 1x128 tile

std::shared_ptr<parallel::Communicator> world() { return parallel::mpi_world(); }

Tensor make_x(const Config& c, int src, int p, uint64_t seed) {
  Generator gen(seed * 1000 + static_cast<uint64_t>(src));
  return Tensor::randn({c.tokens(src, p), c.d}, gen);
}

// Gates that sum to exactly 1 with dyadic entries, so Σ_s g_s · v = v exactly in double.
Tensor dyadic_gates(int64_t tokens, int64_t k) {
  std::vector<float> g;
  for (int64_t t = 0; t < tokens; ++t) {
    if (k == 2) {
      const float a = t % 3 == 0 ? 0.5f : (t % 3 == 1 ? 0.25f : 0.125f);
      g.insert(g.end(), {a, 1.0f - a});
    } else {
      DAEDALUS_CHECK(k == 3, "dyadic_gates: k = {} (2 or 3 supported)", k);
      if (t % 2 == 0)
        g.insert(g.end(), {0.5f, 0.25f, 0.25f});
      else
        g.insert(g.end(), {0.125f, 0.375f, 0.5f});
    }
  }
  return Tensor::from_vector(g, {tokens, k});
}

// Expert-order row i of this rank's plan -> its global expert id.
std::vector<int64_t> global_expert_of_rows(const DispatchPlan& plan) {
  std::vector<int64_t> out;
  for (int64_t e = 0; e < plan.experts_per_rank; ++e)
    for (int64_t i = plan.expert_offsets[static_cast<size_t>(e)]; i < plan.expert_offsets[static_cast<size_t>(e) + 1];
         ++i)
      out.push_back(plan.ep_rank * plan.experts_per_rank + e);
  return out;
}

// f: expert e multiplies its rows by (e + 1).
Var scale_by_expert(const DispatchPlan& plan, const Var& h) {
  std::vector<float> scale;
  for (int64_t e : global_expert_of_rows(plan)) scale.push_back(static_cast<float>(e + 1));
  return ops::mul(h, Var(Tensor::from_vector(scale, {static_cast<int64_t>(scale.size()), 1})));
}

int64_t sum_over_ranks(int64_t v) {
  int64_t total = 0;
  DAEDALUS_MPI_CHECK(MPI_Allreduce(&v, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD));
  return total;
}

// ---- routing: every received row at the right rank, for the right local expert, in order ----

class MpiDispatchRouting : public ::testing::TestWithParam<std::tuple<Config, DispatchDtype>> {};

TEST_P(MpiDispatchRouting, EveryRowArrivesAtItsExpertInExpertOrder) {
  const auto& [c, dtype] = GetParam();
  auto ep = world();
  const int p = ep->size();
  const int me = ep->rank();
  // x[t] = (source rank, token, source·1000 + token, 0.5, ...): small integers, exact in fp32 and
  // bf16 (< 256 for the first two columns; the third only checked in fp32).
  const int64_t n = c.tokens(me, p);
  std::vector<float> xv;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < c.d; ++j)
      xv.push_back(j == 0 ? float(me) : j == 1 ? float(t) : j == 2 ? float(me * 1000 + t) : 0.5f);
  const DispatchPlan plan = parallel::plan_dispatch(*ep, c.expert_ids(me, p), c.num_experts());
  const Tensor h = parallel::dispatch(*ep, plan, Var(Tensor::from_vector(xv, {n, c.d})), dtype).value();

  // The rows this rank must hold, in expert order: (local expert, source, token, slot).
  const int64_t local = c.num_experts() / p;
  std::vector<std::tuple<int64_t, int64_t, int64_t>> expected;
  std::vector<int64_t> expected_from(static_cast<size_t>(p), 0);
  for (int64_t le = 0; le < local; ++le)
    for (int src = 0; src < p; ++src)
      for (int64_t t = 0; t < c.tokens(src, p); ++t)
        for (int64_t s = 0; s < c.k; ++s)
          if (c.route(src, t, s, p) == me * local + le) {
            expected.emplace_back(le, src, t);
            ++expected_from[static_cast<size_t>(src)];
          }
  ASSERT_EQ(h.size(0), static_cast<int64_t>(expected.size())) << "rank " << me;
  EXPECT_EQ(plan.recv_counts, expected_from) << "rank " << me;
  const std::vector<int64_t> experts = global_expert_of_rows(plan);
  const std::vector<double> got = h.to_doubles();
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto [le, src, t] = expected[i];
    const size_t row = i * static_cast<size_t>(c.d);
    EXPECT_EQ(experts[i], me * local + le) << "rank " << me << " row " << i;
    EXPECT_EQ(got[row + 0], double(src)) << "rank " << me << " row " << i;
    EXPECT_EQ(got[row + 1], double(t)) << "rank " << me << " row " << i;
    if (dtype == DispatchDtype::fp32) {
      EXPECT_EQ(got[row + 2], double(src * 1000 + t)) << "rank " << me << " row " << i;
    }
  }
  // arrival_local_expert permuted by expert_order is the grouped local expert sequence.
  const std::vector<int64_t> arrival = plan.arrival_local_expert.to_vector<int64_t>();
  const std::vector<int64_t> order = plan.expert_order.to_vector<int64_t>();
  for (size_t i = 0; i < order.size(); ++i)
    EXPECT_EQ(arrival[static_cast<size_t>(order[i])], experts[i] - me * local) << "rank " << me << " row " << i;
}

INSTANTIATE_TEST_SUITE_P(Configs, MpiDispatchRouting,
                         ::testing::Combine(::testing::Values(kBalanced, kRagged),
                                            ::testing::Values(DispatchDtype::fp32, DispatchDtype::bf16)),
                         [](const auto& test_info) {
                           return std::get<0>(test_info.param).name +
                                  (std::get<1>(test_info.param) == DispatchDtype::fp32 ? "_fp32" : "_bf16");
                         });

// ---- round trip with identity experts -------------------------------------------------------

class MpiDispatchRoundTrip : public ::testing::TestWithParam<Config> {};

// fp32: exact. Dispatch copies rows, combine computes Σ_s g_s·row in double with dyadic gates
// summing to 1, so the double sum is x itself and rounds to x.
TEST_P(MpiDispatchRoundTrip, Fp32IsExact) {
  const Config& c = GetParam();
  auto ep = world();
  const int me = ep->rank();
  const Tensor x = make_x(c, me, ep->size(), 1);
  const DispatchPlan plan = parallel::plan_dispatch(*ep, c.expert_ids(me, ep->size()), c.num_experts());
  const Var h = parallel::dispatch(*ep, plan, Var(x), DispatchDtype::fp32);
  const Tensor y = parallel::combine(*ep, plan, h, Var(dyadic_gates(x.size(0), c.k)), DispatchDtype::fp32).value();
  ASSERT_EQ(y.shape(), x.shape());
  EXPECT_EQ(y.to_vector<float>(), x.to_vector<float>()) << "rank " << me;
}

// bf16 both ways: one bf16 rounding. The dispatch rounds x to bf16; the combine re-rounds a value
// that is already bf16 (exact), and the dyadic gated sum reproduces it: y == bf16(x) bit for bit,
// hence |y - x| <= 2^-8 |x| (half a bf16 ulp: 8 significand bits, unit roundoff 2^-8).
TEST_P(MpiDispatchRoundTrip, Bf16IsOneRounding) {
  const Config& c = GetParam();
  auto ep = world();
  const int me = ep->rank();
  const Tensor x = make_x(c, me, ep->size(), 2);
  const DispatchPlan plan = parallel::plan_dispatch(*ep, c.expert_ids(me, ep->size()), c.num_experts());
  const Var h = parallel::dispatch(*ep, plan, Var(x), DispatchDtype::bf16);
  const Tensor y = parallel::combine(*ep, plan, h, Var(dyadic_gates(x.size(0), c.k)), DispatchDtype::bf16).value();
  const std::vector<float> got = y.to_vector<float>();
  const std::vector<float> xs = x.to_vector<float>();
  const std::vector<float> rounded = x.to(DType::bf16).to(DType::f32).to_vector<float>();
  ASSERT_EQ(got.size(), xs.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], rounded[i]) << "rank " << me << " element " << i;
    EXPECT_LE(std::fabs(got[i] - xs[i]), std::ldexp(std::fabs(xs[i]), -8)) << "rank " << me << " element " << i;
  }
}

// fp8 dispatch, fp32 combine: y == dequantize(quantize_1x128(x)) bit for bit (each row's tiles are
// quantized on their own, so the sender's local quantization is the reference). The E4M3 bound
// per element: scaled values |x·scale| <= 448 keep 3 fraction bits, so a normal one (>= 2^-6)
// rounds within 2^-4 relative; below 2^-6 the grid spacing is 2^-9, an absolute error of at most
// 2^-10 in scaled units = 2^-10 · amax_tile / 448 in x's units.
TEST_P(MpiDispatchRoundTrip, Fp8IsWithinE4m3Bound) {
  const Config& c = GetParam();
  auto ep = world();
  const int me = ep->rank();
  const Tensor x = make_x(c, me, ep->size(), 3);
  const DispatchPlan plan = parallel::plan_dispatch(*ep, c.expert_ids(me, ep->size()), c.num_experts());
  const Var h = parallel::dispatch(*ep, plan, Var(x), DispatchDtype::fp8);
  const Tensor y = parallel::combine(*ep, plan, h, Var(dyadic_gates(x.size(0), c.k)), DispatchDtype::fp32).value();
  const std::vector<float> got = y.to_vector<float>();
  const std::vector<float> xs = x.to_vector<float>();
  if (x.size(0) == 0) {
    EXPECT_TRUE(got.empty());
    return;
  }
  const std::vector<float> reference =
      fp8::quantize(x, fp8::Granularity::tile_1x128, fp8::Format::e4m3).dequantize().to_vector<float>();
  const auto d = static_cast<size_t>(c.d);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], reference[i]) << "rank " << me << " element " << i;
    const size_t tile0 = i / d * d + (i % d) / 128 * 128;
    float amax = 0;
    for (size_t j = tile0; j < std::min(tile0 + 128, i / d * d + d); ++j) amax = std::max(amax, std::fabs(xs[j]));
    const double bound = std::ldexp(std::fabs(xs[i]), -4) + std::ldexp(amax / 448.0, -10);
    EXPECT_LE(std::fabs(double(got[i]) - xs[i]), bound * (1 + 1e-6)) << "rank " << me << " element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, MpiDispatchRoundTrip, ::testing::Values(kBalanced, kRagged),
                         [](const auto& test_info) { return test_info.param.name; });

// ---- per-expert computation, forward and gradients ------------------------------------------

class MpiDispatchExperts : public ::testing::TestWithParam<Config> {};

// y[t] = Σ_s g[t,s] (e_s + 1) x[t]; the reference is computed in double from this rank's own
// tokens and their routing (each token's output depends only on its row). The op rounds (e+1)·x
// to fp32 once and the gated sum once: within 2 fp32 roundings of Σ|terms|.
// Gradients of L = Σ w ∘ y: dx[t] = Σ_s g[t,s] (e_s+1) w[t], dg[t,s] = <w[t], (e_s+1) x[t]>, both
// within a few fp32 roundings of the sum of absolute terms (dg's dot product is summed in double).
TEST_P(MpiDispatchExperts, ForwardAndGradientsMatchAnalyticReference) {
  const Config& c = GetParam();
  auto ep = world();
  const int me = ep->rank();
  const int p = ep->size();
  const Tensor xt = make_x(c, me, p, 4);
  const int64_t n = xt.size(0);
  Generator gen(77 + static_cast<uint64_t>(me));
  const Tensor gt = Tensor::rand({n, c.k}, gen, DType::f32, Device::cpu(), 0.1, 1.0);
  const Tensor wt = Tensor::randn({n, c.d}, gen);
  const Var x(xt, /*requires_grad=*/true);
  const Var g(gt, /*requires_grad=*/true);

  const DispatchPlan plan = parallel::plan_dispatch(*ep, c.expert_ids(me, p), c.num_experts());
  const Var y = parallel::combine(
      *ep, plan, scale_by_expert(plan, parallel::dispatch(*ep, plan, x, DispatchDtype::fp32)), g, DispatchDtype::fp32);
  backward(ops::sum_all(ops::mul(Var(wt), y)));

  const std::vector<float> xs = xt.to_vector<float>();
  const std::vector<float> gs = gt.to_vector<float>();
  const std::vector<float> ws = wt.to_vector<float>();
  const std::vector<float> ys = y.value().to_vector<float>();
  const auto d = static_cast<size_t>(c.d);
  const auto k = static_cast<size_t>(c.k);
  const double eps = std::ldexp(1.0, -24);
  if (n == 0) return;  // nothing to compare (the collectives above still ran on this rank)
  const std::vector<float> dx = x.grad().to_vector<float>();
  const std::vector<float> dg = g.grad().to_vector<float>();
  for (size_t t = 0; t < static_cast<size_t>(n); ++t) {
    for (size_t j = 0; j < d; ++j) {
      double y_ref = 0, y_abs = 0, dx_ref = 0, dx_abs = 0;
      for (size_t s = 0; s < k; ++s) {
        const double f = double(c.route(me, int64_t(t), int64_t(s), p) + 1);
        y_ref += gs[t * k + s] * f * xs[t * d + j];
        y_abs += std::fabs(gs[t * k + s] * f * xs[t * d + j]);
        dx_ref += gs[t * k + s] * f * ws[t * d + j];
        dx_abs += std::fabs(gs[t * k + s] * f * ws[t * d + j]);
      }
      ASSERT_NEAR(ys[t * d + j], y_ref, 3 * eps * y_abs + 1e-30) << "rank " << me << " y[" << t << ", " << j << "]";
      ASSERT_NEAR(dx[t * d + j], dx_ref, 4 * eps * dx_abs + 1e-30) << "rank " << me << " dx[" << t << ", " << j << "]";
    }
    for (size_t s = 0; s < k; ++s) {
      const double f = double(c.route(me, int64_t(t), int64_t(s), p) + 1);
      double ref = 0, abs = 0;
      for (size_t j = 0; j < d; ++j) {
        ref += ws[t * d + j] * f * xs[t * d + j];
        abs += std::fabs(ws[t * d + j] * f * xs[t * d + j]);
      }
      EXPECT_NEAR(dg[t * k + s], ref, 3 * eps * abs) << "rank " << me << " dgates[" << t << ", " << s << "]";
    }
  }
}

// FP8 dispatch is straight-through: dx is the same analytic gradient, carried back in bf16. Each
// term rounds to bf16 twice on the wire (g·w in the bf16 combine's backward, then g·(e+1)·w in the
// dispatch's backward), 2^-8 relative each: within 2^-7 of Σ|terms|.
TEST_P(MpiDispatchExperts, Fp8BackwardIsStraightThroughInBf16) {
  const Config& c = GetParam();
  auto ep = world();
  const int me = ep->rank();
  const int p = ep->size();
  const Tensor xt = make_x(c, me, p, 5);
  const int64_t n = xt.size(0);
  Generator gen(91 + static_cast<uint64_t>(me));
  const Tensor gt = Tensor::rand({n, c.k}, gen, DType::f32, Device::cpu(), 0.1, 1.0);
  const Tensor wt = Tensor::randn({n, c.d}, gen);
  const Var x(xt, /*requires_grad=*/true);

  const DispatchPlan plan = parallel::plan_dispatch(*ep, c.expert_ids(me, p), c.num_experts());
  const Var y =
      parallel::combine(*ep, plan, scale_by_expert(plan, parallel::dispatch(*ep, plan, x, DispatchDtype::fp8)), Var(gt),
                        DispatchDtype::bf16);
  backward(ops::sum_all(ops::mul(Var(wt), y)));
  // Backward traffic was bf16: the dispatch backward returned one bf16 row per unique row this
  // rank received from another rank (2·D bytes each).
  int64_t received_remote = 0;
  for (int src = 0; src < p; ++src)
    if (src != me) received_remote += plan.recv_unique_counts[size_t(src)];
  EXPECT_EQ(plan.stats->dispatch_backward_bytes, received_remote * 2 * c.d) << "rank " << me;
  if (n == 0) return;
  const std::vector<float> gs = gt.to_vector<float>();
  const std::vector<float> ws = wt.to_vector<float>();
  const std::vector<float> dx = x.grad().to_vector<float>();
  const auto d = static_cast<size_t>(c.d);
  const auto k = static_cast<size_t>(c.k);
  for (size_t t = 0; t < static_cast<size_t>(n); ++t)
    for (size_t j = 0; j < d; ++j) {
      double ref = 0, abs = 0;
      for (size_t s = 0; s < k; ++s) {
        const double f = double(c.route(me, int64_t(t), int64_t(s), p) + 1);
        ref += gs[t * k + s] * f * ws[t * d + j];
        abs += std::fabs(gs[t * k + s] * f * ws[t * d + j]);
      }
      ASSERT_NEAR(dx[t * d + j], ref, std::ldexp(abs, -7)) << "rank " << me << " dx[" << t << ", " << j << "]";
    }
}

INSTANTIATE_TEST_SUITE_P(Configs, MpiDispatchExperts, ::testing::Values(kBalanced, kRagged),
                         [](const auto& test_info) { return test_info.param.name; });

// ---- traffic statistics ---------------------------------------------------------------------

// Same plan, same rows: FP8 sends D bytes + 4 bytes per 1x128 tile, BF16 2·D bytes per row, so
// the ratio is exactly (D + 4·ceil(D/128)) / (2·D): 0.515625 at D = 256, 0.52 at D = 200 —
// half, plus the scale overhead of 4 bytes per (possibly partial) 1x128 tile: 1/64 of BF16's bytes
// when D is a multiple of 128, more for a partial last tile.
TEST(MpiDispatchStats, Fp8DispatchSendsAboutHalfTheBytesOfBf16) {
  auto ep = world();
  const int me = ep->rank();
  const int p = ep->size();
  for (const Config& c : {kBalanced, kRagged}) {
    const DispatchPlan plan = parallel::plan_dispatch(*ep, c.expert_ids(me, p), c.num_experts());
    const Var x(make_x(c, me, p, 6));
    parallel::dispatch(*ep, plan, x, DispatchDtype::bf16);
    const int64_t bf16_bytes = sum_over_ranks(plan.stats->dispatch_bytes);
    parallel::dispatch(*ep, plan, x, DispatchDtype::fp8);
    const int64_t fp8_bytes = sum_over_ranks(plan.stats->dispatch_bytes) - bf16_bytes;
    const Var h = parallel::dispatch(*ep, plan, x, DispatchDtype::fp32);
    const int64_t fp32_bytes = sum_over_ranks(plan.stats->dispatch_bytes) - bf16_bytes - fp8_bytes;
    parallel::combine(*ep, plan, h, Var(dyadic_gates(x.shape()[0], c.k)), DispatchDtype::bf16);
    const int64_t combine_bytes = sum_over_ranks(plan.stats->combine_bytes);

    // Rows crossing to another rank, counted independently from the global routing: dispatch sends
    // a token once per other destination rank, combine returns one row per remote (token, slot).
    const int64_t local = c.num_experts() / p;
    int64_t remote_rows = 0, remote_pairs = 0;
    for (int src = 0; src < p; ++src)
      for (int64_t t = 0; t < c.tokens(src, p); ++t) {
        std::set<int64_t> destinations;
        for (int64_t s = 0; s < c.k; ++s) {
          const int64_t dst = c.route(src, t, s, p) / local;
          if (dst != src) {
            destinations.insert(dst);
            ++remote_pairs;
          }
        }
        remote_rows += int64_t(destinations.size());
      }
    ASSERT_GT(remote_rows, 0) << c.name;
    EXPECT_EQ(bf16_bytes, remote_rows * 2 * c.d) << c.name;
    EXPECT_EQ(fp32_bytes, 2 * bf16_bytes) << c.name;
    EXPECT_EQ(combine_bytes, remote_pairs * 2 * c.d) << c.name;  // one bf16 row per remote pair
    if (me == 0)
      std::printf("[ dispatch ] %s np=%d: %lld remote pairs sent as %lld rows (once per destination rank)\n",
                  c.name.c_str(), p, static_cast<long long>(remote_pairs), static_cast<long long>(remote_rows));
    const int64_t tiles = (c.d + 127) / 128;
    EXPECT_EQ(fp8_bytes, remote_rows * (c.d + 4 * tiles)) << c.name;
    const double ratio = double(fp8_bytes) / double(bf16_bytes);
    EXPECT_DOUBLE_EQ(ratio, double(c.d + 4 * tiles) / double(2 * c.d)) << c.name;
    EXPECT_GE(ratio, 0.5) << c.name;
    EXPECT_LE(ratio, 0.5 + 2.0 * double(tiles) / double(c.d) + 1e-12) << c.name;  // 0.5 + 1/64 for whole tiles
    if (me == 0)
      std::printf("[ dispatch ] %s D=%lld np=%d: fp8 %lld B, bf16 %lld B, fp32 %lld B, fp8/bf16 = %.6f\n",
                  c.name.c_str(), static_cast<long long>(c.d), p, static_cast<long long>(fp8_bytes),
                  static_cast<long long>(bf16_bytes), static_cast<long long>(fp32_bytes), ratio);
  }
}

// ---- errors ---------------------------------------------------------------------------------

TEST(MpiDispatchErrors, BadRoutingAndFp8CombineAreInputErrors) {
  auto ep = world();
  const int p = ep->size();
  // Checked before any collective, on every rank alike.
  EXPECT_THROW(parallel::plan_dispatch(*ep, Tensor::from_vector(std::vector<int64_t>{0, 12}, {1, 2}), 12), InputError);
  EXPECT_THROW(parallel::plan_dispatch(*ep, Tensor::from_vector(std::vector<int64_t>{0, 1}, {1, 2}), 4 * p + 1),
               InputError);
  const DispatchPlan plan =
      parallel::plan_dispatch(*ep, Tensor::from_vector(std::vector<int64_t>{0, 1}, {1, 2}), 4 * p);
  const Var h = parallel::dispatch(*ep, plan, Var(Tensor::ones({1, 8})), DispatchDtype::fp32);
  EXPECT_THROW(parallel::combine(*ep, plan, h, Var(Tensor::full({1, 2}, 0.5)), DispatchDtype::fp8), InputError);
}

}  // namespace
}  // namespace daedalus
