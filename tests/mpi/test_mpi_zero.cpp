// ZeRO-1 under mpirun -np 2, 3, 4: the sharded collectives against hand-computed values, and the
// trainer at parallel.zero_stage 1 against stage 0 (same config, same ranks, both in this process).
//
//   layout      every element of every tensor is owned by exactly one rank, shards are equal to
//               within one element per bucket, and owned() agrees with owned_elements();
//   collectives reduce_scatter_gradients leaves the exact mean on owned elements and this rank's
//               own values elsewhere; all_gather_shards gives every rank the owners' values;
//   trainer     20 steps of the tiny DeepSeek-V3-shaped model: the loss of every step and every final
//               weight equal stage 0's bit for bit, the gradient norm to double rounding,
//               with and without expert parallelism, with bf16 moments, with fp8_block and with
//               gradient accumulation; each rank's optimizer state is 1/DP of stage 0's (to within
//               one bucket's rounding).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/grad_sync.h"
#include "tests/mpi/mpi_testing.h"
#include "train/config.h"
#include "train/plan.h"
#include "train/trainer.h"

namespace daedalus {
namespace {

using parallel::mpi_world;
using parallel::ShardLayout;

const std::vector<Shape> kShapes = {{7}, {3, 5}, {1}, {0}, {2, 3, 4}, {65}};

// value(rank, tensor, i) = rank * 4 + t + i / 8: sums exact in fp32, the mean one rounding.
double value(int rank, size_t t, int64_t i) { return double(rank * 4) + double(t) + double(i) / 8; }

std::vector<Tensor> ragged_tensors(int rank) {
  std::vector<Tensor> ts;
  for (size_t t = 0; t < kShapes.size(); ++t) {
    std::vector<double> v;
    for (int64_t i = 0; i < shape_numel(kShapes[t]); ++i) v.push_back(value(rank, t, i));
    ts.push_back(Tensor::from_values(v, kShapes[t]));
  }
  return ts;
}

bool owns(const ShardLayout& layout, size_t t, int rank, int64_t i) {
  for (const auto& [b, e] : layout.owned(t, rank))
    if (i >= b && i < e) return true;
  return false;
}

TEST(MpiZeroLayout, EveryElementHasExactlyOneOwner) {
  const int n = mpi_world()->size();
  std::vector<int64_t> numels;
  for (const Shape& s : kShapes) numels.push_back(shape_numel(s));
  const ShardLayout layout(numels, n, /*bucket_bytes=*/10 * 4);  // buckets of 10 floats rounded down to n
  int64_t total = 0;
  for (int64_t x : numels) total += x;
  int64_t owned_sum = 0;
  for (int r = 0; r < n; ++r) {
    owned_sum += layout.owned_elements(r);
    int64_t from_ranges = 0;
    for (size_t t = 0; t < numels.size(); ++t)
      for (const auto& [b, e] : layout.owned(t, r)) from_ranges += e - b;
    EXPECT_EQ(from_ranges, layout.owned_elements(r)) << "rank " << r;
    // Balanced: at most one element per bucket more than the even share.
    EXPECT_LE(std::abs(double(layout.owned_elements(r)) - double(total) / n), double(layout.buckets.size()));
  }
  EXPECT_EQ(owned_sum, total);
  for (size_t t = 0; t < numels.size(); ++t) {
    for (int64_t i = 0; i < numels[t]; ++i) {
      int owners = 0;
      for (int r = 0; r < n; ++r) owners += owns(layout, t, r, i) ? 1 : 0;
      ASSERT_EQ(owners, 1) << "tensor " << t << " element " << i;
    }
  }
}

TEST(MpiZeroCollectives, ReduceScatterAveragesOwnedElementsAndAllGatherRestoresEveryTensor) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size();
  std::vector<Tensor> grads = ragged_tensors(r);
  const ShardLayout layout(parallel::numels_of(grads), n, /*bucket_bytes=*/12 * 4);
  ASSERT_GE(layout.buckets.size(), 3u);
  const parallel::GradSyncStats rs = parallel::reduce_scatter_gradients(*world, grads, layout);
  EXPECT_EQ(rs.calls, int64_t(layout.buckets.size()));
  for (size_t t = 0; t < kShapes.size(); ++t) {
    const std::vector<float> got = grads[t].to_vector<float>();
    for (int64_t i = 0; i < int64_t(got.size()); ++i) {
      double mean = 0;
      for (int s = 0; s < n; ++s) mean += value(s, t, i);
      mean /= n;
      // Owned: the fp32 sum is exact (multiples of 1/8), the divide rounds once (half an ulp).
      // Not owned: untouched, this rank's own value exactly.
      const double want = owns(layout, t, r, i) ? mean : value(r, t, i);
      ASSERT_NEAR(got[size_t(i)], want, std::abs(want) * 6e-8) << "tensor " << t << " element " << i;
    }
  }
  // all_gather_shards: each rank puts 1000 * rank + element index on what it owns, garbage
  // elsewhere; afterwards every element holds its owner's value on every rank.
  std::vector<Tensor> weights;
  for (size_t t = 0; t < kShapes.size(); ++t) {
    std::vector<double> v;
    for (int64_t i = 0; i < shape_numel(kShapes[t]); ++i) v.push_back(owns(layout, t, r, i) ? 1000.0 * r + i : -1.0);
    weights.push_back(Tensor::from_values(v, kShapes[t]));
  }
  const parallel::GradSyncStats ag = parallel::all_gather_shards(*world, weights, layout);
  EXPECT_EQ(ag.calls, int64_t(layout.buckets.size()));
  for (size_t t = 0; t < kShapes.size(); ++t) {
    const std::vector<float> got = weights[t].to_vector<float>();
    for (int64_t i = 0; i < int64_t(got.size()); ++i) {
      int owner = -1;
      for (int s = 0; s < n; ++s)
        if (owns(layout, t, s, i)) owner = s;
      ASSERT_EQ(got[size_t(i)], float(1000.0 * owner + double(i))) << "tensor " << t << " element " << i;
    }
  }
}

// The multi-rank CLI test's model (tests/cli/configs/multirank.yaml: MLA, one dense and one MoE
// layer with 4 routed experts, MTP), one sequence of 32 tokens per rank and micro-batch.
const char* kYaml = R"(
run: {name: zero-test, seed: 7}
model:
  vocab_size: 64
  hidden_size: 32
  intermediate_size: 64
  moe_intermediate_size: 16
  num_hidden_layers: 2
  first_k_dense_replace: 1
  num_attention_heads: 2
  q_lora_rank: 16
  kv_lora_rank: 16
  qk_nope_head_dim: 8
  qk_rope_head_dim: 8
  v_head_dim: 8
  n_routed_experts: 4
  n_shared_experts: 1
  num_experts_per_tok: 2
  n_group: 1
  topk_group: 1
  max_position_embeddings: 64
  num_nextn_predict_layers: 1
precision: {recipe: fp32}
optimizer: {lr: 1.0e-2, weight_decay: 0.1, grad_clip: 1.0}
schedule: {type: constant}
train: {steps: 20, micro_batch_size: 1, seq_len: 32, log_every: 1000, eval_every: 0, device: cpu}
data:
  format: synthetic
  synthetic: {vocab: 64, tokens: 32768, seed: 11}
parallel: {backend: mpi, dispatch_dtype: fp32}
checkpoint: {every: 0, resume: none}
logging: {progress: never, jsonl: false}
)";

struct TrainedRun {
  std::vector<double> losses, grad_norms;
  std::vector<std::vector<float>> weights;  // every parameter of this rank, registration order
  int64_t optimizer_bytes = 0;
  int64_t dense_elements = 0, expert_elements = 0;  // trainable, held by this rank
};

TrainedRun train(int ep, int64_t stage, std::vector<std::string> sets) {
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / fmt::format("daedalus-zero-{}", mpi_world()->size())).string();
  sets.push_back("run.dir=" + dir);
  sets.push_back("parallel.expert_parallel=" + std::to_string(ep));
  sets.push_back("parallel.zero_stage=" + std::to_string(stage));
  train::Trainer trainer(train::parse_config(kYaml, sets, "zero-test.yaml"),
                         parallel::make_process_groups(mpi_world(), ep));
  TrainedRun run;
  run.optimizer_bytes = trainer.optimizer().state_bytes();
  for (const model::Parameter& p : trainer.model().parameters().all())
    if (p.trainable) (p.expert ? run.expert_elements : run.dense_elements) += p.var.value().numel();
  for (int64_t s = 0; s < trainer.config().train.steps; ++s) {
    const train::StepMetrics m = trainer.train_step();
    run.losses.push_back(m.loss);
    run.grad_norms.push_back(m.grad_norm);
  }
  for (const model::Parameter& p : trainer.model().parameters().all())
    run.weights.push_back(p.var.value().to_vector<float>());
  return run;
}

struct Case {
  const char* name;
  int ep;  // 0: the whole world
  std::vector<std::string> sets;
};

// Stage 0's all-reduce is the same reduce-scatter (then an all-gather) over the same two groups and
// buckets (parallel/grad_sync.h), so every gradient is the same sum in the same order, and AdamW's
// arithmetic per element does not depend on which rank runs it: losses and weights must come out
// bit-identical (the issue asks for 1e-6 relative; measured 0 at np 2, 3, 4 in every case). The
// gradient norm's squares are summed in double over a different blocking (per owned range, then
// per rank), which moves the double result by a few 1e-16 (measured <= 1.1e-15 relative): 1e-13.
class MpiZeroTrainer : public ::testing::TestWithParam<Case> {};

TEST_P(MpiZeroTrainer, MatchesStageZero) {
  const Case& c = GetParam();
  const int n = mpi_world()->size();
  const int ep = c.ep == 0 ? n : c.ep;
  if (n % ep != 0 || 4 % ep != 0) GTEST_SKIP() << "world " << n << " does not split 4 experts into EP groups of " << ep;
  const TrainedRun base = train(ep, 0, c.sets), zero = train(ep, 1, c.sets);
  ASSERT_EQ(base.losses.size(), zero.losses.size());
  double worst_loss = 0, worst_norm = 0, worst_weight = 0;
  for (size_t s = 0; s < base.losses.size(); ++s) {
    worst_loss = std::max(worst_loss, std::abs(zero.losses[s] - base.losses[s]) / std::abs(base.losses[s]));
    worst_norm = std::max(worst_norm, std::abs(zero.grad_norms[s] - base.grad_norms[s]) / base.grad_norms[s]);
  }
  ASSERT_EQ(base.weights.size(), zero.weights.size());
  for (size_t t = 0; t < base.weights.size(); ++t) {
    float scale = 0, diff = 0;
    for (size_t i = 0; i < base.weights[t].size(); ++i) {
      scale = std::max(scale, std::abs(base.weights[t][i]));
      diff = std::max(diff, std::abs(zero.weights[t][i] - base.weights[t][i]));
    }
    if (scale > 0) worst_weight = std::max(worst_weight, double(diff / scale));
  }
  if (mpi_world()->rank() == 0)
    std::printf(
        "[ zero ] %s np%d ep%d: loss %.2e, grad_norm %.2e, weights %.2e (relative); optimizer state %lld -> %lld "
        "bytes per rank\n",
        c.name, n, ep, worst_loss, worst_norm, worst_weight, (long long)base.optimizer_bytes,
        (long long)zero.optimizer_bytes);
  EXPECT_EQ(worst_loss, 0.0);
  EXPECT_LE(worst_norm, 1e-13);
  EXPECT_EQ(worst_weight, 0.0);
  // Stage 0 holds both moments of every element; ZeRO-1 of 1/DP of them, DP = the world for dense
  // weights and the replicas for experts: a rank owns ceil(elements / DP) of each group's one bucket
  // here, or fewer by at most DP - 1 (the last rank).
  const double moment_bytes = c.sets.empty() || c.sets[0] != "optimizer.state_dtype=bf16" ? 8 : 4;
  EXPECT_EQ(base.optimizer_bytes, int64_t(moment_bytes) * (base.dense_elements + base.expert_elements));
  const double even = moment_bytes * (double(base.dense_elements) / n + double(base.expert_elements) / (n / ep));
  EXPECT_NEAR(double(zero.optimizer_bytes), even, moment_bytes * 2 * n);
}

INSTANTIATE_TEST_SUITE_P(
    Recipes, MpiZeroTrainer,
    ::testing::Values(Case{"fp32", 1, {}}, Case{"fp32_ep2", 2, {}}, Case{"fp32_ep_world", 0, {}},
                      Case{"bf16_moments", 1, {"optimizer.state_dtype=bf16"}},
                      Case{"fp8_block", 2, {"precision.recipe=fp8_block", "parallel.dispatch_dtype=fp8"}},
                      Case{"grad_accum", 1, {"train.grad_accum_steps=2"}}),
    [](const ::testing::TestParamInfo<Case>& param_info) { return std::string(param_info.param.name); });

// train.recompute under expert parallelism: `full` runs each MoE layer's dispatch and combine again
// in backward (collectives inside backward, in the same order on every rank), `selective` reruns
// the experts' SwiGLU between them. 6 steps with ZeRO-1 and EP over the world: bit-identical to
// keeping every activation.
TEST(MpiZeroRecompute, SelectiveAndFullUnderExpertParallelismAreBitIdentical) {
  const int n = mpi_world()->size();
  if (4 % n != 0) GTEST_SKIP() << "4 experts do not split over " << n << " ranks";
  const TrainedRun none = train(n, 1, {"train.steps=6"});
  for (const char* policy : {"selective", "full"}) {
    const TrainedRun r = train(n, 1, {"train.steps=6", std::string("train.recompute=") + policy});
    EXPECT_EQ(r.losses, none.losses) << policy;
    EXPECT_EQ(r.weights, none.weights) << policy;
  }
}

// `daedalus plan`'s per-rank peak (train/plan.h) against every rank's measured peak of step 1, at
// layouts the one-process test (tests/test_plan.cpp) cannot run: expert parallelism, ZeRO-1,
// replicas. Sequences of 64 tokens, 2 per micro-batch, so activations weigh as much as the state.
// Within 10% (the issue's bound); routing is not perfectly balanced, so ranks differ a little.
TEST(MpiZeroPlan, PredictedPeakWithinTenPercentOnEveryRank) {
  const int n = mpi_world()->size();
  const std::string dir =
      (std::filesystem::path(::testing::TempDir()) / fmt::format("daedalus-zero-plan-{}", n)).string();
  for (const auto& [ep, stage, recompute] :
       {std::tuple{n, 1, "none"}, std::tuple{1, 1, "selective"}, std::tuple{n % 2 == 0 ? 2 : 1, 0, "full"}}) {
    if (4 % ep != 0) continue;
    const train::RunConfig c = train::parse_config(
        kYaml,
        {"run.dir=" + dir, "parallel.expert_parallel=" + std::to_string(ep),
         "parallel.zero_stage=" + std::to_string(stage), "train.recompute=" + std::string(recompute),
         "train.seq_len=64", "train.micro_batch_size=2", "model.max_position_embeddings=64"},
        "zero-test.yaml");
    train::Trainer trainer(c, parallel::make_process_groups(mpi_world(), ep));
    const int64_t measured = trainer.train_step().mem_bytes;
    const int64_t predicted = train::plan_memory(c, n).peak;
    const double error = (double(predicted) - double(measured)) / double(measured);
    std::printf("[ plan ] np%d rank %d ep%d zero%d %s: predicted %lld, measured %lld (%+.1f%%)\n", n,
                mpi_world()->rank(), ep, stage, recompute, (long long)predicted, (long long)measured, 100 * error);
    EXPECT_LE(std::abs(error), 0.10) << "ep " << ep << " zero " << stage << " " << recompute;
  }
}

}  // namespace
}  // namespace daedalus
