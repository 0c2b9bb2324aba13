// `daedalus plan`: the report, the search for the smallest layout that fits, and the command.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "autograd/check.h"
#include "model/param_count.h"
#include "train/metrics.h"
#include "train/plan.h"

namespace daedalus::train {

namespace {

std::string_view recompute_name(model::Recompute r) {
  switch (r) {
    case model::Recompute::none: return "none";
    case model::Recompute::selective: return "selective";
    case model::Recompute::full: return "full";
  }
  return "?";
}

// The layouts the search tries at `world`, in the order of preference: fewer pipeline stages (P a
// power of two up to the decoder layers: less bubble), less recomputation, stage 0 before ZeRO-1,
// then EP dividing a stage's ranks and the experts (largest first: fewer experts per rank).
std::vector<RunConfig> candidates(const RunConfig& base, int64_t world) {
  std::vector<RunConfig> out;
  const int64_t experts = base.model.n_routed_experts;
  for (int64_t pp = 1; pp <= base.model.num_hidden_layers && world % pp == 0; pp *= 2) {
    const int64_t stage_ranks = world / pp;
    std::vector<int64_t> eps;
    for (int64_t ep = std::min(stage_ranks, std::max<int64_t>(experts, 1)); ep >= 1; --ep)
      if (stage_ranks % ep == 0 && (experts == 0 ? ep == 1 : experts % ep == 0)) eps.push_back(ep);
    for (model::Recompute r : {model::Recompute::none, model::Recompute::selective, model::Recompute::full}) {
      for (int64_t zero : {0, 1}) {
        for (int64_t ep : eps) {
          RunConfig c = base;
          if (pp != base.parallel.pipeline_parallel) c.parallel.pipeline_layers.clear();  // balanced
          c.parallel.pipeline_parallel = pp;
          c.parallel.expert_parallel = ep;
          c.parallel.zero_stage = zero;
          c.train.recompute = r;
          out.push_back(c);
        }
      }
    }
  }
  return out;
}

// Whether every stage's peak fits `bytes` (stops at the first that does not).
bool every_stage_fits(const RunConfig& c, int64_t world, double bytes) {
  for (const RankShare& share : stage_shares(c))
    if (double(plan_memory(c, world, share).peak) > bytes) return false;
  return true;
}

// "layers 4-7, embedding, 13 micro-batches in flight": what stage `share` holds.
std::string describe(const RankShare& share, const model::ModelConfig& m) {
  const int64_t end = share.end_layer < 0 ? m.num_hidden_layers : share.end_layer;
  std::string out = end - share.first_layer == 1 ? fmt::format("layer {}", share.first_layer)
                                                 : fmt::format("layers {}-{}", share.first_layer, end - 1);
  if (share.embedding) out += ", embedding";
  if (share.head) out += m.num_nextn_predict_layers > 0 ? ", head, MTP" : ", head";
  return out + fmt::format(", {} micro-batch{} in flight", share.in_flight, share.in_flight == 1 ? "" : "es");
}

}  // namespace

std::optional<Layout> smallest_fitting_layout(const RunConfig& config, const Hardware& hw, int64_t max_world) {
  for (int64_t world = 1; world <= max_world; world *= 2)
    for (const RunConfig& c : candidates(config, world))
      if (every_stage_fits(c, world, hw.memory_bytes)) return Layout{world, c};
  return std::nullopt;
}

std::string format_plan(const RunConfig& c, const Plan& p, const Hardware& hw) {
  const model::ParameterCounts counts = model::count_parameters(c.model);
  const MemoryPlan& m = p.memory;
  const StepPlan& s = p.step;
  const int64_t ep = c.parallel.expert_parallel, pp = c.parallel.pipeline_parallel;
  const int64_t stage_ranks = p.world / pp;
  const bool zero = c.parallel.zero_stage == 1;
  const int64_t tokens_step = c.train.micro_batch_size * c.train.seq_len * c.train.grad_accum_steps * stage_ranks;
  const std::vector<RankShare> shares = stage_shares(c);
  std::string out;
  out += fmt::format("daedalus plan: {} on {} x {} ({})\n", c.run.name, p.world, hw.name, hw.file);
  out += fmt::format("  model        {} parameters, {} activated per token, + {} MTP; recipe {}\n",
                     format_count(double(counts.total)), format_count(double(counts.activated)),
                     format_count(double(counts.mtp_trained)), fp8::recipe_name(c.precision.recipe.kind));
  out += fmt::format("  layout       world {} = {}expert parallel {} x {} replica(s), ZeRO stage {}, recompute {}\n",
                     p.world, pp > 1 ? fmt::format("{} pipeline stages x ", pp) : "", ep, stage_ranks / ep,
                     c.parallel.zero_stage, recompute_name(c.train.recompute));
  out += fmt::format("  batch        {} x {} tokens x {} accum x {} {} = {} tokens per step\n",
                     c.train.micro_batch_size, c.train.seq_len, c.train.grad_accum_steps, stage_ranks,
                     pp > 1 ? "data-parallel ranks per stage" : "ranks", format_count(double(tokens_step)));
  out +=
      fmt::format("  per rank     {} parameters held, optimizer state for {}{}\n", format_count(double(m.params_held)),
                  format_count(double(m.params_sharded)), pp > 1 ? " (the heaviest stage)" : "");
  if (pp > 1) {
    out += fmt::format("  memory per rank of stage {} (the heaviest: {})\n", p.heaviest_stage,
                       describe(shares[size_t(p.heaviest_stage)], c.model));
  } else {
    out += "  memory per rank\n";
  }
  out += fmt::format("    weights        {:>12}  FP32 masters (the copy the GEMMs read)\n",
                     format_bytes(double(m.weights)));
  out += fmt::format("    gradients      {:>12}  FP32\n", format_bytes(double(m.gradients)));
  out += fmt::format("    moments        {:>12}  AdamW, {}{}\n", format_bytes(double(m.moments)),
                     c.optimizer.state_dtype == DType::bf16 ? "bf16" : "fp32",
                     zero ? fmt::format(", ZeRO-1: dense / {}, experts / {}", stage_ranks, stage_ranks / ep) : "");
  const std::string in_flight =
      pp > 1 ? fmt::format("x {} micro-batches in flight", shares[size_t(p.heaviest_stage)].in_flight)
             : "per micro-batch";
  out += fmt::format("    weight caches  {:>12}  BF16/FP8 weight copies kept for backward ({})\n",
                     format_bytes(double(m.weight_caches)), in_flight);
  out +=
      fmt::format("    activations    {:>12}  {}, recompute {} (FP8 caches {})\n", format_bytes(double(m.activations)),
                  in_flight, recompute_name(c.train.recompute), format_bytes(double(m.fp8_caches)));
  out += fmt::format("    transient      {:>12}  {}{}\n", format_bytes(double(m.transient)),
                     shares[size_t(p.heaviest_stage)].head ? "logits gradient" : "hidden-state gradients",
                     c.train.recompute == model::Recompute::full ? ", one recomputed layer" : "");
  out +=
      fmt::format("    buckets        {:>12}  gradient reduce-scatter / all-gather\n", format_bytes(double(m.buckets)));
  out += fmt::format("    peak           {:>12}  of {}: {}\n", format_bytes(double(m.peak)),
                     format_bytes(hw.memory_bytes), p.fits ? "fits" : "DOES NOT FIT");
  if (pp > 1) {
    out += "  peak per stage\n";
    for (size_t st = 0; st < p.stages.size(); ++st)
      out += fmt::format("    stage {:<3} {:>12}  {}\n", st, format_bytes(double(p.stages[st].peak)),
                         describe(shares[st], c.model));
  }
  out += fmt::format(
      "  step         compute {:.3g} s ({:.3g} PFLOP per rank at {:.4g} TFLOPS), memory traffic {:.3g} s "
      "({:.4g} GB at {:.4g} GB/s){}\n",
      s.compute_s, s.flops_per_rank / 1e15, peak_flops(hw, c) / 1e12, s.memory_s, s.memory_bytes / 1e9,
      hw.memory_bandwidth / 1e9, pp > 1 ? fmt::format(" on stage {}, the slowest", s.slowest_stage) : "");
  out += fmt::format("               all-to-all {:.3g} s ({:.3g} GB), gradient sync {:.3g} s ({:.3g} GB)\n",
                     s.all_to_all_s, s.all_to_all_bytes / 1e9, s.grad_sync_s, s.grad_sync_bytes / 1e9);
  if (pp > 1)
    out += fmt::format(
        "               pipeline p2p {:.3g} s ({:.3g} GB: hidden states and their gradients, fp32), bubble {:.3g} s "
        "= {:.1f}% of the step ((P - 1) / (m + P - 1), m = {} micro-batch{})\n",
        s.p2p_s, s.p2p_bytes / 1e9, s.bubble_s, 100 * s.bubble, c.train.grad_accum_steps,
        c.train.grad_accum_steps == 1 ? "" : "es");
  out += fmt::format(
      "               {:.3g} s per step, {} tokens/s, MFU {:.1f}% — at peak rates: a lower bound on the time "
      "(max(compute, memory) + communication, not overlapped)\n",
      s.step_s, format_count(s.tokens_per_s), 100 * s.mfu);
  out += fmt::format("  per 1B tokens {:.0f} GPU-hours, {:.0f} kWh, ${:.0f} at ${:.2f}/GPU-hour\n",
                     s.gpu_hours_per_billion, s.kwh_per_billion, s.dollars_per_billion, hw.price_per_hour);
  return out;
}

int run_plan(const std::string& config_path, int64_t world, const std::vector<std::string>& sets,
             const std::string& hardware, std::FILE* out) {
  RunConfig config = load_config(config_path, sets);
  DAEDALUS_CHECK(world >= 1, "--world: must be >= 1, got {}", world);
  config.validate(int(world));
  const Hardware hw = load_hardware(hardware);
  const Plan plan = make_plan(config, world, hw);
  std::string text = format_plan(config, plan, hw);
  if (!plan.fits) {
    const std::optional<Layout> layout = smallest_fitting_layout(config, hw);
    if (layout) {
      const RunConfig& lc = layout->config;
      const Plan fit = make_plan(lc, layout->world, hw);
      text += fmt::format(
          "  smallest layout that fits: --world {} --set parallel.pipeline_parallel={} --set "
          "parallel.expert_parallel={} "
          "--set parallel.zero_stage={} --set train.recompute={} (peak {}{}, {:.3g} s per step)\n",
          layout->world, lc.parallel.pipeline_parallel, lc.parallel.expert_parallel, lc.parallel.zero_stage,
          recompute_name(lc.train.recompute), format_bytes(double(fit.memory.peak)),
          lc.parallel.pipeline_parallel > 1 ? fmt::format(" on stage {}", fit.heaviest_stage) : "", fit.step.step_s);
    } else {
      text += fmt::format("  no layout fits {} per rank up to 65536 ranks (pipeline stages, EP, ZeRO-1, recompute)\n",
                          format_bytes(hw.memory_bytes));
    }
  }
  std::fputs(text.c_str(), out);
  return 0;
}

}  // namespace daedalus::train
