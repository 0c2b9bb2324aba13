// The run config: a YAML file (CONTRACT.md "Config (YAML)", every key in docs/config.md) turned
// into one typed, validated struct per section.
//
//   RunConfig c = load_config("configs/tiny.yaml", {"optimizer.lr=1e-3", "model.q_lora_rank=null"});
//   c.validate(world_size);                      // the checks that need the world size
//   write(run_dir / "config.yaml", to_yaml(c));  // every key, defaults included; loads back equal
//
// The defaults of every key are the member initializers below (model/moe/mtp: model/config.h).
// Errors are InputErrors naming the file, the line when known, and the key path:
//   configs/x.yaml:12: model.n_routed_experts: expected integer, got "eight"
//   configs/x.yaml:12: model.n_routed_expert: unknown key (did you mean n_routed_experts?)
// `--set a.b=c` entries are applied to the YAML tree before conversion, in order; the value is
// parsed as YAML (a scalar, null, or a flow list/map such as [0.9, 0.99]), and a path that names
// no key is an error.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/source.h"
#include "fp8/recipe.h"
#include "model/config.h"
#include "model/linear.h"
#include "parallel/dispatch.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace daedalus::train {

// `run:` what the run is called and where its files go.
struct RunSection {
  std::string name = "daedalus";
  std::string dir;      // "" or null in YAML: runs/<name> (load_config fills it in)
  int64_t seed = 1234;  // >= 0; model init, data order and every other random stream derive from it
};

// `precision:` the base FP8 recipe, per-module overrides, and FP8 statistics logging.
// YAML keys -> fields: recipe -> recipe.kind, fp8_format (auto | e4m3 | hybrid) -> recipe.formats,
// power_of_two_scales -> recipe.scale.power_of_two, margin -> recipe.scale.margin,
// amax_history_len, wgrad (fp8 | high) -> recipe.wgrad_fp8, cache_activations (fp8 | high) ->
// recipe.cache_fp8, accumulator (exact | {mantissa_bits, promote_every}) -> recipe.accumulator.
struct PrecisionConfig {
  fp8::Recipe recipe = default_recipe();
  std::vector<fp8::RecipeOverride> overrides;  // first match wins
  int64_t stats_every = 0;                     // write fp8_stats.jsonl every N steps; 0 = off
  void validate() const;

  static fp8::Recipe default_recipe() {
    fp8::Recipe r;
    r.kind = fp8::RecipeKind::fp8_block;  // DeepSeek-V3's recipe
    return r;
  }
};

enum class OnNonfinite : uint8_t { skip, abort };
enum class DeviceChoice : uint8_t { automatic, cpu, cuda };  // YAML: auto | cpu | cuda

// `train:` the loop.
struct TrainConfig {
  int64_t steps = 1000;  // optimizer steps; the schedule spans them
  int64_t micro_batch_size = 8;
  int64_t seq_len = 512;
  int64_t grad_accum_steps = 1;  // micro-batches per optimizer step
  int64_t log_every = 10;
  int64_t eval_every = 100;  // 0 = no evaluation
  int64_t eval_batches = 8;
  OnNonfinite on_nonfinite = OnNonfinite::skip;
  int64_t max_skipped_steps = 5;  // abort when more than this many steps in a row were skipped
  DeviceChoice device = DeviceChoice::automatic;
  std::optional<int64_t> stop_after;     // end this run after N steps (null: run to `steps`)
  std::optional<double> time_limit_min;  // save and exit before this many minutes (null: none)
  model::Recompute recompute = model::Recompute::none;  // YAML: none | selective | full (model/linear.h)
  void validate() const;
};

enum class DataFormat : uint8_t { text, llmc, hdf5, synthetic, chat };

// `data:` where tokens come from; `synthetic` maps onto data::SyntheticSpec.
struct DataConfig {
  DataFormat format = DataFormat::llmc;
  std::vector<std::string> train;  // files or globs (unused for synthetic)
  std::vector<std::string> val;    // files or globs; empty: no file-based validation set
  data::SyntheticSpec synthetic;
  std::string tokenizer;       // tokenizer.json: text and chat data, generate, eval; empty: bytes
  bool document_mask = false;  // chat: packed samples neither attend to each other nor share positions
  void validate() const;
};

enum class Backend : uint8_t { automatic, nccl, mpi };  // YAML: auto | nccl | mpi
std::string_view backend_name(Backend backend);         // as YAML spells it

// `parallel:` expert parallelism and communication.
struct ParallelConfig {
  int64_t expert_parallel = 1;           // EP group size; world = pipeline_parallel x replicas x expert_parallel
  int64_t pipeline_parallel = 1;         // pipeline stages (contiguous runs of decoder layers)
  std::vector<int64_t> pipeline_layers;  // decoder layers per stage; empty: balanced by estimated cost
  Backend backend = Backend::automatic;
  parallel::DispatchDtype dispatch_dtype = parallel::DispatchDtype::bf16;
  double timeout_s = 300;  // a collective that takes longer is a runtime failure (exit 2), not a hang
  // 0: every rank holds the whole optimizer state; 1: ZeRO-1, AdamW's moments and the update sharded
  // over each parameter's data-parallel group (train/zero.h)
  int64_t zero_stage = 0;
  // Start each gradient bucket's reduce-scatter as soon as backward has finished its gradients
  // (parallel/grad_overlap.h); false: reduce them all after backward. Bit-identical either way.
  bool overlap_grad_reduce = true;
  // Gradient buckets (parallel::ShardLayout): each group's gradients are reduced in pieces of this
  // many MiB (ZeRO-1's shards are cut from the same buckets).
  double grad_bucket_mb = 32;
  int64_t grad_bucket_bytes() const { return std::max<int64_t>(4, int64_t(grad_bucket_mb * 1048576.0)); }
  void validate() const;
};

// `checkpoint:` saving and loading.
struct CheckpointConfig {
  int64_t every = 1000;                  // save every N steps and at the end; 0 = only at the end
  int64_t keep_last = 3;                 // delete older checkpoints; 0 = keep all
  std::string resume = "auto";           // auto | none | FILE
  std::optional<std::string> init_from;  // FILE: weights only (fine-tuning); null = none
  bool strict = true;                    // missing or unexpected tensor names are an error
  void validate() const;
};

enum class Progress : uint8_t { automatic, always, never };  // YAML: auto | always | never

// `logging:` what the run prints and writes.
struct LoggingConfig {
  Progress progress = Progress::automatic;  // auto: a progress line when stderr is a terminal
  bool jsonl = true;                        // <run.dir>/metrics.jsonl
};

struct RunConfig {
  RunSection run;
  model::ModelConfig model;
  model::MoeConfig moe;
  model::MtpConfig mtp;
  PrecisionConfig precision;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  LoggingConfig logging;

  // Every section's validate() and the checks across sections (experts divisible by
  // parallel.expert_parallel, train.seq_len within model.max_position_embeddings, synthetic
  // vocab within model.vocab_size, ...). load_config runs it.
  void validate() const;
  // validate() plus the checks that need the world size (divisible by parallel.expert_parallel).
  void validate(int world_size) const;
};

// Reads and validates a config file; `sets` are "a.b=c" overrides applied in order.
RunConfig load_config(const std::string& path, const std::vector<std::string>& sets = {});
// The same from YAML text (e.g. the config stored in a checkpoint); `source` names it in errors.
RunConfig parse_config(const std::string& yaml_text, const std::vector<std::string>& sets = {},
                       const std::string& source = "<config>");
// Every key with its resolved value, as YAML that parse_config reads back to an equal config.
std::string to_yaml(const RunConfig& config);

}  // namespace daedalus::train
