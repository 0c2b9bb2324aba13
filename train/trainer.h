// The training loop: one YAML config in, a trained model, metrics.jsonl and checkpoints out.
//
// One optimizer step (train_step), top-down:
//   for each of grad_accum_steps micro-batches:         data/loader.h: this rank's slice
//     out = model.forward(inputs, targets)              model/causal_lm.h: LM + λ·MTP + aux loss
//     backward(out.loss / grad_accum_steps)             autograd/tape.h
//     (with pipeline stages: the 1F1B schedule over the stages, train/pipeline_schedule.h)
//   all-reduce gradients: dense over the stage's ranks (the world without stages), routed experts
//     over their replicas, a shared embedding between the first and last stage (parallel/);
//     ZeRO-1 (train/zero.h): reduce-scatter them instead, each rank updating its shard, then
//     all-gather the updated weights
//   all-reduce router loads over the stage; norm = global gradient norm over every stage (optimizer.h)
//   non-finite norm -> skip (or abort): no update, loads dropped, counted
//   else: router bias update, lr from the schedule, clip and AdamW step
// Every eval_every steps: mean next-token loss over eval_batches validation batches (evaluation
// leaves no trace in the training state: delayed-scaling amax histories are restored after it).
// Every precision.stats_every steps: FP8 statistics of every quantized operand of every Linear and
// GroupedLinear (the step's last micro-batch) to <run.dir>/fp8_stats.jsonl, one line per module
// and operand (train/metrics.h: fp8_stats_json).
// Every checkpoint.every steps and at the end: a checkpoint (train/checkpoint.h).
// Deterministic for a seed and config: init, data order and every reduction order are fixed, and a
// run resumed from a checkpoint continues bit-identically.
//
// Start: checkpoint.resume auto (the newest usable <run.dir>/checkpoints/step_*.h5, skipping
// incomplete or corrupt ones with a message) | none | FILE; otherwise checkpoint.init_from loads
// weights only. End: train.steps, train.stop_after, train.time_limit_min (stops early enough to
// save before the limit, from the measured step and save times) or SIGTERM / SIGUSR1 (finish the
// step, save, return normally); with several ranks the stop is agreed by an all-reduce each step.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "data/loader.h"
#include "data/source.h"
#include "model/causal_lm.h"
#include "parallel/communicator.h"
#include "parallel/grad_overlap.h"
#include "parallel/watchdog.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/pipeline_schedule.h"
#include "train/run_lock.h"

namespace daedalus::train {

// The model a config describes, with its experts sharded over `groups` and its layers those of
// groups' pipeline stage (null: one process holds the whole model).
model::LmOptions lm_options(const RunConfig& config, const parallel::ProcessGroups* groups,
                            Device device = Device::cpu());
// Decoder layers per pipeline stage: parallel.pipeline_layers, or the balanced split (model/stages.h).
std::vector<int64_t> stage_layers(const RunConfig& config);

// The device of a run (train.device) for the rank at `local_rank` on its node: cpu -> the CPU;
// cuda -> GPU local_rank % visible devices (InputError naming train.device when there is none);
// auto -> the CPU for now: the whole step has a CUDA path, but it has not yet run on a GPU, and the
// FP8 recipes' CUDA kernels are still being written, so a GPU is used only when asked for
// (docs/gpu.md). That changes to "CUDA when a device is visible" once verified there.
Device run_device(DeviceChoice choice, int local_rank);

// The process groups of a run of `config` over the ranks of `mpi` (an MPI world; size 1 without
// mpirun): CPU tensors use `mpi` itself (parallel.backend mpi); CUDA tensors an NCCL world
// bootstrapped from it, on the GPU run_device picks, that also takes host tensors
// (parallel::with_host_staging), with its EP and replica groups split from it. groups.device is
// that GPU (or the CPU). InputError for a backend that cannot move the run's tensors.
parallel::ProcessGroups make_run_groups(const RunConfig& config, const std::shared_ptr<parallel::Communicator>& mpi);

enum class TrainerMode : uint8_t {
  train,     // run directory, resume / init_from, checkpoints
  evaluate,  // model and validation data only: nothing written, nothing loaded (see load_weights)
};

// Why run() returned.
enum class StopReason : uint8_t { finished, stop_after, time_limit, signal };
std::string_view stop_reason_name(StopReason r);

class Trainer {
 public:
  // Builds the model, optimizer and data for `config` on the ranks of `groups` (a world of one
  // without mpirun; for train.device cuda, groups from make_run_groups). Train mode: locks
  // <run.dir> (train/run_lock.h) and writes <run.dir>/config.yaml on rank 0, then resumes or
  // initializes from a checkpoint as checkpoint.resume / init_from say. `watchdog` (the caller's,
  // already watching start-up) is told each phase; run() uses it too, or makes its own when null.
  Trainer(RunConfig config, parallel::ProcessGroups groups, TrainerMode mode = TrainerMode::train,
          parallel::Watchdog* watchdog = nullptr);
  ~Trainer();

  // The whole run: banner, steps, evaluations, checkpoints, final sample. Returns normally on
  // success, also when stopped early (stop_after, time limit, signal: a checkpoint was saved);
  // throws InputError for bad input and Error for runtime failures (the CLI maps them to exit codes).
  StopReason run();

  StepMetrics train_step();
  EvalMetrics evaluate();
  int64_t eval_batch_count() const;  // validation batches evaluate() averages over

  // Saves <run.dir>/checkpoints/step_<step>.h5 now (collective) and prunes to keep_last; returns its path.
  std::string save();
  // The /trainer attributes of a checkpoint taken now.
  TrainerState state() const;
  // Evaluation: loads a checkpoint's weights and fp8 histories (strict), and its step and tokens.
  void load_weights(const std::string& path);
  const std::string& resumed_from() const { return resumed_from_; }  // "" when started fresh

  model::CausalLM& model() { return *model_; }
  AdamW& optimizer() { return *optimizer_; }
  int64_t step() const { return step_; }
  int64_t tokens_seen() const { return tokens_seen_; }
  const data::Loader& train_loader() const { return *train_loader_; }
  const RunConfig& config() const { return config_; }
  // The last step's gradient buckets started during backward, and all its overlapped buckets
  // (0, 0 when parallel.overlap_grad_reduce is off or there is one rank).
  std::pair<int64_t, int64_t> overlapped_buckets() const { return overlapped_buckets_; }
  std::string banner() const;

 private:
  void build_model();
  void beat(std::string_view what);  // the watchdog, when there is one
  void restore();
  bool try_resume(const std::string& path, std::string* why);
  void apply_state(const TrainerState& s, const std::string& path, double load_s);
  void open_metrics(bool resumed);
  StopReason poll_stop(double step_s);
  void print_sample();
  // trainer_grad_sync.cpp. start_grad_sync: the observer of the step's last backward that starts
  // the gradient buckets' reduce-scatters as they become final (null: parallel.overlap_grad_reduce
  // off, or one rank); sync_gradients finishes what it started (or, given null, does it all).
  std::unique_ptr<parallel::OverlappedGradSync> start_grad_sync();
  std::vector<bool> held_gradients() const;  // per optimizer param: not final during backward
  void sync_gradients(parallel::OverlappedGradSync* started);
  void sum_router_loads();
  // trainer_pipeline.cpp: what a step reduces across pipeline stages (no-ops with one stage).
  double global_grad_norm();
  void reduce_stage_metrics(const StageResult& r, StepMetrics& m);
  bool shares_embedding() const;  // the first and last stage both hold model.embed_tokens
  double model_flops_per_token() const;
  void set_fp8_stats(bool collect);  // LinearState::collect_stats of every module (stale stats cleared)
  // LinearState::rounding_seed of every module for the micro-batch of step `step` whose first
  // sample has global index `first_sample` (the FP4 recipes' stochastic rounding and Hadamard
  // signs; a function of run.seed, step, the sample index and the module's name: data-parallel
  // ranks draw different words, and a micro-batch draws the same ones at any PP, EP or
  // data-parallel layout with the same micro_batch_size).
  void set_rounding_seeds(int64_t step, int64_t first_sample);
  void write_fp8_stats(int64_t step);

  RunConfig config_;
  parallel::ProcessGroups groups_;
  TrainerMode mode_;
  parallel::Watchdog* watchdog_ = nullptr;
  RunDirLock run_lock_;  // rank 0, train mode
  Device device_ = Device::cpu();
  std::unique_ptr<model::CausalLM> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<PipelineSchedule> schedule_;
  std::unique_ptr<class ZeroShards> zero_;  // parallel.zero_stage 1: shard ownership and collectives
  std::vector<bool> expert_;                // per optimizer parameter: a routed-expert stack
  std::unique_ptr<parallel::ShardLayout> dense_layout_, expert_layout_;  // stage 0's overlapped buckets
  double peak_flops_ = 0;  // the device's peak for the recipe (hardware table), 0: unknown
  // Synthetic data: train_view_ is the head of train_source_, val_source_ its held-out tail.
  std::unique_ptr<data::TokenSource> train_source_, train_view_, val_source_;
  // Chat data (data.format chat): conversations packed into windows.
  std::unique_ptr<data::PackedWindows> train_packed_, val_packed_;
  std::unique_ptr<data::Loader> train_loader_, val_loader_;
  MetricsLog metrics_;
  MetricsLog fp8_stats_;  // <run.dir>/fp8_stats.jsonl when precision.stats_every > 0 (rank 0)
  std::unique_ptr<ProgressLine> progress_;
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  std::pair<int64_t, int64_t> overlapped_buckets_{0, 0};
  int64_t consecutive_skips_ = 0;
  int64_t skipped_total_ = 0;
  std::string resumed_from_;
  int64_t saved_step_ = -1;  // step of the last checkpoint in this run's directory
  double last_save_s_ = 0, max_step_s_ = 0;
  std::optional<int64_t> inject_nan_at_;     // test hook: DAEDALUS_TEST_NAN_AT_STEP
  std::optional<int64_t> inject_hang_at_;    // test hook: DAEDALUS_TEST_HANG_AT_STEP (the last rank hangs)
  std::optional<int64_t> inject_signal_at_;  // test hook: DAEDALUS_TEST_SIGNAL_AT_STEP (SIGTERM on rank 0)
};

}  // namespace daedalus::train
