// `daedalus plan`: what a config costs before a GPU-hour is spent — bytes per rank, a step's time
// and traffic, tokens/s, MFU, and GPU-hours, energy and dollars per billion tokens — from the
// config alone (model/param_count.h's parameter and FLOP counts, and the tensors Daedalus's ops
// keep for backward), against a hardware table (train/hardware.h).
//
// Memory per rank (bytes), as Daedalus holds it today:
//   weights      4 x (dense + routed / EP) + buffers   the FP32 masters, which the GEMMs read
//   gradients    4 x the trainable weights held        FP32, accumulated over micro-batches
//   moments      2 x (4 | 2) x shard                   AdamW state; shard = all (stage 0) or
//                                                      dense / world + routed / EP / replicas (ZeRO-1)
//   weight caches per micro-batch in flight            BF16 / FP8 copies of weights a Linear keeps
//                                                      from forward to backward (bf16 and block recipes)
//   activations  per micro-batch in flight             every tensor an op saves for backward under
//                                                      train.recompute (FP8 copies of GEMM inputs
//                                                      counted apart as fp8_caches)
//   transient    the largest short-lived tensors at the peak (the logits' gradient, a recomputed layer)
//   buckets      the gradient sync's reduce-scatter / all-gather buffers
// The peak is the larger of "forward done, backward starting" (everything saved, the first
// gradients) and "backward done" (every gradient), plus the static weights and moments.
//
// Pipeline stages (issue 22) extend RankShare: which layers, embedding and head a rank holds and
// how many micro-batches it keeps in flight; everything per rank is summed over that share.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "train/config.h"
#include "train/hardware.h"

namespace daedalus::train {

// What one rank holds of the model: today the whole stack (one pipeline stage).
struct RankShare {
  int64_t first_layer = 0;  // main decoder layers [first_layer, end_layer)
  int64_t end_layer = -1;   // -1: num_hidden_layers
  bool embedding = true;    // model.embed_tokens
  bool head = true;         // model.norm, lm_head, the MTP modules
  int64_t in_flight = 1;    // micro-batches whose activations are held at once (1F1B: stages - stage)
};

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

// Bytes per rank for `config` at `world` ranks (its expert_parallel, zero_stage, recompute,
// micro_batch_size, seq_len). InputError when world is not a multiple of expert_parallel.
MemoryPlan plan_memory(const RunConfig& config, int64_t world, const RankShare& share = {});

struct StepPlan {
  double flops_per_rank = 0;  // model FLOPs of one step on one rank (training_flops_per_token)
  double compute_s = 0;       // at the hardware's peak for the recipe's GEMM format
  double memory_bytes = 0;    // HBM traffic of a step: weights read by 3 GEMM passes per micro-batch,
                              // activations written and read back, the optimizer's read-modify-write
  double memory_s = 0;
  double all_to_all_bytes = 0;  // per rank per step: dispatch + combine, forward and backward
  double all_to_all_s = 0;
  double grad_sync_bytes = 0;  // per rank per step: reduce-scatter + all-gather volume (ring)
  double grad_sync_s = 0;
  double step_s = 0;        // max(compute, memory) + communication (Daedalus does not overlap them)
  double tokens_per_s = 0;  // the whole job
  double mfu = 0;           // model FLOPs / (step_s x world x peak)
  double gpu_hours_per_billion = 0, kwh_per_billion = 0, dollars_per_billion = 0;
};

// Peak dense rate (flops/s) of the GEMM format the config's recipe runs most GEMMs in.
double peak_flops(const Hardware& hw, const RunConfig& config);
StepPlan plan_step(const RunConfig& config, int64_t world, const Hardware& hw);

struct Plan {
  int64_t world = 1;
  MemoryPlan memory;
  StepPlan step;
  bool fits = false;
};
Plan make_plan(const RunConfig& config, int64_t world, const Hardware& hw);

// The smallest world (then the least recomputation, then stage 0 before ZeRO-1) whose peak fits
// the hardware's memory, searching worlds up to `max_world` with EP dividing both the world and the
// experts; the config with those keys set, and the world. nullopt when nothing fits.
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
