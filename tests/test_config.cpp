// The run config: configs/tiny.yaml, defaults, --set overrides, the to_yaml round trip, and the
// error messages (file, line, key path) for malformed YAML, unknown keys, wrong types and bad values.
#if !DAEDALUS_MINIMAL  // the GPU-test build has no yaml-cpp

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/testing.h"
#include "train/config.h"

namespace daedalus::train {
namespace {

using testing::expect_error;

const std::filesystem::path kRoot = std::filesystem::path(__FILE__).parent_path().parent_path();
const std::string kTiny = (kRoot / "configs" / "tiny.yaml").string();

// The smallest config that validates: defaults everywhere, synthetic data (no files needed).
const std::string kMinimal = "data: {format: synthetic}\n";

RunConfig parse(const std::string& text, const std::vector<std::string>& sets = {}) {
  return parse_config(text, sets, "test.yaml");
}

TEST(Config, TinyYamlLoads) {
  const RunConfig c = load_config(kTiny);
  EXPECT_EQ(c.run.name, "tiny");
  EXPECT_EQ(c.run.dir, "runs/tiny");  // default runs/<name>
  EXPECT_EQ(c.run.seed, 1234);
  EXPECT_EQ(c.model.hidden_size, 128);
  EXPECT_EQ(c.model.q_lora_rank, std::optional<int64_t>(64));
  EXPECT_EQ(c.model.n_routed_experts, 8);
  EXPECT_EQ(c.model.scoring_func, "sigmoid");
  EXPECT_EQ(c.model.rms_norm_eps, 1.0e-6);
  EXPECT_FALSE(c.moe.capacity_factor.has_value());
  EXPECT_EQ(c.mtp.loss_weight, 0.3);
  EXPECT_EQ(c.precision.recipe.kind, fp8::RecipeKind::fp8_block);
  EXPECT_EQ(c.precision.recipe.formats, fp8::Fp8Formats::e4m3);
  EXPECT_TRUE(c.precision.recipe.wgrad_fp8);
  EXPECT_FALSE(c.precision.recipe.cache_fp8);
  EXPECT_EQ(c.precision.recipe.accumulator.mantissa_bits, 0);  // exact
  EXPECT_TRUE(c.precision.overrides.empty());
  EXPECT_EQ(c.optimizer.lr, 3.0e-3);
  EXPECT_EQ(c.optimizer.betas, (std::array<double, 2>{0.9, 0.95}));
  EXPECT_EQ(c.optimizer.state_dtype, DType::f32);
  EXPECT_EQ(c.schedule.type, "cosine");
  EXPECT_EQ(c.schedule.warmup_steps, 20);
  EXPECT_EQ(c.schedule.decay_fraction, 0.2);  // not in tiny.yaml: the default
  EXPECT_EQ(c.train.steps, 300);
  EXPECT_EQ(c.train.on_nonfinite, OnNonfinite::skip);
  EXPECT_EQ(c.train.device, DeviceChoice::automatic);
  EXPECT_FALSE(c.train.stop_after.has_value());
  EXPECT_EQ(c.data.format, DataFormat::llmc);
  EXPECT_EQ(c.data.train, (std::vector<std::string>{"runs/data/fortunes/train_*.bin"}));
  EXPECT_EQ(c.parallel.dispatch_dtype, parallel::DispatchDtype::bf16);
  EXPECT_EQ(c.parallel.timeout_s, 300.0);
  EXPECT_EQ(c.checkpoint.every, 100);
  EXPECT_EQ(c.checkpoint.resume, "auto");
  EXPECT_FALSE(c.checkpoint.init_from.has_value());
  EXPECT_EQ(c.logging.progress, Progress::automatic);
  EXPECT_NO_THROW(c.validate(/*world_size=*/1));
}

TEST(Config, DefaultsFillEverythingLeftOut) {
  const RunConfig c = parse(kMinimal);
  const RunConfig d;  // the struct initializers are the documented defaults
  EXPECT_EQ(c.run.name, d.run.name);
  EXPECT_EQ(c.run.dir, "runs/" + d.run.name);
  EXPECT_EQ(c.model.vocab_size, d.model.vocab_size);
  EXPECT_EQ(c.precision.recipe.kind, fp8::RecipeKind::fp8_block);
  EXPECT_EQ(c.precision.recipe.formats, fp8::Fp8Formats::recipe_default);
  EXPECT_EQ(c.optimizer.lr, d.optimizer.lr);
  EXPECT_EQ(c.train.seq_len, d.train.seq_len);
  EXPECT_EQ(c.data.synthetic.vocab, d.data.synthetic.vocab);
  // Empty sections are sections with every default.
  EXPECT_EQ(parse(kMinimal + "moe:\nlogging: {}\n").moe.bias_update_rate, d.moe.bias_update_rate);
}

TEST(Config, SetOverridesEveryKind) {
  const RunConfig c = load_config(kTiny, {
                                             "model.hidden_size=256",                   // integer
                                             "optimizer.lr=1e-3",                       // float
                                             "model.tie_word_embeddings=true",          // bool
                                             "model.q_lora_rank=null",                  // null
                                             "moe.capacity_factor=1.25",                // null -> value
                                             "optimizer.betas=[0.9,0.99]",              // flow list
                                             "data.val=[a.bin, 'b c.bin']",             // list of strings
                                             "data.train=one.bin",                      // one string, a list of one
                                             "run.name=exp1",                           // string (dir follows)
                                             "precision.accumulator.promote_every=64",  // into a scalar: a map
                                             "precision.overrides=[{match: 'model.layers.0.*', recipe: bf16}]",
                                             "train.device=cpu",  // enum
                                             "train.steps=50",
                                             "train.steps=60",  // the later --set wins
                                         });
  EXPECT_EQ(c.model.hidden_size, 256);
  EXPECT_EQ(c.optimizer.lr, 1e-3);
  EXPECT_TRUE(c.model.tie_word_embeddings);
  EXPECT_FALSE(c.model.q_lora_rank.has_value());
  EXPECT_EQ(c.moe.capacity_factor, std::optional<double>(1.25));
  EXPECT_EQ(c.optimizer.betas, (std::array<double, 2>{0.9, 0.99}));
  EXPECT_EQ(c.data.val, (std::vector<std::string>{"a.bin", "b c.bin"}));
  EXPECT_EQ(c.data.train, (std::vector<std::string>{"one.bin"}));
  EXPECT_EQ(c.run.name, "exp1");
  EXPECT_EQ(c.run.dir, "runs/exp1");
  // accumulator was `exact`; setting one sub-key makes it a map, the other sub-key at its default.
  EXPECT_EQ(c.precision.recipe.accumulator.mantissa_bits, 14);
  EXPECT_EQ(c.precision.recipe.accumulator.promote_every, 64);
  ASSERT_EQ(c.precision.overrides.size(), 1u);
  EXPECT_EQ(c.precision.overrides[0].match, "model.layers.0.*");
  EXPECT_EQ(c.precision.overrides[0].recipe, fp8::RecipeKind::bf16);
  EXPECT_EQ(c.train.device, DeviceChoice::cpu);
  EXPECT_EQ(c.train.steps, 60);
  // A whole section as a flow map, and a key absent from the file.
  const RunConfig d = parse(kMinimal, {"mtp={loss_weight: 0.5}", "checkpoint.init_from=base.h5"});
  EXPECT_EQ(d.mtp.loss_weight, 0.5);
  EXPECT_EQ(d.checkpoint.init_from, std::optional<std::string>("base.h5"));
}

TEST(Config, SetErrorsNameTheEntry) {
  expect_error(
      [] { load_config(kTiny, {"model.n_routed_expert=8"}); },
      {"--set model.n_routed_expert=8", "unknown key model.n_routed_expert", "did you mean model.n_routed_experts?"});
  expect_error([] { load_config(kTiny, {"model.hidden_size.x=1"}); }, {"unknown key model.hidden_size.x"});
  expect_error([] { load_config(kTiny, {"optimizer.lr"}); }, {"--set optimizer.lr", "KEY=VALUE"});
  expect_error([] { load_config(kTiny, {"optimizer.betas=[0.9"}); },
               {"--set optimizer.betas=[0.9", "malformed YAML value"});
  // A wrong type from a --set names the --set, not a line of the file.
  expect_error([] { load_config(kTiny, {"model.hidden_size=big"}); },
               {"--set model.hidden_size=big: model.hidden_size: expected integer, got \"big\""});
  expect_error([] { load_config(kTiny, {"precision.accumulator={mantissa_bitz: 3}"}); },
               {"--set precision.accumulator={mantissa_bitz: 3}", "precision.accumulator.mantissa_bitz: unknown key",
                "did you mean mantissa_bits?"});
}

// Every key with a value different from its default (where the type allows), so that a key that
// to_yaml forgot, or wrote in a form load does not read back, changes the second text.
const std::vector<std::string> kEverythingChanged = {
    "run.dir=/tmp/elsewhere",
    "run.seed=7",
    "model.q_lora_rank=null",
    "model.routed_scaling_factor=1.5",
    "model.rms_norm_eps=1e-5",
    "model.rope_scaling={type: yarn, factor: 40, original_max_position_embeddings: 4096, beta_fast: 16, "
    "beta_slow: 2, mscale: 0.7, mscale_all_dim: 1.0, attention_factor: 1.1, truncate: false}",
    "moe.capacity_factor=1.25",
    "mtp.loss_weight=0.1",
    "precision.recipe=fp8_tensor_delayed",
    "precision.fp8_format=hybrid",
    "precision.power_of_two_scales=true",
    "precision.amax_history_len=1024",
    "precision.margin=1",
    "precision.wgrad=high",
    "precision.cache_activations=fp8",
    "precision.accumulator={mantissa_bits: 14, promote_every: 128}",
    "precision.stats_every=50",
    "precision.overrides=[{match: 'model.layers.0.*', recipe: bf16}, {match: '*.mlp.experts.*', recipe: fp8_row}]",
    "optimizer.lr=0.1",
    "optimizer.betas=[0.8, 0.999]",
    "optimizer.eps=1e-6",
    "optimizer.weight_decay=0.0",
    "optimizer.grad_clip=0",
    "optimizer.state_dtype=bf16",
    "schedule.type=wsd",
    "schedule.warmup_steps=3",
    "schedule.min_lr_ratio=0.0",
    "schedule.decay_fraction=0.3",
    "train.on_nonfinite=abort",
    "train.device=cuda",
    "train.stop_after=10",
    "train.time_limit_min=90.5",
    "data.format=synthetic",
    "data.synthetic={vocab: 64, order: 2, branching: 3, tokens: 5000, seed: 9}",
    "parallel.expert_parallel=2",
    "parallel.backend=nccl",
    "parallel.dispatch_dtype=fp8",
    "parallel.timeout_s=12.5",
    "parallel.overlap_grad_reduce=false",
    "parallel.grad_bucket_mb=0.5",
    "checkpoint.every=0",
    "checkpoint.keep_last=0",
    "checkpoint.resume=none",
    "checkpoint.init_from=base.h5",
    "checkpoint.strict=false",
    "logging.progress=never",
    "logging.jsonl=false",
};

TEST(Config, ToYamlRoundTrips) {
  for (const auto& sets : {std::vector<std::string>{}, kEverythingChanged}) {
    const RunConfig a = load_config(kTiny, sets);
    const std::string text = to_yaml(a);
    const RunConfig b = parse_config(text, {}, "resolved.yaml");
    EXPECT_EQ(to_yaml(b), text);
    // Spot checks of the typed values behind the text (RunConfig has no operator==: the model
    // structs it holds have none).
    EXPECT_EQ(b.run.dir, a.run.dir);
    EXPECT_EQ(b.model.q_lora_rank, a.model.q_lora_rank);
    EXPECT_EQ(b.model.rms_norm_eps, a.model.rms_norm_eps);
    EXPECT_EQ(b.model.rope_scaling.has_value(), a.model.rope_scaling.has_value());
    EXPECT_EQ(b.precision.recipe.kind, a.precision.recipe.kind);
    EXPECT_EQ(b.precision.recipe.accumulator.promote_every, a.precision.recipe.accumulator.promote_every);
    EXPECT_EQ(b.precision.overrides.size(), a.precision.overrides.size());
    EXPECT_EQ(b.optimizer.betas, a.optimizer.betas);
    EXPECT_EQ(b.optimizer.state_dtype, a.optimizer.state_dtype);
    EXPECT_EQ(b.train.time_limit_min, a.train.time_limit_min);
    EXPECT_EQ(b.data.synthetic.seed, a.data.synthetic.seed);
    EXPECT_EQ(b.checkpoint.init_from, a.checkpoint.init_from);
  }
  // The changed config really differs in every key from tiny.yaml's (else the loop proves less).
  const RunConfig changed = load_config(kTiny, kEverythingChanged);
  EXPECT_EQ(changed.precision.recipe.accumulator.mantissa_bits, 14);
  EXPECT_EQ(changed.data.synthetic.order, 2);
  EXPECT_EQ(changed.train.time_limit_min, std::optional<double>(90.5));
}

// Leaf key paths of a YAML map ("optimizer.lr", "data.synthetic.vocab", "precision.accumulator").
void leaf_paths(const YAML::Node& map, const std::string& prefix, std::vector<std::string>& out) {
  for (auto it = map.begin(); it != map.end(); ++it) {
    const std::string path = prefix + it->first.as<std::string>();
    if (it->second.IsMap() && path != "precision.accumulator") {
      leaf_paths(it->second, path + ".", out);
    } else {
      out.push_back(path);
    }
  }
}

TEST(Config, ToYamlWritesEveryKeyAndTheDocsListThem) {
  std::vector<std::string> paths;
  leaf_paths(YAML::Load(to_yaml(parse(kMinimal))), "", paths);
  EXPECT_EQ(paths.size(), 96u);  // run 3, model 27, moe 3, mtp 1, precision 13, optimizer 6, schedule 4,
                                 // train 13, data 10, parallel 9, checkpoint 5, logging 2
  std::ifstream docs(kRoot / "docs" / "config.md");
  ASSERT_TRUE(docs) << "docs/config.md";
  std::stringstream text;
  text << docs.rdbuf();
  for (const std::string& p : paths) EXPECT_NE(text.str().find("`" + p + "`"), std::string::npos) << p;
}

TEST(Config, MalformedYamlNamesFileAndLine) {
  expect_error([] { parse("model:\n  a: 1\n b: 2\n"); }, {"test.yaml:3:", "malformed YAML"});
  expect_error([] { parse("- just\n- a list\n"); }, {"test.yaml", "expected a map of sections", "a list"});
  expect_error([] { load_config("/no/such/config.yaml"); }, {"/no/such/config.yaml", "cannot read"});
}

TEST(Config, UnknownKeysAreErrorsWithSuggestions) {
  expect_error([] { parse(kMinimal + "model:\n  hidden_size: 64\n  n_routed_expert: 8\n"); },
               {"test.yaml:4: model.n_routed_expert: unknown key (did you mean n_routed_experts?)"});
  expect_error([] { parse(kMinimal + "optimiser:\n  lr: 1\n"); },
               {"test.yaml:2: optimiser: unknown section (did you mean optimizer?)"});
  expect_error([] { parse(kMinimal + "train:\n  zzz: 1\n"); }, {"train.zzz: unknown key"});
  expect_error([] { parse(kMinimal + "run:\n  seed: 1\n  seed: 2\n"); }, {"test.yaml:4: run.seed: duplicate key"});
  expect_error([] { parse(kMinimal + "precision:\n  overrides:\n    - {match: 'a*', recipe: bf16, when: 1}\n"); },
               {"precision.overrides[0].when: unknown key"});
  expect_error([] { parse(kMinimal + "precision:\n  overrides:\n    - {match: 'a*'}\n"); },
               {"precision.overrides[0]: missing key recipe"});
}

TEST(Config, WrongTypesNameKeyAndValue) {
  const auto bad = [](const std::string& section) { return [section] { parse(kMinimal + section); }; };
  expect_error(bad("model:\n  n_routed_experts: eight\n"),
               {"test.yaml:3: model.n_routed_experts: expected integer, got \"eight\""});
  expect_error(bad("model:\n  n_routed_experts: 8.5\n"), {"model.n_routed_experts: expected integer, got \"8.5\""});
  expect_error(bad("model:\n  n_routed_experts: \"8\"\n"), {"model.n_routed_experts: expected integer, got \"8\""});
  expect_error(bad("model:\n  n_routed_experts: [8]\n"), {"model.n_routed_experts: expected integer, got a list"});
  expect_error(bad("model:\n  hidden_size: null\n"), {"model.hidden_size: expected integer, got null"});
  expect_error(bad("model:\n  rope_theta: fast\n"), {"model.rope_theta: expected number, got \"fast\""});
  expect_error(bad("model:\n  norm_topk_prob: maybe\n"), {"model.norm_topk_prob: expected true or false"});
  expect_error(bad("precision:\n  margin: 99999999999\n"), {"precision.margin: expected a 32-bit integer"});
  expect_error(bad("optimizer:\n  betas: [0.9]\n"), {"optimizer.betas: expected a list of 2 numbers"});
  expect_error(bad("optimizer:\n  betas: [0.9, x]\n"), {"optimizer.betas[1]: expected number, got \"x\""});
  expect_error(bad("optimizer:\n  state_dtype: fp16\n"),
               {"optimizer.state_dtype: expected fp32 or bf16, got \"fp16\""});
  expect_error(bad("train:\n  device: gpu\n"), {"train.device: expected auto, cpu or cuda, got \"gpu\""});
  expect_error(bad("precision:\n  recipe: fp9\n"),
               {"precision.recipe: expected fp32, bf16,", "mxfp8, nvfp4, mxfp4 or fp4_experts, got \"fp9\""});
  expect_error(bad("precision:\n  accumulator: fast\n"), {"precision.accumulator: expected exact or {mantissa_bits"});
  expect_error(bad("train: 5\n"), {"train: expected a map of keys, got \"5\""});
  expect_error(bad("run:\n  name: [a]\n"), {"run.name: expected string, got a list"});
  expect_error([] { parse("data:\n  format: text\n  val: [a, {b: 1}]\n"); },
               {"data.val[1]: expected a file path (string), got a map"});
  expect_error([] { parse("data:\n  format: synthetic\n  synthetic:\n    seed: -1\n"); },
               {"test.yaml:4: data.synthetic.seed: expected integer >= 0, got \"-1\""});
}

TEST(Config, InvalidValuesNameTheKey) {
  const auto bad = [](std::vector<std::string> sets) { return [sets] { load_config(kTiny, sets); }; };
  expect_error(bad({"optimizer.lr=-1"}), {"--set optimizer.lr=-1: optimizer.lr", "-1"});  // the --set is blamed
  expect_error(bad({"model.num_attention_heads=0"}), {"model.num_attention_heads", "positive"});
  expect_error(bad({"schedule.type=linear"}), {"schedule.type", "linear"});
  expect_error(bad({"moe.capacity_factor=0"}), {"moe.capacity_factor"});
  expect_error(bad({"precision.accumulator={mantissa_bits: 30}"}), {"precision.accumulator.mantissa_bits", "30"});
  expect_error(bad({"precision.amax_history_len=0"}), {"precision.amax_history_len"});
  expect_error(bad({"train.on_nonfinite=skip", "train.max_skipped_steps=-1"}), {"train.max_skipped_steps"});
  expect_error(bad({"data.format=llmc", "data.train=[]"}), {"data.train: no training files", "llmc"});
  expect_error(bad({"parallel.timeout_s=0"}), {"parallel.timeout_s"});
  expect_error(bad({"checkpoint.resume=run.h5", "checkpoint.init_from=base.h5"}),
               {"checkpoint.init_from", "checkpoint.resume = run.h5"});
}

TEST(Config, CrossFieldChecks) {
  const auto bad = [](std::vector<std::string> sets) { return [sets] { load_config(kTiny, sets); }; };
  expect_error(bad({"parallel.expert_parallel=3"}), {"model.n_routed_experts: 8", "parallel.expert_parallel = 3"});
  expect_error(bad({"train.seq_len=1024"}), {"train.seq_len: 1024 exceeds model.max_position_embeddings = 512"});
  for (const char* key : {"train.seq_len", "train.micro_batch_size", "train.steps"}) {
    expect_error(bad({std::string(key) + "=0"}), {key, "positive"});
  }
  expect_error(bad({"checkpoint.every=-1"}), {"checkpoint.every", ">= 0"});
  expect_error(bad({"data.format=synthetic", "data.synthetic.vocab=1000"}),
               {"data.synthetic.vocab: 1000", "model.vocab_size is 256"});
  expect_error(bad({"model.n_routed_experts=0", "parallel.expert_parallel=2"}),
               {"parallel.expert_parallel", "no routed experts"});

  const RunConfig ep2 = load_config(kTiny, {"parallel.expert_parallel=2"});
  EXPECT_NO_THROW(ep2.validate(/*world_size=*/4));
  expect_error([&] { ep2.validate(/*world_size=*/3); },
               {"parallel.expert_parallel: 2 does not divide the world size 3"});
}

TEST(Config, PipelineStages) {
  const RunConfig pp = load_config(kTiny, {"parallel.pipeline_parallel=2", "parallel.pipeline_layers=[3, 1]"});
  EXPECT_EQ(pp.parallel.pipeline_parallel, 2);
  EXPECT_EQ(pp.parallel.pipeline_layers, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(parse_config(to_yaml(pp)).parallel.pipeline_layers, pp.parallel.pipeline_layers);  // round trip
  EXPECT_NO_THROW(pp.validate(/*world_size=*/4));
  expect_error([&] { pp.validate(/*world_size=*/3); },
               {"parallel.pipeline_parallel: 2 stages x parallel.expert_parallel: 1", "world size 3"});
  const auto bad = [](std::vector<std::string> sets) { return [sets] { load_config(kTiny, sets); }; };
  expect_error(bad({"parallel.pipeline_parallel=0"}), {"parallel.pipeline_parallel: must be >= 1, got 0"});
  expect_error(bad({"parallel.pipeline_parallel=5"}),
               {"parallel.pipeline_parallel: 5 stages", "model.num_hidden_layers = 4"});
  expect_error(bad({"parallel.pipeline_layers=[2, 2]"}),
               {"parallel.pipeline_layers: 2 entries for parallel.pipeline_parallel = 1"});
  expect_error(bad({"parallel.pipeline_parallel=2", "parallel.pipeline_layers=[2, 1]"}),
               {"parallel.pipeline_layers: the stages hold 3 decoder layers", "model.num_hidden_layers is 4"});
  expect_error(bad({"parallel.pipeline_parallel=2", "parallel.pipeline_layers=[two, 2]"}),
               {"parallel.pipeline_layers[0]", "expected integer"});
}

}  // namespace
}  // namespace daedalus::train

#endif  // !DAEDALUS_MINIMAL
