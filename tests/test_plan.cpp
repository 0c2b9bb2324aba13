// `daedalus plan` (train/plan.h): its per-rank peak against the allocator's measured peak of real
// training steps, its parameter accounting against the model's own, and DeepSeek-V3's layout.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

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

// DeepSeek-V3's own layout (arXiv:2412.19437, section 3): 2048 H800s, EP 64, ZeRO-1 over the data
// parallel ranks. Without pipeline stages every rank holds every layer's dense weights: the plan
// must say it does not fit, and what the numbers are.
TEST(Plan, DeepSeekV3OnItsOwnLayoutNeedsPipelineStages) {
  RunConfig c = load_config((kRepo / "configs" / "deepseek-v3.yaml").string(),
                            {"parallel.zero_stage=1", "parallel.expert_parallel=64"});
  const model::ParameterCounts counts = model::count_parameters(c.model);
  EXPECT_EQ(counts.total, 671026419200);  // 671.03B (DeepSeek: 671B)
  const Hardware h800 = load_hardware("h800");
  const Plan plan = make_plan(c, 2048, h800);
  // Held: the dense weights (embedding, attention, 3 dense MLPs, shared experts, routers, head,
  // MTP) plus 1/64 of the routed experts.
  int64_t routed = 0, buffers = 0;
  for (int64_t l = 0; l < c.model.num_hidden_layers + c.model.num_nextn_predict_layers; ++l) {
    routed += model::layer_parameters(c.model, l).routed;
    buffers += model::layer_parameters(c.model, l).buffers;
  }
  const int64_t held = counts.total + counts.mtp_trained - buffers - routed + routed / 64;
  EXPECT_NEAR(double(plan.memory.params_held), double(held), 1e3);
  EXPECT_EQ(plan.memory.gradients, 4 * plan.memory.params_held);
  EXPECT_FALSE(plan.fits);
  EXPECT_FALSE(smallest_fitting_layout(c, h800, 4096).has_value());
  std::printf("%s", format_plan(c, plan, h800).c_str());
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
