// Expert parallelism against the one-rank model, run under mpirun -np 2, 3, 4.
//
// Initialization is a pure function of (seed, name, global expert index), so an EP model holds
// exactly the slices of the EP=1 model built with the same seed. Every rank builds both — the EP
// model (experts sharded over the EP group: the whole world, or groups of 2 with world/2 replicas)
// and a local EP=1 reference — and feeds its own rank-dependent batch to each. Then:
//   forward    the EP output / loss on this rank equals the reference's on this rank;
//   dense      every non-expert gradient equals the reference's on this rank (the router, the
//              shared experts, attention... see only this rank's tokens);
//   experts    the EP slice's gradient equals the SUM over the EP group of the references'
//              gradients for those experts (each expert sees every group member's tokens),
//              reference gradients all-reduced over the group, then rows [offset, offset+local);
//   loads      router load counts, summed over ranks, equal the references' summed over ranks, and
//              after the trainer's all-reduce the bias update is identical on every rank;
//   sync       the trainer's gradient sync (dense: mean over the world; experts: mean over the
//              replicas, divided by ep_size) gives the EP=1 data-parallel mean.
// Wire formats: fp32 must agree up to summation order; bf16 and fp8 within their rounding (each
// tolerance is explained where it is defined). Measured worst differences are printed by rank 0.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/generator.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/tape.h"
#include "fp8/recipe.h"
#include "model/causal_lm.h"
#include "model/moe.h"
#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "tests/model_testing.h"
#include "tests/mpi/mpi_testing.h"

namespace daedalus {
namespace {

using parallel::DispatchDtype;

constexpr uint64_t kSeed = 2024;
constexpr int kWholeWorld = 0;  // EP layout: one EP group over every rank (no replicas)

// Tolerances, as a fraction of the largest |value| of the reference tensor (measured worst cases
// at 2-4 ranks in brackets; rank 0 prints them).
//
// kOrder (fp32 wire, same recipe): the EP path computes the same products as the reference but
// adds some in another order — an expert's weight gradient sums its rows (every source rank's) in
// one GEMM where the reference sums each rank's rows and the all-reduce adds the ranks' results.
// Reordering a sum of n fp32 terms moves it by at most about n·u·max|term| (u = 2^-24), n <= ~60
// rows per expert here: 64u = 2^-18. Forward, dense gradients and dx come out bit-identical.
// [expert gradients 2.2e-7 = 3.7u; everything else 0]
constexpr double kOrder = 0x1p-18;
// kBf16 (bf16 wire): each dispatched row is rounded to bf16 (relative error <= u = 2^-8 per
// element) and each expert output once more on the way back; gradients take the same two
// roundings in reverse. A SwiGLU expert passes an input error on with a gain of order one (silu'
// <= 1.1, weights ~0.2·sqrt(fan-in)), so two roundings stay within 4u = 2^-6. [6.5e-3 = 1.7u]
constexpr double kBf16 = 0x1p-6;
// kFp8 (fp8 dispatch, bf16 combine): E4M3 keeps 4 significant bits, u = 2^-4 per element relative
// to itself (1x128 tiles scaled to their amax, so only entries far below the tile's amax lose
// relative accuracy, and they are negligible against the max). One such rounding, passed through
// the expert as above, plus the bf16 legs: 2u = 2^-3. A misrouted or lost row is an error of
// order 1. [7.9e-2 = 1.3u, an LM expert gradient; the layer's forward 2.3e-2]
constexpr double kFp8 = 0x1p-3;

std::shared_ptr<parallel::Communicator> world() { return parallel::mpi_world(); }

using testing::recipes_of;

// A CPU-sized DeepSeek-V3 shape with 12 routed experts (divisible by 2, 3 and 4 ranks) in 4
// groups of 3 (top-2 groups, top-3 experts), a shared expert, and MTP depth 1 (so the LM has two
// MoE layers: model.layers.1 and the MTP block model.layers.2).
model::ModelConfig config_12_experts() {
  model::ModelConfig c = testing::small_model_config();
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.moe_intermediate_size = 16;
  c.n_routed_experts = 12;
  return c;
}

model::MoeConfig moe_config() {
  model::MoeConfig m;
  m.seq_aux_loss_alpha = 0.01;  // large enough that the aux loss's gradient reaches the router
  m.bias_update_rate = 1e-3;
  return m;
}

// ---- comparisons ------------------------------------------------------------------------------

// The worst relative difference seen per check, reduced over ranks and printed by rank 0.
class Measured {
 public:
  explicit Measured(std::string title) : title_(std::move(title)) {}
  // Expects max|got - want| <= tol · max|want| and records the ratio.
  void expect_close(const std::string& what, const Tensor& got, const Tensor& want, double tol) {
    double& worst = worst_[kind_of(what)];  // every rank records the same kinds (MPI_Allreduce below)
    ASSERT_EQ(got.shape(), want.shape()) << what;
    const std::vector<double> g = got.to_doubles(), w = want.to_doubles();
    double diff = 0, scale = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      diff = std::max(diff, std::fabs(g[i] - w[i]));
      scale = std::max(scale, std::fabs(w[i]));
    }
    const double rel = scale > 0 ? diff / scale : diff;
    EXPECT_LE(rel, tol) << what << " on rank " << testing::world_rank() << ": max |diff| " << diff
                        << " against max |reference| " << scale;
    worst = std::max(worst, rel);
  }
  ~Measured() {
    for (auto& [what, worst] : worst_) {
      double all = 0;
      MPI_Allreduce(&worst, &all, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (testing::world_rank() == 0)
        std::printf("[ measured ] %s: %s max rel diff %.3g\n", title_.c_str(), what.c_str(), all);
    }
  }

 private:
  // "model.layers.1.mlp.gate.weight grad" -> "grad" so one line per kind of check.
  static std::string kind_of(const std::string& what) {
    const size_t space = what.rfind(' ');
    return space == std::string::npos ? what : what.substr(space + 1);
  }
  std::string title_;
  std::map<std::string, double> worst_;
};

Tensor grad_or_zeros(const model::Parameter& p) {
  return p.var.grad().defined() ? p.var.grad().contiguous() : Tensor::zeros(p.var.shape());
}

// Every trainable parameter of `ep`: dense gradients against the reference's on this rank, expert
// slices against the reference's gradients summed over the EP group.
void expect_gradients_match(Measured& m, const model::ParameterStore& ep, const model::ParameterStore& ref,
                            parallel::Communicator& group, double dense_tol, double expert_tol) {
  for (const model::Parameter& p : ep.all()) {
    if (!p.trainable) continue;
    const model::Parameter& r = ref.get(p.name);
    if (!p.expert) {
      m.expect_close(p.name + " dense-grad", grad_or_zeros(p), grad_or_zeros(r), dense_tol);
      continue;
    }
    const Tensor summed = grad_or_zeros(r).clone();
    group.all_reduce(summed);  // Σ over the group's ranks of the full [E, ...] reference gradient
    const int64_t local = p.var.shape()[0];
    m.expect_close(p.name + " expert-grad", grad_or_zeros(p),
                   summed.slice(0, p.expert_offset, p.expert_offset + local).contiguous(), expert_tol);
  }
}

std::vector<int64_t> summed_over_world(std::vector<int64_t> v) {
  const Tensor t = Tensor::from_vector(v, {int64_t(v.size())});
  world()->all_reduce(t);
  return t.to_vector<int64_t>();
}

// The bias after the trainer's step: loads all-reduced over the world, then update_bias().
// Returns every rank's bias, concatenated [world · E].
std::vector<float> bias_after_update(model::Moe& moe) {
  moe.load().tokens = summed_over_world(moe.load().tokens);
  moe.update_bias();
  const Tensor mine = moe.router().bias().value().contiguous();
  const Tensor all = Tensor::empty({int64_t(testing::world_size()) * mine.numel()});
  world()->all_gather(mine, all);
  return all.to_vector<float>();
}

void expect_same_bias_everywhere(model::Moe& ep, model::Moe& ref, const std::string& layer) {
  const std::vector<float> ep_all = bias_after_update(ep), ref_all = bias_after_update(ref);
  const size_t e = ep_all.size() / size_t(testing::world_size());
  for (size_t i = 0; i < ep_all.size(); ++i) {
    EXPECT_EQ(ep_all[i], ep_all[i % e]) << layer << ": rank " << i / e << " bias[" << i % e
                                        << "] differs from rank 0's";
    EXPECT_EQ(ep_all[i], ref_all[i]) << layer << ": rank " << i / e << " bias[" << i % e << "] differs from EP=1";
  }
  // The update did something: a uniform load would leave the bias at 0.
  EXPECT_NE(*std::max_element(ep_all.begin(), ep_all.end()), 0.0f) << layer;
}

// ---- cases ------------------------------------------------------------------------------------

struct WireCase {
  std::string name;
  std::string recipe;
  DispatchDtype dispatch, combine;
  double forward_tol, dense_tol, expert_tol, dx_tol;
};

void PrintTo(const WireCase& c, std::ostream* os) { *os << c.name; }

// bf16 recipe with a bf16 dispatch and an fp32 combine: the expert GEMMs round their inputs to
// bf16 anyway, so sending them in bf16 loses nothing (bf16(bf16(x)) = bf16(x)); the forward and
// the dense gradients agree up to summation order. Two places differ by bf16 rounding:
//   dx         its routed part returns to the source rank in bf16: one rounding, <= u = 2^-8 of
//              that part (2u allows for the routed part exceeding |dx| where terms cancel);
//   expert dW  the bf16 recipe rounds every GEMM's weight gradient to bf16 (fp8/linear.cpp
//              HighGemms). EP rounds the group's sum once, the reference each rank's share
//              before the all-reduce adds them: P + 1 roundings, <= (P + 1)·u of the summands'
//              magnitude; 8u = 2^-5 covers P <= 4. [5.8e-3 = 1.5u; dx 2.1e-3 = 0.54u]
const std::vector<WireCase> kWireCases = {
    {"fp32", "fp32", DispatchDtype::fp32, DispatchDtype::fp32, kOrder, kOrder, kOrder, kOrder},
    {"bf16_recipe_bf16_dispatch", "bf16", DispatchDtype::bf16, DispatchDtype::fp32, kOrder, kOrder, 0x1p-5, 0x1p-7},
    {"bf16", "fp32", DispatchDtype::bf16, DispatchDtype::bf16, kBf16, kBf16, kBf16, kBf16},
    {"fp8", "fp32", DispatchDtype::fp8, DispatchDtype::bf16, kFp8, kFp8, kFp8, kFp8},
};

using Layout = std::tuple<WireCase, int>;  // (wire formats, EP size or kWholeWorld)

std::string layout_name(const ::testing::TestParamInfo<Layout>& info) {
  const int ep = std::get<1>(info.param);
  return std::get<0>(info.param).name + (ep == kWholeWorld ? "_ep_world" : "_ep" + std::to_string(ep));
}

// The process groups of a layout; false (and a skip) when the world does not split that way.
bool make_groups(int ep_size, parallel::ProcessGroups* groups) {
  const int w = testing::world_size();
  if (ep_size == kWholeWorld) ep_size = w;
  if (w % ep_size != 0 || config_12_experts().n_routed_experts % ep_size != 0) return false;
  *groups = parallel::make_process_groups(world(), ep_size);
  return true;
}

// ---- one MoE layer -----------------------------------------------------------------------------

struct MoeUnderTest {
  model::ParameterStore store{kSeed, 0.2};
  fp8::RecipeTable recipes;
  model::Moe moe;
  MoeUnderTest(const std::string& recipe, const model::ExpertParallel& ep)
      : recipes(recipes_of(recipe)),
        moe(model::BuildContext{&store, &recipes}, config_12_experts(), moe_config(), "model.layers.1.mlp", ep) {}
};

struct MoeRun {
  Tensor y, dx;
};

// loss = Σ y ⊙ w + aux loss; forward and backward.
MoeRun run_moe(model::Moe& moe, const Tensor& x, const Tensor& w) {
  const Var xv(x.clone(), /*requires_grad=*/true);
  std::vector<Var> aux;
  const Var y = moe.forward(xv, &aux);
  Var loss = ops::sum_all(ops::mul(y, Var(w)));
  for (const Var& a : aux) loss = ops::add(loss, a);
  backward(loss);
  return {y.value(), xv.grad()};
}

class MpiModelMoe : public ::testing::TestWithParam<Layout> {};

TEST_P(MpiModelMoe, MatchesTheOneRankLayer) {
  const auto& [wire, ep_size] = GetParam();
  parallel::ProcessGroups groups;
  if (!make_groups(ep_size, &groups)) GTEST_SKIP() << "world " << testing::world_size() << " does not split";
  const int me = testing::world_rank();
  const model::ModelConfig c = config_12_experts();
  MoeUnderTest ref(wire.recipe, {});
  MoeUnderTest ep(wire.recipe, {groups.ep.get(), wire.dispatch, wire.combine});

  // Ragged on purpose: every rank has a different number of tokens.
  Generator gen(kSeed + uint64_t(me));
  const int64_t b = 2, t = 5 + 2 * me;
  const Tensor x = Tensor::randn({b, t, c.hidden_size}, gen);
  const Tensor w = Tensor::randn({b, t, c.hidden_size}, gen);
  const MoeRun r = run_moe(ref.moe, x, w);
  const MoeRun e = run_moe(ep.moe, x, w);

  Measured m("moe " + layout_name(::testing::TestParamInfo<Layout>(GetParam(), 0)));
  m.expect_close("y forward", e.y, r.y, wire.forward_tol);
  m.expect_close("x dx", e.dx, r.dx, wire.dx_tol);
  expect_gradients_match(m, ep.store, ref.store, *groups.ep, wire.dense_tol, wire.expert_tol);

  // The router sees the same fp32 rows in both: identical routing, identical load counts.
  EXPECT_EQ(ep.moe.load().tokens, ref.moe.load().tokens) << "rank " << me;
  EXPECT_EQ(summed_over_world(ep.moe.load().tokens), summed_over_world(ref.moe.load().tokens));
  expect_same_bias_everywhere(ep.moe, ref.moe, "model.layers.1.mlp");
}

INSTANTIATE_TEST_SUITE_P(Wires, MpiModelMoe,
                         ::testing::Combine(::testing::ValuesIn(kWireCases), ::testing::Values(kWholeWorld, 2)),
                         layout_name);

// ---- the whole causal LM ----------------------------------------------------------------------

model::LmOptions lm_options(const std::string& recipe, const model::ExpertParallel& ep) {
  model::LmOptions o;
  o.config = config_12_experts();
  o.config.initializer_range = 0.1;
  o.moe = moe_config();
  o.recipes = recipes_of(recipe);
  o.seed = kSeed;
  o.block.ep = ep;
  return o;
}

// This rank's batch: 1 or 2 sequences of 7 tokens (ragged across ranks), targets shifted by one.
std::pair<Tensor, Tensor> lm_batch(int rank, int64_t vocab) {
  Generator gen(kSeed * 7 + uint64_t(rank));
  const int64_t b = 1 + rank % 2, t = 7;
  std::vector<int64_t> tokens;
  for (int64_t i = 0; i < b * (t + 1); ++i) tokens.push_back(int64_t(gen.next_u64() % uint64_t(vocab)));
  const Tensor all = Tensor::from_vector(tokens, {b, t + 1});
  return {all.slice(1, 0, t).contiguous(), all.slice(1, 1, t + 1).contiguous()};
}

// The trainer's sync_gradients (train/trainer.cpp) on a model's gradients: dense averaged over
// the world; expert slices averaged over the replicas and divided by ep_size. With ep_size 1 (the
// reference) every gradient is a world mean.
void trainer_style_sync(const model::ParameterStore& store, const parallel::ProcessGroups& groups, bool sharded) {
  std::vector<Tensor> dense, experts;
  for (const model::Parameter& p : store.all()) {
    if (!p.trainable) continue;
    if (!p.var.grad().defined()) p.var.slot()->accumulate("test", Tensor::zeros(p.var.shape()));
    (sharded && p.expert ? experts : dense).push_back(p.var.grad());
  }
  parallel::all_reduce_gradients(*groups.world, dense);
  if (experts.empty()) return;
  parallel::all_reduce_gradients(*groups.replicas, experts);
  for (Tensor g : experts) g.copy_(kernels::affine(g, 1.0 / double(groups.ep_size)));
}

class MpiModelLm : public ::testing::TestWithParam<Layout> {};

// fp32 wire: routing is left free — the EP forward reproduces the reference's hidden states, so
// every router (the MTP block's too) selects the same experts. bf16 / fp8 wires: the second MoE
// layer sees inputs perturbed by the first one's rounding, and a near-tie in its top-k may flip
// (a discrete change that is no EP error), so its selection is held to the reference's.
TEST_P(MpiModelLm, LossAndGradientsMatchTheOneRankModel) {
  const auto& [wire, ep_size] = GetParam();
  if (wire.recipe != "fp32") GTEST_SKIP() << "the bf16-recipe case is covered by the layer test";
  parallel::ProcessGroups groups;
  if (!make_groups(ep_size, &groups)) GTEST_SKIP() << "world " << testing::world_size() << " does not split";
  const int me = testing::world_rank();
  model::CausalLM ref(lm_options(wire.recipe, {}));
  model::CausalLM ep(lm_options(wire.recipe, {groups.ep.get(), wire.dispatch, wire.combine}));
  const auto [inputs, targets] = lm_batch(me, ref.options().config.vocab_size);

  const model::LmOutput r = ref.forward(inputs, targets);
  backward(r.loss);
  const bool free_routing = wire.dispatch == DispatchDtype::fp32;
  if (!free_routing) {
    const std::vector<model::Moe*> ref_layers = ref.moe_layers(), ep_layers = ep.moe_layers();
    for (size_t l = 0; l < ep_layers.size(); ++l)
      ep_layers[l]->router().fix_selection(ref_layers[l]->router().last_selection());
  }
  const model::LmOutput e = ep.forward(inputs, targets);
  backward(e.loss);

  Measured m("lm " + layout_name(::testing::TestParamInfo<Layout>(GetParam(), 0)));
  m.expect_close("loss forward", e.loss.value(), r.loss.value(), wire.forward_tol);
  m.expect_close("mtp_loss forward", e.mtp_loss.value(), r.mtp_loss.value(), wire.forward_tol);
  m.expect_close("aux_loss forward", e.aux_loss.value(), r.aux_loss.value(), wire.forward_tol);
  expect_gradients_match(m, ep.parameters(), ref.parameters(), *groups.ep, wire.dense_tol, wire.expert_tol);

  const std::vector<model::Moe*> ref_layers = ref.moe_layers(), ep_layers = ep.moe_layers();
  ASSERT_EQ(ep_layers.size(), 2u);
  for (size_t l = 0; l < ep_layers.size(); ++l) {
    EXPECT_EQ(summed_over_world(ep_layers[l]->load().tokens), summed_over_world(ref_layers[l]->load().tokens))
        << "MoE layer " << l;
    if (free_routing) expect_same_bias_everywhere(*ep_layers[l], *ref_layers[l], "MoE layer " + std::to_string(l));
  }

  // After the trainer's sync, the EP model holds the slices of the data-parallel mean gradient.
  parallel::ProcessGroups ref_groups = groups;
  ref_groups.ep_size = 1;
  trainer_style_sync(ep.parameters(), groups, /*sharded=*/true);
  trainer_style_sync(ref.parameters(), ref_groups, /*sharded=*/false);
  for (const model::Parameter& p : ep.parameters().all()) {
    if (!p.trainable) continue;
    const Tensor want = ref.parameters().get(p.name).var.grad();
    const Tensor slice = p.expert ? want.slice(0, p.expert_offset, p.expert_offset + p.var.shape()[0]) : want;
    m.expect_close(p.name + " synced-grad", p.var.grad(), slice.contiguous(),
                   p.expert ? wire.expert_tol : wire.dense_tol);
  }
}

INSTANTIATE_TEST_SUITE_P(Wires, MpiModelLm,
                         ::testing::Combine(::testing::ValuesIn(kWireCases), ::testing::Values(kWholeWorld, 2)),
                         layout_name);

}  // namespace
}  // namespace daedalus
