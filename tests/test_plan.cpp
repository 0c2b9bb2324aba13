// `daedalus plan` (train/plan.h): its per-rank peak against the allocator's measured peak of real
// training steps, its parameter accounting against the model's own, and DeepSeek-V3's layout.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "model/param_count.h"
#include "tests/testing.h"
#include "train/config.h"
#include "train/hardware.h"
#include "train/plan.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

namespace fs = std::filesystem;

const fs::path kRepo = fs::path(__FILE__).parent_path().parent_path();

// A DeepSeek-V3-shaped model where activations and weights are of one order (seq 128, 4 sequences
// per micro-batch): MLA, one dense and one MoE layer (8 experts, top-2, a shared expert), MTP.
const char* kYaml = R"(
run: {name: plan-test, seed: 3}
model:
  vocab_size: 256
  hidden_size: 64
  intermediate_size: 128
  moe_intermediate_size: 32
  num_hidden_layers: 2
  first_k_dense_replace: 1
  num_attention_heads: 4
  q_lora_rank: 32
  kv_lora_rank: 32
  qk_nope_head_dim: 16
  qk_rope_head_dim: 8
  v_head_dim: 16
  n_routed_experts: 8
  n_shared_experts: 1
  num_experts_per_tok: 2
  n_group: 1
  topk_group: 1
  max_position_embeddings: 256
  num_nextn_predict_layers: 1
precision: {recipe: fp32}
optimizer: {lr: 1.0e-3}
schedule: {type: constant}
train: {steps: 1, micro_batch_size: 4, seq_len: 128, log_every: 1, eval_every: 0, device: cpu}
data:
  format: synthetic
  synthetic: {vocab: 256, tokens: 20000}
parallel: {backend: mpi}
checkpoint: {every: 0, resume: none}
logging: {progress: never, jsonl: false}
)";

RunConfig config_of(std::vector<std::string> sets) {
  const fs::path dir = fs::path(daedalus::testing::process_temp_path("daedalus-plan"));
  sets.push_back("run.dir=" + dir.string());
  return parse_config(kYaml, sets, "plan-test.yaml");
}

// The measured peak of step 1 (allocator high-water mark of live tensors, this process).
int64_t measured_peak(const RunConfig& c) {
  Trainer trainer(c, parallel::make_process_groups(parallel::mpi_world(), 1));
  return trainer.train_step().mem_bytes;
}

struct Case {
  const char* name;
  std::vector<std::string> sets;
};

class PlanPeak : public ::testing::TestWithParam<Case> {};

// Within 10% of the measured peak (the issue's bound). What the plan leaves out: small tensors
// (router bookkeeping, index tensors, the batch), kernel workspaces, and the exact moment of the
// peak inside backward (it takes the larger of backward's two ends). [measured: printed]
TEST_P(PlanPeak, PredictedPeakWithinTenPercentOfMeasured) {
  const RunConfig c = config_of(GetParam().sets);
  const int64_t measured = measured_peak(c);
  const MemoryPlan plan = plan_memory(c, 1);
  const double error = (double(plan.peak) - double(measured)) / double(measured);
  std::printf(
      "[ plan ] %s: predicted %lld, measured %lld bytes (%+.1f%%); weights %lld grads %lld moments %lld "
      "activations %lld caches %lld transient %lld\n",
      GetParam().name, (long long)plan.peak, (long long)measured, 100 * error, (long long)plan.weights,
      (long long)plan.gradients, (long long)plan.moments, (long long)plan.activations, (long long)plan.weight_caches,
      (long long)plan.transient);
  EXPECT_LE(std::abs(error), 0.10);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, PlanPeak,
    ::testing::Values(Case{"fp32_none", {}}, Case{"fp32_selective", {"train.recompute=selective"}},
                      Case{"fp32_full", {"train.recompute=full"}},
                      Case{"fp8_block_none", {"precision.recipe=fp8_block"}},
                      Case{"fp8_block_selective", {"precision.recipe=fp8_block", "train.recompute=selective"}},
                      Case{"bf16_full_bf16_moments",
                           {"precision.recipe=bf16", "train.recompute=full", "optimizer.state_dtype=bf16"}},
                      Case{"fp32_accum2", {"train.grad_accum_steps=2", "train.micro_batch_size=2"}}),
    [](const ::testing::TestParamInfo<Case>& param_info) { return std::string(param_info.param.name); });

TEST(Plan, LayerParametersAddUpToTheModelsCounts) {
  for (const char* name : {"tiny.yaml", "small.yaml", "deepseek-v3.yaml"}) {
    const model::ModelConfig m = load_config((kRepo / "configs" / name).string()).model;
    const model::ParameterCounts counts = model::count_parameters(m);
    int64_t main = 0, mtp = 0;
    for (int64_t l = 0; l < m.num_hidden_layers + m.num_nextn_predict_layers; ++l) {
      const model::LayerParameters p = model::layer_parameters(m, l);
      (l < m.num_hidden_layers ? main : mtp) += p.dense + p.routed + p.buffers;
    }
    const int64_t outside = m.vocab_size * m.hidden_size * (m.tie_word_embeddings ? 1 : 2) + m.hidden_size;
    EXPECT_EQ(main + outside, counts.total) << name;
    EXPECT_EQ(mtp, counts.mtp_trained) << name;
  }
}

// Pipeline stages: the stages' parameters add up to the whole model's, plus the embedding's copy
// the last stage keeps when it is tied or MTP embeds with it (and nothing else is duplicated);
// each stage holds the trainer's split and 1F1B's min(P - s, m) micro-batches in flight. The
// whole model's count is model/param_count.h's, independently of the plan.
TEST(Plan, StageParametersAddUpToTheWholeModel) {
  struct StageCase {
    std::string file;  // empty: this file's kYaml
    std::vector<std::string> sets;
    int64_t world;
  };
  const std::vector<StageCase> cases = {
      {"", {"parallel.pipeline_parallel=2", "train.grad_accum_steps=4"}, 2},          // MTP: the embedding twice
      {"", {"parallel.pipeline_parallel=2", "model.num_nextn_predict_layers=0"}, 2},  // no copy
      {"", {"parallel.pipeline_parallel=2", "model.num_nextn_predict_layers=0", "model.tie_word_embeddings=true"}, 2},
      {"deepseek-v3.yaml",
       {"parallel.pipeline_parallel=16", "parallel.expert_parallel=1", "train.grad_accum_steps=8"},
       16},
      {"deepseek-v3.yaml", {"parallel.pipeline_parallel=4", "parallel.pipeline_layers=[20, 20, 20, 1]"}, 256},
  };
  for (const StageCase& k : cases) {
    const RunConfig c = k.file.empty() ? config_of(k.sets) : load_config((kRepo / "configs" / k.file).string(), k.sets);
    const model::ModelConfig& m = c.model;
    const model::ParameterCounts counts = model::count_parameters(m);
    int64_t routed = 0, buffers = 0;
    for (int64_t l = 0; l < m.num_hidden_layers + m.num_nextn_predict_layers; ++l) {
      routed += model::layer_parameters(m, l).routed;
      buffers += model::layer_parameters(m, l).buffers;
    }
    const int64_t ep = c.parallel.expert_parallel, pp = c.parallel.pipeline_parallel;
    const bool copy = m.tie_word_embeddings || m.num_nextn_predict_layers > 0;
    const int64_t want =
        counts.total + counts.mtp_trained - buffers - routed + routed / ep + (copy ? m.vocab_size * m.hidden_size : 0);
    const std::vector<RankShare> shares = stage_shares(c);
    const std::vector<int64_t> split = stage_layers(c);
    ASSERT_EQ(int64_t(shares.size()), pp);
    int64_t held = 0, layer = 0;
    for (int64_t s = 0; s < pp; ++s) {
      const RankShare& share = shares[size_t(s)];
      held += plan_memory(c, k.world, s).params_held;
      EXPECT_EQ(share.first_layer, layer) << k.file << " stage " << s;
      layer += split[size_t(s)];
      EXPECT_EQ(share.end_layer, layer);
      EXPECT_EQ(share.in_flight, std::min(pp - s, c.train.grad_accum_steps));
      EXPECT_EQ(share.embedding, s == 0 || (s == pp - 1 && copy));
      EXPECT_EQ(share.head, s == pp - 1);
    }
    EXPECT_EQ(layer, m.num_hidden_layers);
    EXPECT_NEAR(double(held), double(want), double(m.num_hidden_layers)) << k.file;  // routed / ep per layer rounds
  }
}

// The step with P stages and m micro-batches: (m + P - 1) slots of the slowest stage, of which
// P - 1 idle, (P - 1) / (m + P - 1) of the step (hand-computed: 15/23 at P = 16, m = 8); a slot is
// that stage's compute-or-memory time plus its all-to-all and p2p over m; the p2p is m hidden
// states [1, 4096, 7168] fp32 each way it talks (117.4 MB each). One rank per stage: no gradient
// sync, so the step is the slots alone.
TEST(Plan, PipelineStepIsTheSlowestStagesSlotsWithTheBubble) {
  const RunConfig c =
      load_config((kRepo / "configs" / "deepseek-v3.yaml").string(),
                  {"parallel.pipeline_parallel=16", "parallel.expert_parallel=1", "train.grad_accum_steps=8"});
  const StepPlan s = plan_step(c, 16, load_hardware("h800"));
  EXPECT_DOUBLE_EQ(s.bubble, 15.0 / 23.0);
  EXPECT_EQ(s.grad_sync_s, 0);
  const double slot = (std::max(s.compute_s, s.memory_s) + s.all_to_all_s + s.p2p_s) / 8;
  EXPECT_NEAR(s.step_s, 23 * slot, 1e-12 * s.step_s);
  EXPECT_NEAR(s.bubble_s, 15 * slot, 1e-12 * s.step_s);
  const int64_t talks = (s.slowest_stage > 0 ? 1 : 0) + (s.slowest_stage < 15 ? 1 : 0);
  EXPECT_DOUBLE_EQ(s.p2p_bytes, 8.0 * double(talks) * 4 * 4096 * 7168);
  // One stage: no bubble, the step is the one stage's m slots.
  RunConfig one = c;
  one.parallel.pipeline_parallel = 1;
  const StepPlan whole = plan_step(one, 1, load_hardware("h800"));
  EXPECT_EQ(whole.bubble, 0);
  EXPECT_EQ(whole.p2p_bytes, 0);
  EXPECT_NEAR(whole.step_s, std::max(whole.compute_s, whole.memory_s) + whole.all_to_all_s, 1e-12 * whole.step_s);
}

// DeepSeek-V3's own layout (arXiv:2412.19437, section 3): 2048 H800s as 16 pipeline stages x EP 64
// x ZeRO-1 over the 128 ranks of a stage, 15360 sequences of 4096 tokens per step at the end of
// training (120 micro-batches of one sequence per data-parallel rank). Without stages every rank
// holds every layer's dense weights and nothing fits; with them the plan gives each stage's
// per-GPU memory against the H800's 80 GB (74.5 GiB). [measured: printed]
TEST(Plan, DeepSeekV3OnItsOwnLayoutWithPipelineStages) {
  RunConfig c = load_config((kRepo / "configs" / "deepseek-v3.yaml").string(),
                            {"parallel.zero_stage=1", "parallel.expert_parallel=64", "train.recompute=selective"});
  const model::ParameterCounts counts = model::count_parameters(c.model);
  EXPECT_EQ(counts.total, 671026419200);  // 671.03B (DeepSeek: 671B)
  const Hardware h800 = load_hardware("h800");
  const Plan flat = make_plan(c, 2048, h800);
  // Held without stages: the dense weights (embedding, attention, 3 dense MLPs, shared experts,
  // routers, head, MTP) plus 1/64 of the routed experts.
  int64_t routed = 0, buffers = 0;
  for (int64_t l = 0; l < c.model.num_hidden_layers + c.model.num_nextn_predict_layers; ++l) {
    routed += model::layer_parameters(c.model, l).routed;
    buffers += model::layer_parameters(c.model, l).buffers;
  }
  const int64_t held = counts.total + counts.mtp_trained - buffers - routed + routed / 64;
  EXPECT_NEAR(double(flat.memory.params_held), double(held), 1e3);
  EXPECT_EQ(flat.memory.gradients, 4 * flat.memory.params_held);
  EXPECT_FALSE(flat.fits);

  c.parallel.pipeline_parallel = 16;
  c.train.grad_accum_steps = 120;
  const Plan staged = make_plan(c, 2048, h800);
  ASSERT_EQ(staged.stages.size(), 16u);
  // The balanced split (model/stages.h): 4 layers per stage, 1 and the head on the last; stage 0
  // holds 16 micro-batches in flight, the embedding and 3 dense layers.
  EXPECT_EQ(stage_shares(c)[0].in_flight, 16);
  EXPECT_EQ(stage_shares(c)[15].end_layer - stage_shares(c)[15].first_layer, 1);
  for (const MemoryPlan& m : staged.stages) EXPECT_LT(m.peak, flat.memory.peak);
  EXPECT_NEAR(staged.step.bubble, 15.0 / 135.0, 1e-15);
  // Daedalus keeps FP32 activations: with DeepSeek-V3's selective recomputation stage 0's 16
  // micro-batches in flight do not fit 80 GB; recomputing whole layers, every stage does.
  EXPECT_FALSE(staged.fits);
  std::printf("%s", format_plan(c, staged, h800).c_str());
  c.train.recompute = model::Recompute::full;
  const Plan full = make_plan(c, 2048, h800);
  EXPECT_TRUE(full.fits);
  std::printf("recompute full: heaviest stage %lld, peak %.2f GiB\n", (long long)full.heaviest_stage,
              double(full.memory.peak) / double(int64_t(1) << 30));
  c.train.recompute = model::Recompute::selective;
  const std::optional<Layout> layout = smallest_fitting_layout(c, h800, 4096);
  ASSERT_TRUE(layout.has_value()) << "with pipeline stages some layout fits";
  EXPECT_GT(layout->config.parallel.pipeline_parallel, 1);
  EXPECT_TRUE(make_plan(layout->config, layout->world, h800).fits);
  std::printf("smallest layout that fits: world %lld, PP %lld, EP %lld, ZeRO %lld\n", (long long)layout->world,
              (long long)layout->config.parallel.pipeline_parallel, (long long)layout->config.parallel.expert_parallel,
              (long long)layout->config.parallel.zero_stage);
}

TEST(Plan, HardwareTablesLoadAndBadOnesNameTheKey) {
  for (const char* name : {"h100", "h800", "h200", "b200", "cpu"}) {
    const Hardware h = load_hardware(name);
    EXPECT_GT(h.memory_bytes, 0) << name;
    EXPECT_GE(h.peak_fp8, h.peak_bf16) << name;
    EXPECT_FALSE(h.sources.empty()) << name << ": a built-in table cites its sources";
  }
  EXPECT_EQ(load_hardware("h100").peak_bf16, 989.4e12);
  EXPECT_THROW(load_hardware("a100x"), InputError);
  const fs::path bad = fs::path(daedalus::testing::process_temp_path("bad-hardware") + ".yaml");
  std::FILE* f = std::fopen(bad.c_str(), "w");
  std::fputs("name: x\nmemory_gib: lots\n", f);
  std::fclose(f);
  try {
    load_hardware(bad.string());
    ADD_FAILURE() << "a bad table loaded";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("memory_gib"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace daedalus::train
