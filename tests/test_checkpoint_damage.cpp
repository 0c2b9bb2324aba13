// Damage to any byte of a checkpoint, metadata included: seeded bit flips are detected (inspect's
// verdict, CheckpointReadError) or change nothing; `resume: auto` loads the undamaged state or
// falls back to the previous file; HDF5 crashing on damaged metadata happens in a child process
// (data/isolated.h), never in the trainer; older (format 1) files still load.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "data/isolated.h"
#include "tests/checkpoint_damage.h"
#include "tests/testing.h"
#include "train/checkpoint.h"
#include "train/checkpoint_h5.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

namespace fs = std::filesystem;

// Two layers (dense, then 4 experts), MLA, MTP depth 1, delayed scaling: every kind of tensor and
// amax histories in /fp8, in a file of about 200 KB.
const char* kYaml = R"(
run: {name: ckpt-damage, seed: 5}
model: {vocab_size: 64, hidden_size: 32, intermediate_size: 48, moe_intermediate_size: 16, num_hidden_layers: 2,
        first_k_dense_replace: 1, num_attention_heads: 2, q_lora_rank: 16, kv_lora_rank: 16, qk_nope_head_dim: 8,
        qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2,
        n_group: 1, topk_group: 1, max_position_embeddings: 64, num_nextn_predict_layers: 1}
precision: {recipe: fp8_tensor_delayed, amax_history_len: 4}
schedule: {warmup_steps: 1}
train: {steps: 2, micro_batch_size: 2, seq_len: 16, log_every: 1, eval_every: 0}
data: {format: synthetic, synthetic: {vocab: 64, tokens: 4000}}
checkpoint: {every: 1, keep_last: 0}
logging: {progress: never, jsonl: false}
)";

RunConfig config(const std::string& dir) { return parse_config(kYaml, {"run.dir=" + dir}, "damage-test.yaml"); }

std::unique_ptr<Trainer> trainer(const RunConfig& c) {
  return std::make_unique<Trainer>(c, parallel::make_process_groups(parallel::mpi_world(), 1));
}

// A run dir with step_1 and step_2 saved by training (non-empty amax histories): trained once per
// test process, copied for each test that damages it.
std::string trained_run(const std::string& name) {
  static const std::string shared = [] {
    const std::string dir = testing::process_temp_path("daedalus-damage-trained");
    fs::remove_all(dir);
    trainer(config(dir))->run();
    return dir;
  }();
  const std::string dir = testing::process_temp_path("daedalus-damage-" + name);
  fs::remove_all(dir);
  fs::copy(shared, dir, fs::copy_options::recursive);
  return dir;
}

uint64_t resumed_fingerprint(Trainer& t) {
  uint64_t h = 0xcbf29ce484222325ull;
  auto add = [&](const Tensor& x) {
    const Tensor c = x.contiguous();
    const auto* p = reinterpret_cast<const unsigned char*>(c.data<float>());
    for (size_t i = 0; i < size_t(c.numel()) * sizeof(float); ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  };
  for (const model::Parameter& p : t.model().parameters().all()) add(p.var.value());
  for (const Param& p : t.optimizer().params()) {
    add(t.optimizer().exp_avg(p.name));
    add(t.optimizer().exp_avg_sq(p.name));
  }
  for (model::Linear* l : t.model().linears())
    for (const fp8::AmaxHistory* a : {&l->state().x, &l->state().w, &l->state().dy})
      for (float v : a->values()) h = (h ^ uint64_t(std::hash<float>{}(v))) * 0x100000001b3ull;
  const TrainerState s = t.state();
  for (int64_t v : {s.step, s.tokens_seen, s.consumed_samples, t.optimizer().step_count()})
    h = (h ^ uint64_t(v)) * 0x100000001b3ull;
  return h;
}

TEST(CheckpointDamage, BitFlipsAcrossAWholeFileAreDetectedOrChangeNothing) {
  const std::string dir = trained_run("flips");
  const testing::FlipTally t = testing::flip_trials(checkpoint_path(dir, 2), dir + "/work.h5", config(dir), /*seed=*/1,
                                                    testing::flip_trial_count(32));
  for (const std::string& f : t.failures) ADD_FAILURE() << f;
  EXPECT_EQ(t.inspect_detected + t.inspect_same, t.trials);
  EXPECT_EQ(t.load_detected + t.load_same, t.trials);
  // Half the trials hit metadata, half anywhere (mostly values): most must be caught, or the test
  // flips nothing that matters. (Flips in free space or padding legitimately change nothing.)
  EXPECT_GE(t.inspect_detected, t.trials / 2) << t.inspect_same << " unchanged";
  EXPECT_GE(t.load_detected, t.trials / 2);
  std::printf("%d trials: inspect %d detected, %d unchanged; load %d detected, %d identical\n", t.trials,
              t.inspect_detected, t.inspect_same, t.load_detected, t.load_same);
}

TEST(CheckpointDamage, ResumeAutoLoadsTheUndamagedStateOrFallsBack) {
  const std::string dir = trained_run("resume");
  const std::string newest = checkpoint_path(dir, 2), older = checkpoint_path(dir, 1);
  const std::string pristine = dir + "/pristine.h5";
  fs::copy_file(newest, pristine);
  RunConfig c = config(dir);
  c.train.steps = 4;
  std::map<std::string, uint64_t> expected;
  for (const std::string& path : {newest, older}) {
    RunConfig from = c;
    from.checkpoint.resume = path;
    auto t = trainer(from);
    expected[path] = resumed_fingerprint(*t);
  }
  int fell_back = 0, loaded = 0;
  const int trials = testing::flip_trial_count(12);
  for (int i = 0; i < trials; ++i) {
    testing::copy_with_flips(pristine, newest, /*seed=*/500 + uint64_t(i), 1, /*metadata_only=*/i % 3 != 0);
    auto t = trainer(c);
    ASSERT_TRUE(t->resumed_from() == newest || t->resumed_from() == older) << "trial " << i;
    EXPECT_EQ(resumed_fingerprint(*t), expected[t->resumed_from()]) << "trial " << i << ": " << t->resumed_from();
    (t->resumed_from() == newest ? loaded : fell_back)++;
  }
  EXPECT_GE(fell_back, trials / 2);  // most flips are caught
  std::printf("resume auto: %d fell back to step 1, %d loaded step 2 unchanged\n", fell_back, loaded);
}

// Rewrites /trainer `checksum` for the file as it now is (a test's deliberate edit, not damage).
void reseal(hid_t file) {
  h5::Handle g = h5::open_group(file, "trainer");
  const TrainerState s = [&] {
    TrainerState st;
    st.format_version = *h5::read_int_attr(g.get(), "format_version");
    for (auto [key, field] :
         std::initializer_list<std::pair<const char*, int64_t*>>{{"step", &st.step},
                                                                 {"tokens_seen", &st.tokens_seen},
                                                                 {"consumed_samples", &st.consumed_samples},
                                                                 {"skipped_steps", &st.skipped_steps},
                                                                 {"consecutive_skips", &st.consecutive_skips},
                                                                 {"world_size", &st.world_size},
                                                                 {"expert_parallel", &st.expert_parallel}})
      *field = *h5::read_int_attr(g.get(), key);
    st.recipe = *h5::read_string_attr(g.get(), "recipe");
    st.config = *h5::read_string_attr(g.get(), "config");
    return st;
  }();
  H5Adelete(g.get(), "checksum");
  h5::write_attr(g.get(), "checksum", int64_t(h5::metadata_checksum(file, s)));
}

h5::Handle open_rw(const std::string& path) {
  h5::Handle fapl = h5::file_access(nullptr);
  return h5::Handle(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.get()), H5Fclose);
}

TEST(CheckpointDamage, MissingAmaxHistoriesOfADelayedRecipeAreAnErrorNotAFreshStart) {
  const std::string dir = trained_run("nofp8");
  const std::string path = checkpoint_path(dir, 2);
  {
    h5::Handle f = open_rw(path);
    ASSERT_GE(H5Ldelete(f.get(), "/fp8/model.layers.0.self_attn.o_proj", H5P_DEFAULT), 0);
    reseal(f.get());
  }
  RunConfig c = config(dir);
  c.checkpoint.resume = path;
  try {
    trainer(c);
    FAIL() << "loaded without the histories";
  } catch (const CheckpointReadError& e) {
    EXPECT_NE(std::string(e.what()).find("/fp8/model.layers.0.self_attn.o_proj is missing"), std::string::npos)
        << e.what();
  }
  {  // the whole group gone
    h5::Handle f = open_rw(path);
    ASSERT_GE(H5Ldelete(f.get(), "/fp8", H5P_DEFAULT), 0);
    reseal(f.get());
  }
  EXPECT_THROW(trainer(c), CheckpointReadError);
  // The metadata checksum alone catches an edit nobody resealed.
  {
    h5::Handle f = open_rw(checkpoint_path(dir, 1));
    ASSERT_GE(H5Ldelete(f.get(), "/fp8/model.layers.0.self_attn.o_proj", H5P_DEFAULT), 0);
  }
  int code = -1;
  std::FILE* sink = std::fopen("/dev/null", "w");
  code = inspect_checkpoint(checkpoint_path(dir, 1), sink);
  std::fclose(sink);
  EXPECT_EQ(code, 1);
}

// A format 1 file (variable-length text attributes, no checksum), as written before: still loads.
TEST(CheckpointDamage, Format1FilesStillLoad) {
  const std::string dir = trained_run("format1");
  const std::string path = checkpoint_path(dir, 2);
  {
    h5::Handle f = open_rw(path);
    h5::Handle g = h5::open_group(f.get(), "trainer");
    const std::string cfg = *h5::read_string_attr(g.get(), "config"), recipe = *h5::read_string_attr(g.get(), "recipe");
    for (const char* a : {"checksum", "config", "recipe", "format_version", "complete"}) H5Adelete(g.get(), a);
    h5::write_attr(g.get(), "format_version", int64_t(1));
    for (auto [name, value] : {std::pair{"config", &cfg}, std::pair{"recipe", &recipe}}) {
      h5::Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
      H5Tset_size(type.get(), H5T_VARIABLE);
      H5Tset_cset(type.get(), H5T_CSET_UTF8);
      h5::Handle space(H5Screate(H5S_SCALAR), H5Sclose);
      h5::Handle a(H5Acreate2(g.get(), name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      const char* text = value->c_str();
      ASSERT_GE(H5Awrite(a.get(), type.get(), &text), 0);
    }
    h5::write_attr(g.get(), "complete", int64_t(1));
  }
  const CheckpointInfo info = read_checkpoint_info(path);
  EXPECT_EQ(info.state.format_version, 1);
  EXPECT_EQ(info.state.step, 2);
  EXPECT_NE(info.state.config.find("fp8_tensor_delayed"), std::string::npos);
  RunConfig c = config(dir);
  c.checkpoint.resume = path;
  c.train.steps = 3;
  EXPECT_EQ(trainer(c)->step(), 2);
}

TEST(CheckpointDamage, APipeIsRefusedWithoutBlocking) {
  const std::string fifo = testing::process_temp_path("daedalus-damage-fifo") + ".h5";
  fs::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    read_checkpoint_info(fifo);
    FAIL() << "read a pipe";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  fs::remove(fifo);
}

TEST(Isolated, ReportsTheOutcomeOfTheChild) {
  using data::IsolatedOutcome;
  using data::run_isolated;
  EXPECT_EQ(run_isolated([] {}, 10).kind, IsolatedOutcome::Kind::ok);
  const IsolatedOutcome input = run_isolated([] { throw InputError("bad key"); }, 10);
  EXPECT_EQ(input.kind, IsolatedOutcome::Kind::input_error);
  EXPECT_EQ(input.text, "bad key");
  const IsolatedOutcome error = run_isolated([] { throw Error("disk"); }, 10);
  EXPECT_EQ(error.kind, IsolatedOutcome::Kind::error);
  EXPECT_EQ(error.text, "disk");
  const IsolatedOutcome crash = run_isolated([] { ::raise(SIGSEGV); }, 10);
  EXPECT_EQ(crash.kind, IsolatedOutcome::Kind::crashed);
  EXPECT_NE(crash.text.find("signal 11"), std::string::npos) << crash.text;
  const auto t0 = std::chrono::steady_clock::now();
  const IsolatedOutcome hang = run_isolated([] { std::this_thread::sleep_for(std::chrono::seconds(60)); }, 0.3);
  EXPECT_EQ(hang.kind, IsolatedOutcome::Kind::timed_out);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

}  // namespace
}  // namespace daedalus::train
