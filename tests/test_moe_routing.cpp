// MoE routing kernels (autograd/kernels/moe_routing.h) against independent references:
//   - group_limited_topk (the host emulation of the CUDA kernel, one shared per-token routine)
//     against model::select_experts, the router's reference (partial sorts in double), bit for bit
//     on random scores and on tie-heavy ones (scores and biases on a coarse grid, so that choices,
//     group scores and whole groups tie);
//   - order_by_expert against the capacity rule written out per expert (stable sort by gate
//     descending) and the stable grouping of the kept pairs;
//   - expert_counts_per_sequence against a loop;
//   - the CUDA twins against the CPU ones, bit for bit (skipped without a GPU).
// Exact equality throughout: the kernels make no arithmetic beyond one fp32 add per choice, one
// double sum per group and one fp32 product per count, which the references make identically.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "autograd/kernels/moe_routing.h"
#include "model/router.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using kernels::ExpertOrder;
using routing::GroupLimit;

struct Shape4 {
  int64_t experts, groups, topk_group, k;
};

// The shapes tested: flat, DeepSeek-V3's 256 / 8 groups / top-4 groups / k 8, two experts per group,
// k = every expert the kept groups offer, one group kept, every group kept.
const std::vector<Shape4> kShapes{{8, 1, 1, 2},  {16, 4, 2, 3},  {64, 8, 4, 8},  {256, 8, 4, 8}, {12, 6, 1, 2},
                                  {64, 32, 2, 4}, {6, 3, 3, 6},  {32, 4, 4, 5},  {10, 5, 2, 4},  {7, 1, 1, 7}};

model::ModelConfig config_of(const Shape4& s) {
  model::ModelConfig c;
  c.n_routed_experts = s.experts;
  c.n_group = s.groups;
  c.topk_group = s.topk_group;
  c.num_experts_per_tok = s.k;
  return c;
}

GroupLimit limit_of(const Shape4& s) {
  return GroupLimit{.experts = s.experts, .groups = s.groups, .topk_group = s.topk_group, .k = s.k};
}

// n tokens of sigmoid affinities in (0, 1) and a bias of `bias_std`.
std::pair<Tensor, Tensor> random_scores(int64_t n, int64_t e, uint64_t seed, double bias_std) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<float> s(static_cast<size_t>(n * e)), b(static_cast<size_t>(e));
  for (float& v : s) v = float(1.0 / (1.0 + std::exp(-2.0 * normal(rng))));
  for (float& v : b) v = float(bias_std * normal(rng));
  return {Tensor::from_vector(s, {n, e}), Tensor::from_vector(b, {e})};
}

// Scores on a grid of `levels` values in [0, 1] and a bias on a grid of ±levels/8 steps (-0.0
// included): equal choices within and across groups, equal group sums, whole rows equal.
std::pair<Tensor, Tensor> tied_scores(int64_t n, int64_t e, uint64_t seed, int levels) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> level(0, levels), step(-2, 2);
  std::vector<float> s(static_cast<size_t>(n * e)), b(static_cast<size_t>(e));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < e; ++i)
      s[size_t(t * e + i)] = t % 7 == 3 ? 0.5f : float(level(rng)) / float(levels);  // every 7th row all equal
  for (float& v : b) {
    const int k = step(rng);
    v = k == 0 ? (rng() % 2 ? -0.0f : 0.0f) : float(k) * 0.125f;
  }
  return {Tensor::from_vector(s, {n, e}), Tensor::from_vector(b, {e})};
}

TEST(MoeRouting, MaskedChoiceKeyIsTheKeyOfMinusInfinity) {
  EXPECT_EQ(routing::kMaskedChoiceKey, codec::float_order_key(-std::numeric_limits<float>::infinity()));
}

TEST(MoeRouting, GroupLimitedTopkEqualsTheRouterReferenceOnRandomScores) {
  uint64_t seed = 1;
  for (const Shape4& shape : kShapes)
    for (double bias_std : {0.0, 0.05, 1.0}) {
      const auto [s, b] = random_scores(300, shape.experts, seed++, bias_std);
      const Tensor ids = kernels::group_limited_topk(s, b, limit_of(shape));
      EXPECT_EQ(ids.to_vector<int64_t>(), model::select_experts(s, b, config_of(shape)).to_vector<int64_t>())
          << shape.experts << " experts, " << shape.groups << " groups, bias std " << bias_std;
    }
}

TEST(MoeRouting, GroupLimitedTopkEqualsTheRouterReferenceOnTiedScores) {
  uint64_t seed = 100;
  int64_t tied_rows = 0;
  for (const Shape4& shape : kShapes)
    for (int levels : {1, 2, 4, 16}) {
      const auto [s, b] = tied_scores(200, shape.experts, seed++, levels);
      const Tensor ids = kernels::group_limited_topk(s, b, limit_of(shape));
      EXPECT_EQ(ids.to_vector<int64_t>(), model::select_experts(s, b, config_of(shape)).to_vector<int64_t>())
          << shape.experts << " experts, " << shape.groups << " groups, " << levels << " levels";
      // The inputs do tie: count rows with two equal choices among the selected.
      const std::vector<double> sv = s.to_doubles(), bv = b.to_doubles();
      for (int64_t t = 0; t < 200; ++t) {
        std::vector<float> c;
        for (int64_t i = 0; i < shape.experts; ++i) c.push_back(float(sv[size_t(t * shape.experts + i)] + bv[size_t(i)]));
        std::sort(c.begin(), c.end());
        tied_rows += std::adjacent_find(c.begin(), c.end()) != c.end();
      }
    }
  EXPECT_GT(tied_rows, 4000);  // of 8,000 rows: the tie rule is what is being compared
}

TEST(MoeRouting, GroupLimitedTopkRejectsLimitsThatDoNotFit) {
  const auto [s, b] = random_scores(4, 8, 1, 0.0);
  testing::expect_error([&] { kernels::group_limited_topk(s, b, GroupLimit{8, 3, 1, 2}); }, {"8 experts in 3 groups"});
  testing::expect_error([&] { kernels::group_limited_topk(s, b, GroupLimit{8, 4, 1, 3}); }, {"cannot give k = 3"});
  testing::expect_error([&] { kernels::group_limited_topk(s, b, GroupLimit{16, 4, 1, 2}); }, {"for 16 experts"});
}

// The reference order: per expert, its pairs stably sorted by gate descending, the first
// `capacity` kept; then the kept pairs grouped by expert in pair order.
struct ReferenceOrder {
  std::vector<int64_t> pair, token, load, offsets;
  std::vector<double> kept;
};

ReferenceOrder reference_order(const std::vector<int64_t>& ids, const std::vector<double>& gates, int64_t e, int64_t k,
                               int64_t capacity) {
  ReferenceOrder r;
  r.kept.assign(ids.size(), 1.0);
  r.load.assign(size_t(e), 0);
  std::vector<std::vector<int64_t>> lists(static_cast<size_t>(e));
  for (size_t p = 0; p < ids.size(); ++p) lists[size_t(ids[p])].push_back(int64_t(p));
  for (int64_t x = 0; x < e; ++x) {
    std::vector<int64_t>& list = lists[size_t(x)];
    r.load[size_t(x)] = int64_t(list.size());
    if (capacity < 0 || int64_t(list.size()) <= capacity) continue;
    std::vector<int64_t> by_gate = list;
    std::stable_sort(by_gate.begin(), by_gate.end(),
                     [&](int64_t a, int64_t b) { return gates[size_t(a)] > gates[size_t(b)]; });
    for (size_t j = size_t(capacity); j < by_gate.size(); ++j) r.kept[size_t(by_gate[j])] = 0.0;
  }
  r.offsets.push_back(0);
  for (int64_t x = 0; x < e; ++x) {
    for (int64_t p : lists[size_t(x)])
      if (r.kept[size_t(p)] != 0.0) {
        r.pair.push_back(p);
        r.token.push_back(p / k);
      }
    r.offsets.push_back(int64_t(r.pair.size()));
  }
  return r;
}

// n tokens with k distinct experts each, skewed towards low ids (so capacities bind), and gates on
// a grid of 8 values (ties for the capacity rule); -0.0 and +0.0 gates both occur.
std::pair<Tensor, Tensor> random_routing(int64_t n, int64_t e, int64_t k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> ids;
  std::vector<float> gates;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int64_t> experts(static_cast<size_t>(e));
    std::iota(experts.begin(), experts.end(), 0);
    std::stable_sort(experts.begin(), experts.end(), [&](int64_t a, int64_t b) {
      return double(a) * std::uniform_real_distribution<double>(0.5, 1.5)(rng) <
             double(b) * std::uniform_real_distribution<double>(0.5, 1.5)(rng);
    });
    for (int64_t j = 0; j < k; ++j) {
      ids.push_back(experts[size_t(j)]);
      const int level = int(rng() % 9) - 1;
      gates.push_back(level < 0 ? -0.0f : float(level) / 8.0f);
    }
  }
  return {Tensor::from_vector(ids, {n, k}), Tensor::from_vector(gates, {n, k})};
}

void expect_order_equal(const ExpertOrder& got, const ReferenceOrder& want, const std::string& what) {
  EXPECT_EQ(got.pair.to_vector<int64_t>(), want.pair) << what;
  EXPECT_EQ(got.token.to_vector<int64_t>(), want.token) << what;
  EXPECT_EQ(got.kept.to_doubles(), want.kept) << what;
  EXPECT_EQ(got.load, want.load) << what;
  EXPECT_EQ(got.offsets, want.offsets) << what;
}

TEST(MoeRouting, OrderByExpertKeepsTheHighestGatedPairsAndGroupsThemStably) {
  uint64_t seed = 7;
  for (auto [n, e, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 4, 1}, {37, 8, 2}, {256, 16, 4}, {500, 64, 8}})
    for (int64_t capacity : {int64_t(-1), int64_t(0), int64_t(1), int64_t(3), (n * k) / e, n * k}) {
      const auto [ids, gates] = random_routing(n, e, k, seed++);
      const ExpertOrder got = kernels::order_by_expert(ids, e, gates, capacity);
      const ReferenceOrder want = reference_order(ids.to_vector<int64_t>(), gates.to_doubles(), e, k, capacity);
      expect_order_equal(got, want, fmt::format("{} tokens, {} experts, k {}, capacity {}", n, e, k, capacity));
      const int64_t kept = int64_t(want.pair.size());
      EXPECT_EQ(got.dropped(), n * k - kept);
      if (capacity < 0) {
        EXPECT_EQ(kept, n * k);
      }
    }
}

TEST(MoeRouting, OrderByExpertRejectsIdsOutOfRange) {
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{0, 3, 8, 1}, {2, 2});
  testing::expect_error([&] { kernels::order_by_expert(ids, 8, Tensor(), -1); },
                        {"order_by_expert", "ids[1, 0] = 8", "[0, 8)"});
}

TEST(MoeRouting, ExpertCountsPerSequenceCountEachSequencesPairs) {
  const auto [ids, gates] = random_routing(24, 8, 3, 5);  // 4 sequences of 6 tokens
  const float scale = float(8.0 / (3.0 * 6.0));
  const std::vector<double> got = kernels::expert_counts_per_sequence(ids, 6, 8, scale).to_doubles();
  const std::vector<int64_t> id = ids.to_vector<int64_t>();
  std::vector<double> want(32, 0.0);
  std::vector<int> count(32, 0);
  for (size_t p = 0; p < id.size(); ++p) ++count[(p / 3 / 6) * 8 + size_t(id[p])];
  for (size_t i = 0; i < 32; ++i) want[i] = double(float(count[i]) * scale);
  EXPECT_EQ(got, want);
}

// ---- the CUDA twins -------------------------------------------------------------------------------

class CudaMoeRouting : public testing::CudaTest {};

TEST_F(CudaMoeRouting, GroupLimitedTopkIsBitIdenticalToTheHost) {
  uint64_t seed = 200;
  for (const Shape4& shape : kShapes)
    for (bool tied : {false, true}) {
      const auto [s, b] = tied ? tied_scores(1000, shape.experts, seed++, 4) : random_scores(1000, shape.experts, seed++, 0.05);
      const Tensor host = kernels::group_limited_topk(s, b, limit_of(shape));
      const Tensor device = kernels::group_limited_topk(s.to(gpu), b.to(gpu), limit_of(shape));
      EXPECT_EQ(device.device(), gpu);
      EXPECT_EQ(device.to_vector<int64_t>(), host.to_vector<int64_t>()) << shape.experts << " experts, tied " << tied;
    }
}

TEST_F(CudaMoeRouting, OrderByExpertIsBitIdenticalToTheHost) {
  uint64_t seed = 300;
  for (auto [n, e, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 4, 1}, {37, 8, 2}, {4096, 256, 8}})
    for (int64_t capacity : {int64_t(-1), int64_t(0), int64_t(3), (n * k) / e}) {
      const auto [ids, gates] = random_routing(n, e, k, seed++);
      const ExpertOrder host = kernels::order_by_expert(ids, e, gates, capacity);
      const ExpertOrder device = kernels::order_by_expert(ids.to(gpu), e, gates.to(gpu), capacity);
      EXPECT_EQ(device.pair.device(), gpu);
      const std::string what = fmt::format("{} tokens, {} experts, capacity {}", n, e, capacity);
      EXPECT_EQ(device.pair.to_vector<int64_t>(), host.pair.to_vector<int64_t>()) << what;
      EXPECT_EQ(device.token.to_vector<int64_t>(), host.token.to_vector<int64_t>()) << what;
      EXPECT_EQ(device.kept.to_doubles(), host.kept.to_doubles()) << what;
      EXPECT_EQ(device.load, host.load) << what;
      EXPECT_EQ(device.offsets, host.offsets) << what;
    }
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, 3, 8, 1}, {2, 2}).to(gpu);
  testing::expect_error([&] { kernels::order_by_expert(bad, 8, Tensor(), -1); }, {"ids[1, 0] = 8", "[0, 8)"});
}

TEST_F(CudaMoeRouting, ExpertCountsPerSequenceAreBitIdenticalToTheHost) {
  const auto [ids, gates] = random_routing(4096, 64, 8, 9);
  const float scale = float(64.0 / (8.0 * 512.0));
  EXPECT_EQ(kernels::expert_counts_per_sequence(ids.to(gpu), 512, 64, scale).to_doubles(),
            kernels::expert_counts_per_sequence(ids, 512, 64, scale).to_doubles());
}

}  // namespace
}  // namespace daedalus
