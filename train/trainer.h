// The training loop: one YAML config in, a trained model, metrics.jsonl and checkpoints out.
//
// One optimizer step (train_step), top-down:
//   for each of grad_accum_steps micro-batches:         data/loader.h: this rank's slice
//     out = model.forward(inputs, targets)              model/causal_lm.h: LM + λ·MTP + aux loss
//     backward(out.loss / grad_accum_steps)             autograd/tape.h
//   all-reduce gradients: dense over the world, routed experts over their replicas (parallel/)
//   all-reduce router loads over the world; norm = global gradient norm (optimizer.h)
//   non-finite norm -> skip (or abort): no update, loads dropped, counted
//   else: router bias update, lr from the schedule, clip and AdamW step
// Every eval_every steps: mean next-token loss over eval_batches validation batches.
// Deterministic for a seed and config: init, data order and every reduction order are fixed.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "data/loader.h"
#include "data/source.h"
#include "model/causal_lm.h"
#include "parallel/communicator.h"
#include "train/config.h"
#include "train/metrics.h"
#include "train/optimizer.h"

namespace daedalus::train {

class Trainer {
 public:
  // Builds the model, optimizer and data for `config` on the ranks of `groups` (a world of one
  // without mpirun). Writes <run.dir>/config.yaml on rank 0.
  Trainer(RunConfig config, parallel::ProcessGroups groups);
  ~Trainer();

  // The whole run: banner, steps, evaluations, final sample. Returns normally on success; throws
  // InputError for bad input and Error for runtime failures (the CLI maps them to exit codes).
  void run();

  StepMetrics train_step();
  EvalMetrics evaluate();

  model::CausalLM& model() { return *model_; }
  AdamW& optimizer() { return *optimizer_; }
  int64_t step() const { return step_; }
  const RunConfig& config() const { return config_; }
  std::string banner() const;

 private:
  void print_sample();
  void sync_gradients();
  void sum_router_loads();
  double model_flops_per_token() const;

  RunConfig config_;
  parallel::ProcessGroups groups_;
  Device device_ = Device::cpu();
  std::unique_ptr<model::CausalLM> model_;
  std::unique_ptr<AdamW> optimizer_;
  // Synthetic data: train_view_ is the head of train_source_, val_source_ its held-out tail.
  std::unique_ptr<data::TokenSource> train_source_, train_view_, val_source_;
  std::unique_ptr<data::Loader> train_loader_, val_loader_;
  MetricsLog metrics_;
  std::unique_ptr<ProgressLine> progress_;
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  int64_t consecutive_skips_ = 0;
  int64_t skipped_total_ = 0;
  std::optional<int64_t> inject_nan_at_;  // test hook: DAEDALUS_TEST_NAN_AT_STEP
};

}  // namespace daedalus::train
