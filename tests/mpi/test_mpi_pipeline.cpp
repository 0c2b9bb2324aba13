// Pipeline parallelism against one rank, under mpirun -np 2, 3, 4: the same config trained for 10
// steps by the world split into pipeline stages (1F1B over 4 micro-batches) and by one process
// (every rank runs this reference on a world of its own, with micro-batches as large as a stage's
// ranks read together), with MTP and tied embeddings on, the fp32 recipe and fp32 expert dispatch:
//   np 2: PP 2                np 3: PP 3 (layers set by hand: 2, 1, 1)
//   np 4: PP 4, PP 2 x EP 2 (two ranks per stage, experts split between them), and PP 2 x EP 2
//         with ZeRO-1; the last two also against EP 2 alone (each stage's two ranks, no stages)
// Every step's loss, lm / MTP / aux losses and global gradient norm, and after 10 steps every
// weight and router bias each rank holds (its stage's, named as in the reference), must equal the
// reference's (the tolerances are explained at kTol). Also checked: each stage holds only its
// layers, both ends hold the tied embedding, and the metrics carry one measured bubble and peak
// memory per stage beside the theoretical bubble (P - 1) / (m + P - 1). And `daedalus plan`'s
// predicted peak for each rank's stage against the peak it measured in step 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "parallel/communicator.h"
#include "tests/mpi/mpi_testing.h"
#include "train/plan.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

// Tolerances, relative to the reference: for a loss or norm |got - want| / |want|; for a tensor
// both max |diff| / max |reference value| (kTol, elementwise) and ||diff||₂ / ||reference||₂ (kTol,
// normwise). With one rank per stage every stage computes the same products in the same order as
// one rank; what differs is (a) the tied embedding's gradient, summed per stage and then across
// the first and last stage instead of in one tape's order (a reordered fp32 sum: a few u = 6e-8),
// (b) the gradient norm's double sums added per stage, (c) the logged losses, all-reduced in fp32
// (one rounding, u). AdamW passes a relative gradient error on to its update about unchanged, and
// the update is lr = 1e-3 against weights of 0.2 (init range), so after 10 steps the weights stay
// within 1e-6 [measured: 1.2e-7 elementwise at PP 2, 3 and 4].
// With EP 2 an expert's gradient sums both ranks' tokens in one GEMM where one rank sums them in
// another order (test_mpi_model's kOrder). For an entry whose gradient is at rounding level that
// relative error is large, and AdamW's m / sqrt(v) turns it into an update error of order
// lr · (relative error): a few such entries reach kEpElementwise; normwise the run stays within
// kTol. That is expert parallelism's own reordering, not the pipeline's: PP 2 x EP 2 is also
// compared with EP 2 alone (two ranks, no stages) to kTol elementwise [measured: EP 2 alone vs one
// rank 1.46e-6 elementwise, 2.8e-7 normwise; PP 2 x EP 2 vs one rank 1.51e-6 / 2.9e-7].
constexpr double kTol = 1e-6;
constexpr double kEpElementwise = 1e-5;
constexpr int kSteps = 10;

// A tiny DeepSeek-V3 shape: 4 decoder layers (the first dense), 4 routed experts, MTP depth 1,
// tied embeddings; synthetic data, 4 micro-batches of 2 sequences of 16 tokens per rank.
const char* kYaml = R"(
run: {name: pipeline-test, seed: 5}
model:
  vocab_size: 48
  hidden_size: 16
  intermediate_size: 32
  moe_intermediate_size: 8
  num_hidden_layers: 4
  first_k_dense_replace: 1
  num_attention_heads: 2
  q_lora_rank: 8
  kv_lora_rank: 8
  qk_nope_head_dim: 4
  qk_rope_head_dim: 4
  v_head_dim: 4
  n_routed_experts: 4
  n_shared_experts: 1
  num_experts_per_tok: 2
  n_group: 1
  topk_group: 1
  routed_scaling_factor: 1.0
  max_position_embeddings: 32
  tie_word_embeddings: true
  initializer_range: 0.2
  num_nextn_predict_layers: 1
moe: {bias_update_rate: 1.0e-2, seq_aux_loss_alpha: 1.0e-2}
mtp: {loss_weight: 0.3}
precision: {recipe: fp32}
optimizer: {lr: 1.0e-3, weight_decay: 0.1, grad_clip: 1.0}
schedule: {type: constant, warmup_steps: 0}
train: {steps: 10, micro_batch_size: 2, seq_len: 16, grad_accum_steps: 4, log_every: 1, eval_every: 0,
        device: cpu, on_nonfinite: abort}
data: {format: synthetic, synthetic: {vocab: 48, order: 1, branching: 3, tokens: 16384, seed: 3}}
parallel: {backend: mpi, dispatch_dtype: fp32, timeout_s: 60}
checkpoint: {every: 0, resume: none}
logging: {progress: never, jsonl: false}
)";

std::string run_dir(const std::string& name) {
  const std::string dir = (std::filesystem::temp_directory_path() / ("daedalus-mpi-pipeline-" + name)).string();
  return dir;
}

double rel(double got, double want) { return std::fabs(got - want) / std::max(std::fabs(want), 1e-30); }

// The worst relative difference of each kind, over ranks, printed by rank 0.
struct Worst {
  double loss = 0, grad_norm = 0, weights = 0, l2 = 0;
  void print(const std::string& title) {
    double v[4] = {loss, grad_norm, weights, l2};
    MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (testing::world_rank() == 0)
      std::printf("[ measured ] %s: losses %.2e, grad_norm %.2e, weights %.2e elementwise, %.2e normwise\n",
                  title.c_str(), v[0], v[1], v[2], v[3]);
  }
};

void expect_step_close(const StepMetrics& got, const StepMetrics& want, Worst& worst) {
  ASSERT_TRUE(got.mtp_loss && want.mtp_loss && got.moe_aux_loss && want.moe_aux_loss);
  for (auto [g, w] : {std::pair{got.loss, want.loss}, std::pair{got.lm_loss, want.lm_loss},
                      std::pair{*got.mtp_loss, *want.mtp_loss}, std::pair{*got.moe_aux_loss, *want.moe_aux_loss}}) {
    EXPECT_LE(rel(g, w), kTol) << g << " vs " << w;
    worst.loss = std::max(worst.loss, rel(g, w));
  }
  EXPECT_LE(rel(got.grad_norm, want.grad_norm), kTol) << got.grad_norm << " vs " << want.grad_norm;
  worst.grad_norm = std::max(worst.grad_norm, rel(got.grad_norm, want.grad_norm));
  EXPECT_FALSE(got.skipped);
  EXPECT_EQ(got.expert_load_max_over_mean.size(), want.expert_load_max_over_mean.size());
}

// Every tensor `got` holds against the same name in `want` (experts: the rows `got` holds).
void expect_weights_close(const Trainer& got, const Trainer& want, double elementwise, Worst& worst) {
  for (const model::Parameter& p : const_cast<Trainer&>(got).model().parameters().all()) {
    const model::Parameter& q = const_cast<Trainer&>(want).model().parameters().get(p.name);
    Tensor w_t = q.var.value();
    if (p.expert && q.var.shape()[0] != p.var.shape()[0])
      w_t = w_t.slice(0, p.expert_offset, p.expert_offset + p.var.shape()[0]);
    const std::vector<double> g = p.var.value().to_doubles(), w = w_t.contiguous().to_doubles();
    ASSERT_EQ(g.size(), w.size()) << p.name;
    double diff = 0, scale = 0, d2 = 0, w2 = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      diff = std::max(diff, std::fabs(g[i] - w[i]));
      scale = std::max(scale, std::fabs(w[i]));
      d2 += (g[i] - w[i]) * (g[i] - w[i]);
      w2 += w[i] * w[i];
    }
    const double d = scale > 0 ? diff / scale : diff, l2 = w2 > 0 ? std::sqrt(d2 / w2) : std::sqrt(d2);
    EXPECT_LE(d, elementwise) << p.name << " on rank " << testing::world_rank() << ": max |diff| " << diff;
    EXPECT_LE(l2, kTol) << p.name << " on rank " << testing::world_rank();
    worst.weights = std::max(worst.weights, d);
    worst.l2 = std::max(worst.l2, l2);
  }
}

// Trains PP `pp` x EP `ep` on the whole world and, beside it, the same config on each rank's world
// of one (micro-batches as large as the ranks of a stage read together), and with EP > 1 also EP
// alone on the ranks of each stage; compares every step and the final weights.
void expect_pipeline_matches_one_rank(int pp, int ep, const std::vector<std::string>& extra) {
  auto world = parallel::mpi_world();
  const int r = world->rank(), n = world->size();
  const int data_ranks = n / pp;
  const bool zero = std::find(extra.begin(), extra.end(), "parallel.zero_stage=1") != extra.end();
  const std::string name = fmt::format("pp{}-ep{}{}", pp, ep, zero ? "-zero1" : "");
  const std::string layout = fmt::format("PP {} x EP {}{}", pp, ep, zero ? " x ZeRO-1" : "");
  const auto config = [&](const std::string& dir, std::vector<std::string> sets) {
    sets.push_back("run.dir=" + run_dir(dir));
    return parse_config(kYaml, sets, name);
  };
  Trainer one(config(fmt::format("{}-one-rank{}", name, r), {fmt::format("train.micro_batch_size={}", 2 * data_ranks)}),
              parallel::make_process_groups(world->split(/*color=*/r, /*key=*/0), 1));
  std::unique_ptr<Trainer> ep_only;
  if (ep > 1)
    ep_only = std::make_unique<Trainer>(
        config(fmt::format("{}-ep-only{}", name, r / data_ranks), {fmt::format("parallel.expert_parallel={}", ep)}),
        parallel::make_process_groups(world->split(r / data_ranks, r), ep));
  std::vector<std::string> sets{fmt::format("parallel.pipeline_parallel={}", pp),
                                fmt::format("parallel.expert_parallel={}", ep)};
  sets.insert(sets.end(), extra.begin(), extra.end());
  const RunConfig piped_config = config(name, sets);
  Trainer piped(piped_config, make_run_groups(piped_config, world));

  const model::StageSpan span = piped.model().stage();
  const int stage = r / data_ranks;
  EXPECT_EQ(span.first, stage == 0);
  EXPECT_EQ(span.last, stage == pp - 1);

  Worst vs_one, vs_ep;
  for (int step = 1; step <= kSteps; ++step) {
    SCOPED_TRACE(fmt::format("{} step {}", name, step));
    const StepMetrics got = piped.train_step();
    expect_step_close(got, one.train_step(), vs_one);
    if (ep_only) expect_step_close(got, ep_only->train_step(), vs_ep);
    ASSERT_TRUE(got.pipeline_bubble_theory.has_value());
    EXPECT_DOUBLE_EQ(*got.pipeline_bubble_theory, double(pp - 1) / (4.0 + double(pp - 1)));
    ASSERT_EQ(got.pipeline_bubble.size(), size_t(pp));
    for (double b : got.pipeline_bubble) EXPECT_TRUE(b >= 0 && b < 1) << b;
    ASSERT_EQ(got.stage_mem_bytes.size(), size_t(pp));
    for (int64_t bytes : got.stage_mem_bytes) EXPECT_GT(bytes, 0);
  }
  expect_weights_close(piped, one, ep > 1 ? kEpElementwise : kTol, vs_one);
  if (ep_only) expect_weights_close(piped, *ep_only, kTol, vs_ep);

  // This stage holds its own layers only; both ends hold the tied embedding (MTP uses it too).
  EXPECT_LT(piped.model().parameters().all().size(), one.model().parameters().all().size());
  const model::Parameter* embed = piped.model().parameters().find("model.embed_tokens.weight");
  EXPECT_EQ(embed != nullptr, span.first || span.last);
  vs_one.print(fmt::format("{} on {} ranks vs one rank, 10 steps", layout, n));
  if (ep_only) vs_ep.print(fmt::format("{} on {} ranks vs EP {} alone, 10 steps", layout, n, ep));
}

TEST(MpiPipeline, MatchesOneRank) {
  const int n = testing::world_size();
  if (n == 2) expect_pipeline_matches_one_rank(2, 1, {});
  if (n == 3) expect_pipeline_matches_one_rank(3, 1, {"parallel.pipeline_layers=[2, 1, 1]"});
  if (n == 4) {
    expect_pipeline_matches_one_rank(4, 1, {});
    expect_pipeline_matches_one_rank(2, 2, {});
    // DeepSeek-V3's composition: stages x experts x ZeRO-1 (the dense moments sharded over the
    // stage's two ranks, each expert slice's over its one replica).
    expect_pipeline_matches_one_rank(2, 2, {"parallel.zero_stage=1"});
  }
}

// `daedalus plan` per stage (train/plan.h): each rank's step-1 peak (allocator high-water mark of
// live tensors) within 10% of the plan's prediction for its stage — the issue's bound, as for one
// stage (tests/test_plan.cpp, test_mpi_zero.cpp). The shape above with hidden 32 and 4 micro-batches
// of 4 x 32 tokens; np 2: PP 2, and PP 2 with fp8_block and selective recomputation; np 3: PP 3 with
// full recomputation; np 4: PP 4, PP 2 x ZeRO-1 (the stage's dense moments over its two ranks) and
// PP 2 x EP 2 x ZeRO-1. Stage s keeps min(P - s, 4) micro-batches in flight. What the plan leaves
// out is as for one stage (small tensors, the exact moment of the peak in backward).
// [measured: -1.0% to -4.9% on every rank]
TEST(MpiPipelinePlan, PredictedPeakWithinTenPercentOnEveryStage) {
  auto world = parallel::mpi_world();
  const int n = world->size();
  std::vector<std::vector<std::string>> layouts;
  if (n == 2)
    layouts = {{"parallel.pipeline_parallel=2"},
               {"parallel.pipeline_parallel=2", "precision.recipe=fp8_block", "train.recompute=selective"}};
  if (n == 3) layouts = {{"parallel.pipeline_parallel=3", "train.recompute=full"}};
  if (n == 4)
    layouts = {{"parallel.pipeline_parallel=2", "parallel.zero_stage=1"},
               {"parallel.pipeline_parallel=4"},
               {"parallel.pipeline_parallel=2", "parallel.expert_parallel=2", "parallel.zero_stage=1"}};
  for (size_t i = 0; i < layouts.size(); ++i) {
    std::vector<std::string> sets = layouts[i];
    std::string layout;
    for (const std::string& set : sets) {
      if (!layout.empty()) layout += ' ';
      layout.append(set, set.find('.') + 1);
    }
    const std::string name = fmt::format("plan-np{}-{}", n, i);
    sets.insert(sets.end(), {"run.dir=" + run_dir(name), "train.seq_len=32", "train.micro_batch_size=4",
                             "model.hidden_size=32", "model.vocab_size=64", "data.synthetic.vocab=64"});
    const RunConfig c = parse_config(kYaml, sets, name);
    Trainer trainer(c, make_run_groups(c, world));
    const int64_t measured = trainer.train_step().mem_bytes;
    const int stage = world->rank() / (n / int(c.parallel.pipeline_parallel));
    const MemoryPlan plan = plan_memory(c, n, stage);
    const double error = (double(plan.peak) - double(measured)) / double(measured);
    std::printf(
        "[ plan ] np%d %s rank %d stage %d: predicted %lld, measured %lld bytes (%+.1f%%); weights %lld "
        "grads %lld moments %lld activations %lld transient %lld\n",
        n, layout.c_str(), world->rank(), stage, (long long)plan.peak, (long long)measured, 100 * error,
        (long long)plan.weights, (long long)plan.gradients, (long long)plan.moments, (long long)plan.activations,
        (long long)plan.transient);
    EXPECT_LE(std::abs(error), 0.10) << layout << " stage " << stage;
  }
}

}  // namespace
}  // namespace daedalus::train
