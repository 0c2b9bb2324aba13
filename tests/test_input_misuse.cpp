// Misuse a user, scheduler or colleague would commit, and what it gets: a second trainer on a run
// directory in use (the lock), a pipe where a file belongs, a second YAML document, a number where
// a path belongs, absurd sizes, a bad --set blamed on the --set, missing files named by their key,
// messages without C++ source locations, and metrics.jsonl lines that cannot be written or read.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/testing.h"
#include "train/config.h"
#include "train/metrics.h"
#include "train/run_lock.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

std::string scratch(const std::string& name) {
  const fs::path dir = fs::path(testing::process_temp_path("daedalus-misuse-" + name));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

const std::string kSynthetic = "data: {format: synthetic}\n";
// A model of a few thousand parameters, for the tests that build a trainer.
const std::string kSmall = R"(
model: {vocab_size: 64, hidden_size: 16, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 1,
        q_lora_rank: null, kv_lora_rank: 8, qk_nope_head_dim: 4, qk_rope_head_dim: 4, v_head_dim: 4,
        n_routed_experts: 0, max_position_embeddings: 32, num_nextn_predict_layers: 0}
train: {steps: 1, micro_batch_size: 1, seq_len: 8}
logging: {progress: never}
)";

TEST(RunDirLock, ASecondHolderIsRefusedWithTheFirstOnesHostAndPid) {
  const std::string dir = scratch("lock");
  {
    RunDirLock first(dir);
    EXPECT_TRUE(first.held());
    // flock locks belong to open files: a second open in this process conflicts like another process.
    expect_error([&] { RunDirLock second(dir); },
                 {"run.dir: " + dir + " is in use by another trainer", fmt::format("pid {}", ::getpid()), "host "});
  }
  RunDirLock again(dir);  // released with the first: no stale lock
  EXPECT_TRUE(again.held());
}

TEST(InputMisuse, APipeAsConfigIsRefusedWithoutBlocking) {
  const std::string fifo = scratch("fifo") + "/config.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error([&] { load_config(fifo); }, {fifo, "not a regular file"});
}

TEST(InputMisuse, APipeAsDataShardIsRefusedWithoutBlockingNamingTheKey) {
  const std::string dir = scratch("fifo-data");
  const std::string fifo = dir + "/train.bin";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const RunConfig c =
      parse_config(kSmall + "data: {format: llmc}\n", {"run.dir=" + dir + "/run", "data.train=" + fifo}, "x.yaml");
  expect_error([&] { Trainer t(c, parallel::make_process_groups(parallel::mpi_world(), 1)); },
               {"data.train: ", fifo, "not a regular file"});
}

TEST(InputMisuse, MissingFilesNameTheirKey) {
  const std::string dir = scratch("missing");
  const RunConfig c =
      parse_config(kSmall + "data: {format: llmc}\n", {"run.dir=" + dir, "data.train=/no/such/train.bin"}, "x.yaml");
  expect_error([&] { Trainer t(c, parallel::make_process_groups(parallel::mpi_world(), 1)); },
               {"data.train: /no/such/train.bin: no such file"});
  const std::string synthetic = "data: {format: synthetic, synthetic: {vocab: 64, tokens: 2000}}\n";
  RunConfig r = parse_config(kSmall + synthetic, {"run.dir=" + dir + "/r", "checkpoint.resume=/no/such.h5"}, "x.yaml");
  expect_error([&] { Trainer t(r, parallel::make_process_groups(parallel::mpi_world(), 1)); },
               {"checkpoint.resume: /no/such.h5: no such file"});
  RunConfig i =
      parse_config(kSmall + synthetic, {"run.dir=" + dir + "/i", "checkpoint.init_from=/no/init.h5"}, "x.yaml");
  expect_error([&] { Trainer t(i, parallel::make_process_groups(parallel::mpi_world(), 1)); },
               {"checkpoint.init_from: /no/init.h5: no such file"});
}

TEST(InputMisuse, ASecondYamlDocumentIsAnError) {
  expect_error([] { parse_config(kSynthetic + "---\nrun: {name: other}\n", {}, "two.yaml"); },
               {"two.yaml: 2 YAML documents", "the second starts at line 3"});
  EXPECT_NO_THROW(parse_config("---\n" + kSynthetic, {}, "one.yaml"));  // a leading --- is one document
  expect_error([] { parse_config(kSynthetic + "...\nrun: {name: other}\n", {}, "end.yaml"); },
               {"end.yaml: 2 YAML documents"});
}

// yaml-cpp 0.7's LoadAll never returns on "," (scripts/fuzz found it): a config read must end.
TEST(InputMisuse, MalformedYamlThatStallsTheParserIsAnErrorNotAHang) {
  for (const char* text : {",", ",\n,\n", "[a, ,]: ,"}) {
    SCOPED_TRACE(text);
    const std::string m = testing::error_of([&] { parse_config(text, {}, "stall.yaml"); });
    EXPECT_NE(m.find("stall.yaml"), std::string::npos) << m;
  }
}

TEST(InputMisuse, PathListItemsMustBeStrings) {
  expect_error([] { parse_config(kSynthetic, {"data.train=[5]"}, "x.yaml"); },
               {"--set data.train=[5]", "data.train[0]", "expected a file path (string), got 5"});
  expect_error([] { parse_config("data: {format: llmc, val: true}\n", {}, "x.yaml"); },
               {"x.yaml:1", "data.val", "got true"});
  EXPECT_EQ(parse_config(kSynthetic, {"data.train=[\"5\"]"}, "x.yaml").data.train, std::vector<std::string>{"5"});
}

TEST(InputMisuse, AbsurdSizesNameTheKeyBeforeAllocating) {
  expect_error([] { parse_config(kSynthetic + "model: {hidden_size: 1000000000}\n", {}, "big.yaml"); },
               {"big.yaml: model.hidden_size: 1000000000 is beyond any model"});
  expect_error([] { parse_config(kSynthetic, {"model.num_hidden_layers=100000"}, "x.yaml"); },
               {"--set model.num_hidden_layers=100000: model.num_hidden_layers"});
}

TEST(InputMisuse, ValidationErrorsBlameTheSetThatWroteTheValueAndCarryNoSourceLocation) {
  try {
    parse_config(kSynthetic, {"optimizer.lr=-1"}, "base.yaml");
    FAIL() << "accepted lr -1";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("--set optimizer.lr=-1: optimizer.lr", 0), 0u) << m;
    EXPECT_EQ(m.find(".cpp:"), std::string::npos) << m;  // DAEDALUS_DEBUG=1 adds it
  }
  expect_error([] { parse_config(kSynthetic + "optimizer: {lr: -1}\n", {}, "base.yaml"); },
               {"base.yaml: optimizer.lr"});
}

TEST(InputMisuse, AWarmupLongerThanTheRunIsAWarningNotAnError) {
  const RunConfig c = parse_config(kSynthetic, {"train.steps=3", "schedule.warmup_steps=20"}, "x.yaml");
  EXPECT_NE(c.schedule.warning(c.train.steps).find("the schedule is clipped"), std::string::npos);
}

TEST(MetricsLog, AWriteErrorStopsTheRunNamingTheFile) {
  MetricsLog log("/dev/full", /*append=*/false);
  try {
    log.write(R"({"step": 1})");
    FAIL() << "a line went nowhere without an error";
  } catch (const Error& e) {  // a runtime failure (exit 2), not bad input
    EXPECT_NE(std::string(e.what()).find("/dev/full: cannot write a line: No space left on device"), std::string::npos)
        << e.what();
  }
}

TEST(MetricsLog, ResumeDropsLinesCutShortAndLinesPastTheStep) {
  const std::string path = scratch("metrics") + "/metrics.jsonl";
  std::ofstream(path) << "{\"step\": 1, \"loss\": 2.0}\n{\"step\": 2, \"loss\": 1.9}\nnot json\n"
                         "{\"step\": 3, \"loss\": 1.8}\n{\"step\": 4, \"lo";
  drop_lines_after_step(path, 3);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "{\"step\": 1, \"loss\": 2.0}\n{\"step\": 2, \"loss\": 1.9}\n{\"step\": 3, \"loss\": 1.8}\n");
}

}  // namespace
}  // namespace daedalus::train
