// The checkpoint file: what a save writes (CONTRACT.md layout, Fletcher32 chunks), that a load
// restores every tensor bit for bit, and how damage is reported: a flipped byte (checksum), a
// missing `complete` attribute, a truncated file — by inspect's verdict, by load, and by
// `resume: auto`, which skips such files with the reason and takes the previous one.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/testing.h"
#include "train/checkpoint.h"
#include "train/checkpoint_h5.h"
#include "train/config.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

namespace fs = std::filesystem;

// Two layers (dense, then 4 experts), MLA, MTP depth 1: every kind of tensor, tiny.
const char* kYaml = R"(
run: {name: ckpt-format, seed: 3}
model: {vocab_size: 64, hidden_size: 32, intermediate_size: 48, moe_intermediate_size: 16, num_hidden_layers: 2,
        first_k_dense_replace: 1, num_attention_heads: 2, q_lora_rank: 16, kv_lora_rank: 16, qk_nope_head_dim: 8,
        qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2,
        n_group: 1, topk_group: 1, max_position_embeddings: 64, num_nextn_predict_layers: 1}
schedule: {warmup_steps: 1}
train: {steps: 4, micro_batch_size: 2, seq_len: 16, log_every: 1, eval_every: 0}
data: {format: synthetic, synthetic: {vocab: 64, tokens: 4000}}
checkpoint: {every: 1, keep_last: 0}
logging: {progress: never}
)";

std::string test_dir(const std::string& name) {
  const fs::path dir = fs::path(testing::process_temp_path("daedalus-ckfmt-" + name));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

RunConfig config(const std::string& dir, std::vector<std::string> sets = {}) {
  sets.insert(sets.begin(), "run.dir=" + dir);
  return parse_config(kYaml, sets, "format-test.yaml");
}

struct Built {
  std::unique_ptr<model::CausalLM> model;
  std::unique_ptr<AdamW> optimizer;
};

Built build(const RunConfig& c, uint64_t seed) {
  model::LmOptions o = lm_options(c, nullptr);
  o.seed = seed;
  Built b;
  b.model = std::make_unique<model::CausalLM>(o);
  std::vector<Param> params;
  for (const model::Parameter& p : b.model->parameters().all())
    if (p.trainable) params.push_back(Param{p.name, p.var, p.weight_decay, false});
  b.optimizer = std::make_unique<AdamW>(std::move(params), c.optimizer);
  return b;
}

parallel::ProcessGroups world_of_one() { return parallel::make_process_groups(parallel::mpi_world(), 1); }

// Writes a checkpoint of a model with random moments, step 5; returns the path.
std::string write_sample(const std::string& dir, Built* kept = nullptr) {
  Built b = build(config(dir), 11);
  uint64_t seed = 100;
  for (const Param& p : b.optimizer->params()) {
    b.optimizer->exp_avg(p.name).copy_(testing::random_tensor(p.var.shape(), seed++));
    b.optimizer->exp_avg_sq(p.name).copy_(testing::random_tensor(p.var.shape(), seed++));
  }
  b.optimizer->set_step_count(5);
  TrainerState s;
  s.step = 5;
  s.tokens_seen = 320;
  s.consumed_samples = 10;
  s.config = to_yaml(config(dir));
  s.recipe = "fp8_block";
  const std::string path = dir + "/sample.h5";
  save_checkpoint(path, *b.model, b.optimizer.get(), s, world_of_one());
  if (kept != nullptr) *kept = std::move(b);
  return path;
}

// File offset of the first chunk of `dataset` (where its values are stored).
std::pair<int64_t, int64_t> chunk_location(const std::string& path, const std::string& dataset) {
  h5::Handle file = h5::open_file(path);
  h5::Handle d = h5::open_dataset(file.get(), dataset);
  EXPECT_TRUE(d.valid()) << dataset;
  const std::vector<hsize_t> origin(h5::dataset_shape(d.get()).size(), 0);
  unsigned mask = 0;
  haddr_t addr = 0;
  hsize_t size = 0;
  EXPECT_GE(H5Dget_chunk_info_by_coord(d.get(), origin.data(), &mask, &addr, &size), 0);
  return {int64_t(addr), int64_t(size)};
}

void flip_byte(const std::string& path, int64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.read(&c, 1);
  c = char(~c);
  f.seekp(offset);
  f.write(&c, 1);
}

void corrupt_values(const std::string& path) {
  const auto [addr, size] = chunk_location(path, "/model/model.norm.weight");
  flip_byte(path, addr + size / 2);
}

void drop_complete(const std::string& path) {
  h5::Handle fapl = h5::file_access(nullptr);
  h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.get()), H5Fclose);
  ASSERT_TRUE(file.valid());
  h5::Handle g = h5::open_group(file.get(), "trainer");
  ASSERT_GE(H5Adelete(g.get(), "complete"), 0);
}

void truncate_half(const std::string& path) { fs::resize_file(path, fs::file_size(path) / 2); }

std::string inspect_text(const std::string& path, int* code) {
  char* buffer = nullptr;
  size_t size = 0;
  std::FILE* out = open_memstream(&buffer, &size);
  *code = inspect_checkpoint(path, out);
  std::fclose(out);
  std::string text(buffer, size);
  std::free(buffer);
  return text;
}

TEST(Checkpoint, SaveLoadRestoresEveryTensorBitForBit) {
  const std::string dir = test_dir("roundtrip");
  Built saved;
  const std::string path = write_sample(dir, &saved);
  Built loaded = build(config(dir), 22);  // other initial values
  LoadReport report;
  const TrainerState s =
      load_checkpoint(path, *loaded.model, loaded.optimizer.get(), LoadOptions{}, Placement{}, &report);
  EXPECT_TRUE(report.clean()) << report.describe();
  EXPECT_EQ(report.tensors, int64_t(saved.model->parameters().all().size()));
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.step, 5);
  EXPECT_EQ(s.tokens_seen, 320);
  EXPECT_EQ(s.consumed_samples, 10);
  EXPECT_EQ(s.recipe, "fp8_block");
  EXPECT_EQ(s.format_version, kCheckpointFormatVersion);
  EXPECT_EQ(parse_config(s.config, {}, "stored").model.hidden_size, 32);
  for (const model::Parameter& p : saved.model->parameters().all())
    EXPECT_EQ(p.var.value().to_vector<float>(), loaded.model->parameters().get(p.name).var.value().to_vector<float>())
        << p.name;
  EXPECT_EQ(loaded.optimizer->step_count(), 5);
  for (const Param& p : saved.optimizer->params()) {
    EXPECT_EQ(saved.optimizer->exp_avg(p.name).to_vector<float>(),
              loaded.optimizer->exp_avg(p.name).to_vector<float>());
    EXPECT_EQ(saved.optimizer->exp_avg_sq(p.name).to_vector<float>(),
              loaded.optimizer->exp_avg_sq(p.name).to_vector<float>());
  }
}

TEST(Checkpoint, LayoutFollowsTheContract) {
  const std::string path = write_sample(test_dir("layout"));
  const CheckpointInfo info = read_checkpoint_info(path);
  std::map<std::string, Shape> shapes;
  for (const TensorInfo& t : info.tensors) {
    shapes[t.path] = t.shape;
    EXPECT_EQ(t.dtype, "f32") << t.path;
  }
  EXPECT_EQ(shapes["/model/model.embed_tokens.weight"], (Shape{64, 32}));
  EXPECT_EQ(shapes["/model/model.layers.1.mlp.experts.gate_proj.weight"], (Shape{4, 16, 32}));  // stacked
  EXPECT_EQ(shapes["/model/model.layers.1.mlp.experts.down_proj.weight"], (Shape{4, 32, 16}));
  EXPECT_EQ(shapes["/model/model.layers.1.mlp.gate.e_score_correction_bias"], (Shape{4}));  // a buffer
  EXPECT_EQ(shapes["/optimizer/model.layers.1.mlp.experts.up_proj.weight/exp_avg_sq"], (Shape{4, 16, 32}));
  EXPECT_EQ(shapes.count("/optimizer/model.layers.1.mlp.gate.e_score_correction_bias/exp_avg"), 0u);  // not trained
  EXPECT_EQ(info.optimizer_step, 5);
  // Every dataset chunked with the Fletcher32 filter; experts one per chunk.
  h5::Handle file = h5::open_file(path);
  for (const TensorInfo& t : info.tensors) {
    h5::Handle d = h5::open_dataset(file.get(), t.path);
    EXPECT_TRUE(h5::has_fletcher32(d.get())) << t.path;
  }
  h5::Handle d = h5::open_dataset(file.get(), "/model/model.layers.1.mlp.experts.gate_proj.weight");
  h5::Handle dcpl(H5Dget_create_plist(d.get()), H5Pclose);
  hsize_t chunk[3] = {0, 0, 0};
  ASSERT_EQ(H5Pget_chunk(dcpl.get(), 3, chunk), 3);
  EXPECT_EQ(chunk[0], 1u);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(Checkpoint, ChunkShapesStayNearFourMegabytes) {
  EXPECT_EQ(h5::chunk_shape({64, 32}, false), (Shape{64, 32}));  // small: one chunk
  EXPECT_EQ(h5::chunk_shape({4, 16, 32}, true), (Shape{1, 16, 32}));
  EXPECT_EQ(h5::chunk_shape({129280, 7168}, false), (Shape{146, 7168}));  // DeepSeek-V3 embedding
  EXPECT_EQ(h5::chunk_shape({256, 2048, 7168}, true), (Shape{1, 146, 7168}));
}

TEST(Checkpoint, InspectReportsOkWithShapesAndDigests) {
  const std::string path = write_sample(test_dir("inspect-ok"));
  int code = -1;
  const std::string text = inspect_text(path, &code);
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("step        5, 320 tokens seen, 10 samples consumed"), std::string::npos) << text;
  EXPECT_NE(text.find("recipe fp8_block"), std::string::npos) << text;
  EXPECT_NE(text.find("/model/model.layers.1.mlp.experts.gate_proj.weight"), std::string::npos) << text;
  EXPECT_NE(text.find("[4, 16, 32]"), std::string::npos) << text;
  EXPECT_NE(text.find("verdict     OK"), std::string::npos) << text;
}

TEST(Checkpoint, FlippedByteIsCaughtByFletcher32) {
  const std::string path = write_sample(test_dir("flip"));
  corrupt_values(path);
  int code = -1;
  const std::string text = inspect_text(path, &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(text.find("verdict     CORRUPT: /model/model.norm.weight: Fletcher32 checksum mismatch"), std::string::npos)
      << text;
  Built b = build(config(test_dir("flip-load")), 1);
  EXPECT_THROW(load_checkpoint(path, *b.model, b.optimizer.get(), LoadOptions{}, Placement{}), CheckpointReadError);
}

TEST(Checkpoint, MissingCompleteAttributeIsIncomplete) {
  const std::string path = write_sample(test_dir("incomplete"));
  drop_complete(path);
  int code = -1;
  const std::string text = inspect_text(path, &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(text.find("verdict     INCOMPLETE"), std::string::npos) << text;
  Built b = build(config(test_dir("incomplete-load")), 1);
  try {
    load_checkpoint(path, *b.model, b.optimizer.get(), LoadOptions{}, Placement{});
    FAIL() << "expected CheckpointReadError";
  } catch (const CheckpointReadError& e) {
    EXPECT_NE(std::string(e.what()).find("incomplete"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, TruncatedFileIsCorrupt) {
  const std::string path = write_sample(test_dir("truncated"));
  truncate_half(path);
  int code = -1;
  const std::string text = inspect_text(path, &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(text.find("verdict     CORRUPT"), std::string::npos) << text;
  EXPECT_NE(text.find("truncated"), std::string::npos) << text;
}

TEST(Checkpoint, BadInputNamesTheFile) {
  const std::string dir = test_dir("bad-input");
  Built b = build(config(dir), 1);
  auto message = [&](const std::string& path) {
    try {
      load_checkpoint(path, *b.model, nullptr, LoadOptions{}, Placement{});
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(dir + "/none.h5").find(dir + "/none.h5: no such file"), std::string::npos);
  std::ofstream(dir + "/text.h5") << "not a checkpoint\n";
  EXPECT_NE(message(dir + "/text.h5").find(dir + "/text.h5: not an HDF5 file"), std::string::npos);
  EXPECT_NE(message(dir).find("is a directory"), std::string::npos);
  // inspect gives a verdict for every file, exit 1 unless OK.
  int code = -1;
  EXPECT_NE(inspect_text(dir + "/text.h5", &code).find("verdict     CORRUPT: " + dir + "/text.h5: not an HDF5 file"),
            std::string::npos);
  EXPECT_EQ(code, 1);
  code = -1;
  EXPECT_NE(inspect_text(dir + "/none.h5", &code).find("verdict     UNUSABLE: " + dir + "/none.h5: no such file"),
            std::string::npos);
  EXPECT_EQ(code, 1);
}

TEST(Checkpoint, PruneKeepsTheNewestUpToTheCurrentStep) {
  const std::string dir = test_dir("prune");
  fs::create_directories(dir + "/checkpoints");
  for (int64_t s : {1, 2, 3, 4, 5}) std::ofstream(checkpoint_path(dir, s)) << "x";
  std::ofstream(checkpoint_path(dir, 2) + ".tmp") << "x";
  const std::vector<std::string> deleted = prune_checkpoints(dir, 2, 4);
  EXPECT_EQ(deleted.size(), 3u);
  std::vector<int64_t> left;
  for (const CheckpointFile& f : list_checkpoints(dir)) left.push_back(f.step);
  EXPECT_EQ(left, (std::vector<int64_t>{5, 4, 3}));  // step 5 is not this run's past: untouched
  EXPECT_FALSE(fs::exists(checkpoint_path(dir, 2) + ".tmp"));
}

TEST(Checkpoint, ResumeAutoSkipsDamagedCheckpointsAndSaysWhy) {
  const std::string dir = test_dir("resume-auto");
  Trainer(config(dir), world_of_one()).run();  // checkpoints at steps 1, 2, 3, 4
  corrupt_values(checkpoint_path(dir, 4));
  drop_complete(checkpoint_path(dir, 3));
  truncate_half(checkpoint_path(dir, 2));
  ::testing::internal::CaptureStdout();
  Trainer resumed(config(dir), world_of_one());
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_EQ(resumed.resumed_from(), checkpoint_path(dir, 1));
  EXPECT_EQ(resumed.step(), 1);
  EXPECT_NE(out.find("skipped " + checkpoint_path(dir, 4) + ": /model/model.norm.weight: Fletcher32 checksum mismatch"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("skipped " + checkpoint_path(dir, 3) + ": incomplete"), std::string::npos) << out;
  EXPECT_NE(out.find("skipped " + checkpoint_path(dir, 2) + ": cannot be opened"), std::string::npos) << out;
  EXPECT_NE(out.find("resumed from " + checkpoint_path(dir, 1)), std::string::npos) << out;
}

}  // namespace
}  // namespace daedalus::train
