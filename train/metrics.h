// What a run reports: metrics.jsonl lines (rank 0), the terminal progress line, the start-up
// banner. Keys are CONTRACT.md's (run directory, metrics.jsonl).
//
// Progress: on a terminal (logging.progress auto and stderr a TTY, or always) one line redrawn in
// place after every step — "step 120/300  loss 2.3456  12.3k tok/s  ETA 1m23s" — and a permanent
// log line every log_every steps; otherwise only the log lines, on stdout.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fp8/stats.h"

namespace daedalus::train {

// One optimizer step, as the trainer measured it.
struct StepMetrics {
  int64_t step = 0;  // 1-based: the number of optimizer steps taken including this one
  double loss = 0;   // total loss (main + λ·MTP + aux), mean over the step's micro-batches
  double lm_loss = 0;
  std::optional<double> mtp_loss;
  std::optional<double> moe_aux_loss;
  double lr = 0;
  double grad_norm = 0;
  int64_t tokens = 0;  // tokens seen so far (all ranks)
  double tokens_per_s = 0;
  double step_ms = 0;                             // wall clock, between two device synchronizations
  std::optional<double> gpu_ms;                   // CUDA runs: GPU time of the step (CUDA events)
  std::optional<int64_t> host_syncs;              // CUDA runs: times the host waited for the device
  std::optional<double> grad_sync_ms;             // several ranks: gradient sync after backward
  int64_t mem_bytes = 0;                          // peak bytes of live tensors during the step (this rank's device)
  bool skipped = false;                           // non-finite gradients: no update
  std::vector<double> expert_load_max_over_mean;  // per MoE layer: max load / mean load (1 = balanced)
  double model_flops_per_s = 0;                   // achieved, by the 6·N + attention estimate
  std::optional<double> mfu;                      // when the device's peak is known
  // EP all-to-all bytes this step, this rank's to other ranks: forward dispatch (token rows in
  // parallel.dispatch_dtype, + FP8 scales), forward combine, and both backward exchanges together.
  int64_t dispatch_bytes = 0;
  int64_t combine_bytes = 0;
  int64_t backward_all_to_all_bytes = 0;
  double all_to_all_ms = 0;  // time in the EP all-to-all exchanges this step
  // Pipeline stages (parallel.pipeline_parallel > 1), for this rank's pipeline (one rank per stage):
  // each stage's measured idle share of the 1F1B schedule (time blocked in point-to-point
  // transfers / the schedule's time), the ideal (P - 1) / (m + P - 1), and each stage's peak bytes.
  std::vector<double> pipeline_bubble;
  std::optional<double> pipeline_bubble_theory;
  std::vector<int64_t> stage_mem_bytes;
  // First step of a fresh run only: digests that let two runs (e.g. an ablation sweep's recipes)
  // prove they started from the same weights and read the same first batch. FNV-1a 64 (hex) over
  // every parameter's name and FP32 bytes before the update, and over the first micro-batch's tokens.
  std::string init_digest, batch_digest;

  double worst_load() const;
  std::string to_json() const;
};

struct EvalMetrics {
  int64_t step = 0;
  double val_loss = 0;
  int64_t tokens = 0;
  std::string to_json() const;
};

// One fp8_stats.jsonl line: the statistics of one quantized operand ("x", "w" or "dy") of one
// module (HF name; routed experts as <module>.<expert>) at `step`.
std::string fp8_stats_json(int64_t step, const std::string& module, const std::string& operand,
                           const fp8::QuantStats& s);

// Rewrites a JSON-lines file without the lines whose "step" is beyond `step` (a resumed run drops
// what the interrupted one logged after its last checkpoint) and without lines that do not parse
// as a JSON object (a line cut short by a crash or a full disk). A missing file is left missing.
// Error naming the file when it cannot be rewritten.
void drop_lines_after_step(const std::string& path, int64_t step);

// Appends JSON lines to <run.dir>/metrics.jsonl (nothing when disabled or not rank 0). A line that
// cannot be written (a full disk) is an Error naming the file: the run stops rather than lose it.
class MetricsLog {
 public:
  MetricsLog() = default;
  MetricsLog(const std::string& path, bool append);
  void write(const std::string& json_line);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::shared_ptr<std::FILE> owner_;
};

class ProgressLine {
 public:
  // `interactive`: redraw a status line on stderr after every step.
  ProgressLine(bool interactive, int64_t total_steps, int64_t log_every)
      : interactive_(interactive), total_(total_steps), log_every_(log_every) {}
  void step(const StepMetrics& m, double elapsed_s, int64_t first_step);
  void eval(const EvalMetrics& m);
  void message(const std::string& text);  // a permanent line (clears the status line first)
  void finish();

 private:
  bool interactive_;
  int64_t total_, log_every_;
  bool drawn_ = false;
};

std::string format_duration(double seconds);  // "1h02m", "3m05s", "12s"
std::string format_count(double n);           // "1.23k", "4.5M", "671.03B"
std::string format_bytes(double bytes);       // "512 B", "3.5 KiB", "1.25 MiB", "13.40 GiB" (binary units)

}  // namespace daedalus::train
