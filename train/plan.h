// `daedalus plan`: what a config costs before a GPU-hour is spent — bytes per rank, a step's time
// and traffic, tokens/s, MFU, and GPU-hours, energy and dollars per billion tokens — from the
// config alone (model/param_count.h's parameter and FLOP counts, and the tensors Daedalus's ops
// keep for backward), against a hardware table (train/hardware.h).
//
// Memory per rank (bytes), as Daedalus holds it, for the rank's pipeline stage (its share):
//   weights      4 x (dense + routed / EP) + buffers   the FP32 masters, which the GEMMs read
//   gradients    4 x the trainable weights held        FP32, accumulated over micro-batches
//   moments      2 x (4 | 2) x shard                   AdamW state; shard = all (stage 0) or
//                                                      dense / S + routed / EP / replicas (ZeRO-1),
//                                                      S = world / P the ranks of a pipeline stage
//   weight caches per micro-batch in flight            BF16 / FP8 copies of weights a Linear keeps
//                                                      from forward to backward (bf16 and block recipes)
//   activations  per micro-batch in flight             every tensor an op saves for backward under
//                                                      train.recompute (FP8 copies of GEMM inputs
//                                                      counted apart as fp8_caches; a stage that
//                                                      sends on also keeps its output)
//   transient    the largest short-lived tensors at the peak (the logits' gradient, a recomputed layer;
//                without the head: the last layer's FFN gradients and the hidden-state gradients a
//                stage receives and sends back)
//   buckets      the gradient sync's reduce-scatter / all-gather buffers
// The peak is the larger of "forward done, backward starting" (everything saved, the first
// gradients) and "backward done" (every gradient), plus the static weights and moments.
//
// Pipeline stages (parallel.pipeline_parallel P, model/stages.h): a rank holds its stage's share
// (RankShare: layers, embedding, head, micro-batches in flight under 1F1B) and everything per rank
// is summed over that share; the plan reports the heaviest stage's peak and each stage's. A step
// is (m + P - 1) slots of the slowest stage's per-micro-batch time (m = grad_accum_steps
// micro-batches; the idle (P - 1) / (m + P - 1) is the bubble), plus the gradient sync.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "train/config.h"
#include "train/hardware.h"

namespace daedalus::train {

// What one rank holds of the model: its pipeline stage's part (the default: the whole model).
struct RankShare {
  int64_t first_layer = 0;  // main decoder layers [first_layer, end_layer)
  int64_t end_layer = -1;   // -1: num_hidden_layers
  bool embedding = true;    // model.embed_tokens (stage 0; the last stage too when tied or with MTP)
  bool head = true;         // model.norm, lm_head, the MTP modules
  bool receives = false;    // takes hidden states from the previous stage (every stage but the first)
  bool sends = false;       // sends hidden states to the next stage (every stage but the last)
  int64_t in_flight = 1;    // micro-batches whose activations are held at once (1F1B: min(P - s, m))
};

// Stage s's share for each stage of `config`'s pipeline, split as the trainer splits it
// (parallel.pipeline_layers, or model::balanced_stage_layers). One share (the whole model) at P = 1.
std::vector<RankShare> stage_shares(const RunConfig& config);

struct MemoryPlan {
  int64_t weights = 0, gradients = 0, moments = 0;
  int64_t weight_caches = 0;  // per micro-batch, x in_flight
  int64_t activations = 0;    // per micro-batch, x in_flight (fp8_caches included)
  int64_t fp8_caches = 0;     // of which FP8 copies of GEMM inputs
  int64_t transient = 0;
  int64_t buckets = 0;
  int64_t peak = 0;
  // Parameters this rank holds (trainable) and the moments' share of them.
  int64_t params_held = 0, params_sharded = 0;
};

// Bytes per rank of the stage holding `share` for `config` at `world` ranks (its
// pipeline_parallel, expert_parallel, zero_stage, recompute, micro_batch_size, seq_len).
// InputError when world is not a multiple of pipeline_parallel x expert_parallel.
MemoryPlan plan_memory(const RunConfig& config, int64_t world, const RankShare& share);
// The same for pipeline stage `stage` of `config` (stage_shares; 0 is the whole model at P = 1).
MemoryPlan plan_memory(const RunConfig& config, int64_t world, int64_t stage = 0);
// Every stage's (one entry at P = 1).
std::vector<MemoryPlan> plan_stage_memory(const RunConfig& config, int64_t world);

// The step's figures are the slowest pipeline stage's (the whole model at P = 1).
struct StepPlan {
  int64_t slowest_stage = 0;
  double flops_per_rank = 0;  // model FLOPs of one step on one rank of that stage (training_flops_per_token)
  double compute_s = 0;       // at the hardware's peak for the recipe's GEMM format
  double memory_bytes = 0;    // HBM traffic of a step: weights read by 3 GEMM passes per micro-batch,
                              // activations written and read back, the optimizer's read-modify-write
  double memory_s = 0;
  double all_to_all_bytes = 0;  // per rank per step: dispatch + combine, forward and backward
  double all_to_all_s = 0;
  double grad_sync_bytes = 0;  // per rank per step: reduce-scatter + all-gather volume (ring)
  double grad_sync_s = 0;
  double p2p_bytes = 0;  // per rank per step: hidden states sent on and their gradients sent back
  double p2p_s = 0;
  double bubble = 0;        // (P - 1) / (m + P - 1), the share of the step each stage idles
  double bubble_s = 0;      // (P - 1) slots of the slowest stage
  double step_s = 0;        // (max(compute, memory) + all-to-all + p2p) x (m + P - 1) / m + gradient sync
                            // (Daedalus does not overlap communication with compute)
  double tokens_per_s = 0;  // the whole job
  double mfu = 0;           // model FLOPs / (step_s x world x peak)
  double gpu_hours_per_billion = 0, kwh_per_billion = 0, dollars_per_billion = 0;
};

// Peak dense rate (flops/s) of the GEMM format the config's recipe runs most GEMMs in.
double peak_flops(const Hardware& hw, const RunConfig& config);
StepPlan plan_step(const RunConfig& config, int64_t world, const Hardware& hw);

struct Plan {
  int64_t world = 1;
  MemoryPlan memory;  // the heaviest stage's
  int64_t heaviest_stage = 0;
  std::vector<MemoryPlan> stages;  // each stage's (one at P = 1)
  StepPlan step;
  bool fits = false;  // every stage's peak fits
};
Plan make_plan(const RunConfig& config, int64_t world, const Hardware& hw);

// The smallest world (then the fewest pipeline stages, then the least recomputation, then stage 0
// before ZeRO-1, then the largest EP) whose heaviest stage's peak fits the hardware's memory,
// searching worlds (powers of two) up to `max_world`, P a power of two up to num_hidden_layers
// dividing the world, EP dividing both a stage's ranks and the experts; the config with those keys
// set (a hand-set parallel.pipeline_layers kept only at its own P), and the world. nullopt when
// nothing fits.
struct Layout {
  int64_t world = 1;
  RunConfig config;
};
std::optional<Layout> smallest_fitting_layout(const RunConfig& config, const Hardware& hw, int64_t max_world = 65536);

// The report `daedalus plan` prints.
std::string format_plan(const RunConfig& config, const Plan& plan, const Hardware& hw);

// `daedalus plan CONFIG [--world N] [--set k=v]... [--hardware NAME|FILE]`: prints the report (and,
// when it does not fit, the smallest layout that would) to `out`; returns the exit code.
int run_plan(const std::string& config_path, int64_t world, const std::vector<std::string>& sets,
             const std::string& hardware, std::FILE* out);

}  // namespace daedalus::train
