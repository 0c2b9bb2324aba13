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

std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / double(int64_t(1) << 30)); }

// The layouts the search tries at `world`: EP dividing the world and the experts (largest first:
// fewer experts per rank), stage 0 then ZeRO-1, then more recomputation.
std::vector<RunConfig> candidates(const RunConfig& base, int64_t world) {
  std::vector<RunConfig> out;
  const int64_t experts = base.model.n_routed_experts;
  std::vector<int64_t> eps;
  for (int64_t ep = std::min(world, std::max<int64_t>(experts, 1)); ep >= 1; --ep)
    if (world % ep == 0 && (experts == 0 ? ep == 1 : experts % ep == 0)) eps.push_back(ep);
  for (model::Recompute r : {model::Recompute::none, model::Recompute::selective, model::Recompute::full}) {
    for (int64_t zero : {0, 1}) {
      for (int64_t ep : eps) {
        RunConfig c = base;
        c.parallel.expert_parallel = ep;
        c.parallel.zero_stage = zero;
        c.train.recompute = r;
        out.push_back(c);
      }
    }
  }
  return out;
}

}  // namespace

std::optional<Layout> smallest_fitting_layout(const RunConfig& config, const Hardware& hw, int64_t max_world) {
  for (int64_t world = 1; world <= max_world; world *= 2)
    for (const RunConfig& c : candidates(config, world))
      if (double(plan_memory(c, world).peak) <= hw.memory_bytes) return Layout{world, c};
  return std::nullopt;
}

std::string format_plan(const RunConfig& c, const Plan& p, const Hardware& hw) {
  const model::ParameterCounts counts = model::count_parameters(c.model);
  const MemoryPlan& m = p.memory;
  const StepPlan& s = p.step;
  const int64_t ep = c.parallel.expert_parallel;
  const bool zero = c.parallel.zero_stage == 1;
  const int64_t tokens_step = c.train.micro_batch_size * c.train.seq_len * c.train.grad_accum_steps * p.world;
  std::string out;
  out += fmt::format("daedalus plan: {} on {} x {} ({})\n", c.run.name, p.world, hw.name, hw.file);
  out += fmt::format("  model        {} parameters, {} activated per token, + {} MTP; recipe {}\n",
                     format_count(double(counts.total)), format_count(double(counts.activated)),
                     format_count(double(counts.mtp_trained)), fp8::recipe_name(c.precision.recipe.kind));
  out += fmt::format("  layout       world {} = expert parallel {} x {} replica(s), ZeRO stage {}, recompute {}\n",
                     p.world, ep, p.world / ep, c.parallel.zero_stage, recompute_name(c.train.recompute));
  out += fmt::format("  batch        {} x {} tokens x {} accum x {} ranks = {} tokens per step\n",
                     c.train.micro_batch_size, c.train.seq_len, c.train.grad_accum_steps, p.world,
                     format_count(double(tokens_step)));
  out += fmt::format("  per rank     {} parameters held, optimizer state for {}\n", format_count(double(m.params_held)),
                     format_count(double(m.params_sharded)));
  out += "  memory per rank\n";
  out += fmt::format("    weights        {:>12}  FP32 masters (the copy the GEMMs read)\n", gib(double(m.weights)));
  out += fmt::format("    gradients      {:>12}  FP32\n", gib(double(m.gradients)));
  out += fmt::format("    moments        {:>12}  AdamW, {}{}\n", gib(double(m.moments)),
                     c.optimizer.state_dtype == DType::bf16 ? "bf16" : "fp32",
                     zero ? fmt::format(", ZeRO-1: dense / {}, experts / {}", p.world, p.world / ep) : "");
  out += fmt::format("    weight caches  {:>12}  BF16/FP8 weight copies kept for backward (per micro-batch)\n",
                     gib(double(m.weight_caches)));
  out += fmt::format("    activations    {:>12}  per micro-batch, recompute {} (FP8 caches {})\n",
                     gib(double(m.activations)), recompute_name(c.train.recompute), gib(double(m.fp8_caches)));
  out += fmt::format("    transient      {:>12}  logits gradient{}\n", gib(double(m.transient)),
                     c.train.recompute == model::Recompute::full ? ", one recomputed layer" : "");
  out += fmt::format("    buckets        {:>12}  gradient reduce-scatter / all-gather\n", gib(double(m.buckets)));
  out += fmt::format("    peak           {:>12}  of {}: {}\n", gib(double(m.peak)), gib(hw.memory_bytes),
                     p.fits ? "fits" : "DOES NOT FIT");
  out += fmt::format(
      "  step         compute {:.3g} s ({:.3g} PFLOP per rank at {:.4g} TFLOPS), memory traffic {:.3g} s "
      "({:.4g} GB at {:.4g} GB/s)\n",
      s.compute_s, s.flops_per_rank / 1e15, peak_flops(hw, c) / 1e12, s.memory_s, s.memory_bytes / 1e9,
      hw.memory_bandwidth / 1e9);
  out += fmt::format("               all-to-all {:.3g} s ({:.3g} GB), gradient sync {:.3g} s ({:.3g} GB)\n",
                     s.all_to_all_s, s.all_to_all_bytes / 1e9, s.grad_sync_s, s.grad_sync_bytes / 1e9);
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
      const MemoryPlan m = plan_memory(layout->config, layout->world);
      text += fmt::format(
          "  smallest layout that fits: --world {} --set parallel.expert_parallel={} --set parallel.zero_stage={} "
          "--set train.recompute={} (peak {})\n",
          layout->world, layout->config.parallel.expert_parallel, layout->config.parallel.zero_stage,
          recompute_name(layout->config.train.recompute), gib(double(m.peak)));
    } else {
      text += fmt::format(
          "  no layout fits {} per rank: every rank holds every layer's dense weights, and Daedalus has no pipeline "
          "stages yet\n",
          gib(hw.memory_bytes));
      // What stages would do (hypothetical: issue 22): layers split evenly, the first stage with
      // the embedding and pp micro-batches in flight (1F1B), the last with the head and MTP.
      const int64_t layers = config.model.num_hidden_layers;
      const auto heaviest_stage = [&](const RunConfig& c, int64_t pp) {
        int64_t worst = 0;
        for (int64_t stage = 0; stage < pp; ++stage) {
          RankShare share;
          share.first_layer = layers * stage / pp;
          share.end_layer = layers * (stage + 1) / pp;
          share.embedding = stage == 0;
          share.head = stage == pp - 1;
          share.in_flight = pp - stage;
          worst = std::max(worst, plan_memory(c, world / pp, share).peak);
        }
        return worst;
      };
      bool found = false;
      for (int64_t pp = 2; pp <= layers && !found; pp *= 2) {
        if (world % pp != 0 || (world / pp) % config.parallel.expert_parallel != 0) continue;
        for (model::Recompute r : {model::Recompute::none, model::Recompute::selective, model::Recompute::full}) {
          if (r < config.train.recompute) continue;
          RunConfig c = config;
          c.train.recompute = r;
          const int64_t worst = heaviest_stage(c, pp);
          if (double(worst) > hw.memory_bytes) continue;
          text += fmt::format(
              "  with {} pipeline stages (not built: issue 22) and train.recompute={} the heaviest stage (1F1B, "
              "{} micro-batches in flight) would need {}\n",
              pp, recompute_name(r), pp, gib(double(worst)));
          found = true;
          break;
        }
      }
    }
  }
  std::fputs(text.c_str(), out);
  return 0;
}

}  // namespace daedalus::train
