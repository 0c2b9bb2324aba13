// Checkpoints through the trainer: a run stopped half-way and resumed matches an uninterrupted one
// bit for bit (fp32, fp8_block, fp8_tensor_delayed with its amax histories); stops on stop_after,
// the time limit and SIGTERM save and resume; init_from loads weights only, strict or not.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "tests/testing.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

namespace fs = std::filesystem;

// A DeepSeek-V3-shaped model small enough for a step in tens of milliseconds: MLA, one dense and
// one MoE layer (4 experts, top-2, a shared expert), MTP depth 1, on a synthetic Markov chain.
const char* kTinyYaml = R"(
run: {name: ckpt-test, seed: 7}
model:
  vocab_size: 64
  hidden_size: 32
  intermediate_size: 48
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
optimizer: {lr: 1.0e-2}
schedule: {type: cosine, warmup_steps: 2}
train: {steps: 6, micro_batch_size: 2, seq_len: 16, log_every: 1, eval_every: 2, eval_batches: 2}
data:
  format: synthetic
  synthetic: {vocab: 64, tokens: 6000}
checkpoint: {every: 0, keep_last: 0}
logging: {progress: never}
)";

std::string test_dir(const std::string& name) {
  const fs::path dir = fs::path(daedalus::testing::process_temp_path("daedalus-ckpt-" + name));
  fs::remove_all(dir);
  return dir.string();
}

RunConfig tiny_config(const std::string& dir, std::vector<std::string> sets = {}) {
  sets.insert(sets.begin(), "run.dir=" + dir);
  return parse_config(kTinyYaml, sets, "tiny-test.yaml");
}

std::unique_ptr<Trainer> make_trainer(const RunConfig& c) {
  return std::make_unique<Trainer>(c, parallel::make_process_groups(parallel::mpi_world(), 1));
}

// metrics.jsonl lines without the keys that measure time or memory.
std::vector<nlohmann::json> metrics(const std::string& dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    for (const char* key : {"tokens_per_s", "step_ms", "gpu_ms", "grad_sync_ms", "mem_bytes", "model_flops_per_s", "mfu"}) j.erase(key);
    out.push_back(j);
  }
  return out;
}

// Per tensor: path -> digest of its values (a full read of the file).
std::map<std::string, uint64_t> digests(const std::string& path) {
  const CheckpointInfo info = read_checkpoint_info(path);
  const Verification v = verify_checkpoint(path, info);
  EXPECT_EQ(v.verdict, Verdict::ok) << path;
  std::map<std::string, uint64_t> out;
  for (size_t i = 0; i < info.tensors.size(); ++i) out[info.tensors[i].path] = v.digests[i];
  return out;
}

class ExactResume : public ::testing::TestWithParam<const char*> {};

TEST_P(ExactResume, HalfRunPlusResumeMatchesAStraightRunBitForBit) {
  const std::string recipe = GetParam();
  const std::vector<std::string> sets = {"precision.recipe=" + recipe, "precision.amax_history_len=4"};
  const std::string straight = test_dir("straight-" + recipe), split = test_dir("split-" + recipe);

  EXPECT_EQ(make_trainer(tiny_config(straight, sets))->run(), StopReason::finished);

  std::vector<std::string> first_half = sets;
  first_half.push_back("train.stop_after=3");
  EXPECT_EQ(make_trainer(tiny_config(split, first_half))->run(), StopReason::stop_after);
  ASSERT_TRUE(fs::exists(checkpoint_path(split, 3)));
  auto resumed = make_trainer(tiny_config(split, sets));
  EXPECT_EQ(resumed->resumed_from(), checkpoint_path(split, 3));
  EXPECT_EQ(resumed->step(), 3);
  EXPECT_EQ(resumed->train_loader().consumed_samples(), 3 * 2);
  EXPECT_EQ(resumed->run(), StopReason::finished);

  // Train lines: every step's loss, grad norm, lr, load balance bit-identical. Eval lines: the split
  // run evaluates once more (at its stop, step 3); the others must match.
  const std::vector<nlohmann::json> a = metrics(straight), b = metrics(split);
  std::vector<nlohmann::json> a_train, b_train, a_eval, b_eval;
  for (const auto& j : a) (j.contains("val_loss") ? a_eval : a_train).push_back(j);
  for (const auto& j : b)
    if (!j.contains("val_loss"))
      b_train.push_back(j);
    else if (j["step"] != 3)
      b_eval.push_back(j);
  ASSERT_EQ(a_train.size(), 6u);
  EXPECT_EQ(a_train, b_train);
  EXPECT_EQ(a_eval, b_eval);

  // Final weights, moments, router biases and amax histories.
  const auto da = digests(checkpoint_path(straight, 6)), db = digests(checkpoint_path(split, 6));
  EXPECT_EQ(da, db);
  size_t fp8 = 0;
  for (const auto& [name, d] : da) fp8 += name.rfind("/fp8/", 0) == 0;
  if (recipe == "fp8_tensor_delayed") {
    EXPECT_GT(fp8, 10u);  // every Linear and expert stack keeps histories
  } else {
    EXPECT_EQ(fp8, 0u);
  }
}

// nvfp4: its stochastic rounding and Hadamard signs are keyed by (run.seed, step, micro-batch,
// module), nothing kept between steps, so the resumed half draws the same words.
INSTANTIATE_TEST_SUITE_P(Recipes, ExactResume, ::testing::Values("fp32", "fp8_block", "fp8_tensor_delayed", "nvfp4"));

TEST(CheckpointTrainer, DelayedHistoriesRoundTripExactly) {
  const std::string dir = test_dir("histories");
  auto t = make_trainer(tiny_config(dir, {"precision.recipe=fp8_tensor_delayed", "train.steps=2"}));
  t->run();
  auto fresh = make_trainer(tiny_config(test_dir("histories-fresh"), {"precision.recipe=fp8_tensor_delayed",
                                                                      "checkpoint.resume=" + checkpoint_path(dir, 2)}));
  const auto a = t->model().linears(), b = fresh->model().linears();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i]->recipe().delayed()) continue;  // embed_tokens and lm_head stay in bf16
    EXPECT_FALSE(a[i]->state().x.values().empty()) << a[i]->name();
    EXPECT_EQ(a[i]->state().x.values(), b[i]->state().x.values()) << a[i]->name();
    EXPECT_EQ(a[i]->state().w.values(), b[i]->state().w.values()) << a[i]->name();
    EXPECT_EQ(a[i]->state().dy.values(), b[i]->state().dy.values()) << a[i]->name();
  }
  const auto ga = t->model().grouped_linears(), gb = fresh->model().grouped_linears();
  for (size_t i = 0; i < ga.size(); ++i)
    for (size_t e = 0; e < ga[i]->states().size(); ++e)
      EXPECT_EQ(ga[i]->states()[e].dy.values(), gb[i]->states()[e].dy.values()) << ga[i]->name() << " expert " << e;
}

TEST(CheckpointTrainer, EveryAndKeepLastPrune) {
  const std::string dir = test_dir("prune");
  make_trainer(tiny_config(dir, {"train.steps=5", "checkpoint.every=1", "checkpoint.keep_last=2"}))->run();
  std::vector<int64_t> steps;
  for (const CheckpointFile& f : list_checkpoints(dir)) steps.push_back(f.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{5, 4}));
}

TEST(CheckpointTrainer, SigtermFinishesTheStepSavesAndResumes) {
  const std::string dir = test_dir("sigterm");
  setenv("DAEDALUS_TEST_SIGNAL_AT_STEP", "2", 1);  // raise(SIGTERM) after step 2
  auto t = make_trainer(tiny_config(dir));
  unsetenv("DAEDALUS_TEST_SIGNAL_AT_STEP");
  EXPECT_EQ(t->run(), StopReason::signal);
  EXPECT_EQ(t->step(), 2);
  EXPECT_TRUE(fs::exists(checkpoint_path(dir, 2)));
  t.reset();  // the run ends (and its run-dir lock with it) before the next one starts
  auto next = make_trainer(tiny_config(dir));
  EXPECT_EQ(next->step(), 2);
  EXPECT_EQ(next->run(), StopReason::finished);
  EXPECT_EQ(next->step(), 6);
}

TEST(CheckpointTrainer, TimeLimitSavesBeforeTheLimit) {
  const std::string dir = test_dir("time-limit");
  // 6 ms: any step plus a save exceeds it, so the run stops after its first step, with a checkpoint.
  auto t = make_trainer(tiny_config(dir, {"train.time_limit_min=0.0001"}));
  EXPECT_EQ(t->run(), StopReason::time_limit);
  EXPECT_EQ(t->step(), 1);
  EXPECT_TRUE(fs::exists(checkpoint_path(dir, 1)));
}

TEST(CheckpointTrainer, InitFromLoadsWeightsOnlyAndStrictDecidesShapeMismatches) {
  const std::string source = test_dir("init-source");
  auto trained = make_trainer(tiny_config(source, {"train.steps=2"}));
  trained->run();
  const std::string file = checkpoint_path(source, 2);

  // Same shape: weights equal the checkpoint's, the optimizer and step start fresh.
  auto same = make_trainer(tiny_config(test_dir("init-same"), {"checkpoint.init_from=" + file}));
  EXPECT_EQ(same->step(), 0);
  EXPECT_EQ(same->optimizer().step_count(), 0);
  EXPECT_EQ(same->train_loader().consumed_samples(), 0);
  const Tensor w = same->model().parameters().get("model.layers.0.self_attn.o_proj.weight").var.value();
  const Tensor ref = trained->model().parameters().get("model.layers.0.self_attn.o_proj.weight").var.value();
  EXPECT_EQ(w.to_vector<float>(), ref.to_vector<float>());

  // Another dense MLP width: strict refuses and names the tensor; non-strict keeps the initial values.
  const std::vector<std::string> other = {"model.intermediate_size=40", "checkpoint.init_from=" + file};
  try {
    make_trainer(tiny_config(test_dir("init-strict"), other));
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj.weight: checkpoint [48, 32], model [40, 32]"),
              std::string::npos)
        << e.what();
  }
  std::vector<std::string> lenient = other;
  lenient.push_back("checkpoint.strict=false");
  auto loose = make_trainer(tiny_config(test_dir("init-loose"), lenient));
  EXPECT_EQ(loose->model().parameters().get("model.layers.0.self_attn.o_proj.weight").var.value().to_vector<float>(),
            ref.to_vector<float>());
  const model::Parameter& up = loose->model().parameters().get("model.layers.0.mlp.up_proj.weight");
  const Tensor init = model::initial_value(7, up.name, up.var.shape(), model::Init::normal, 0.02);
  EXPECT_EQ(up.var.value().to_vector<float>(), init.to_vector<float>());
}

TEST(CheckpointTrainer, ResumingAnotherShapeIsAnErrorNamingTheFile) {
  const std::string source = test_dir("shape-source");
  make_trainer(tiny_config(source, {"train.steps=2"}))->run();
  const std::string file = checkpoint_path(source, 2);
  try {
    make_trainer(tiny_config(test_dir("shape-other"), {"model.hidden_size=48", "checkpoint.resume=" + file}));
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(file + ": the checkpoint does not match this model"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace daedalus::train
