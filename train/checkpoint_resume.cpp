// The trainer's side of checkpoints: choosing what to resume from (checkpoint.resume auto | none |
// FILE, checkpoint.init_from), restoring the counters and the data position, saving and pruning.
// The file format itself is checkpoint.cpp.
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "parallel/config_check.h"
#include "train/trainer.h"

namespace daedalus::train {

namespace {

Placement placement_of(const parallel::ProcessGroups& g) {
  return Placement{g.world->rank(), g.world->size(), g.ep_size};
}

// "path: message" -> "message" (the caller names the path itself).
std::string without_path(const std::string& message, const std::string& path) {
  const std::string prefix = path + ": ";
  return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
}

// The steps of <run_dir>/checkpoints/step_*.h5, newest first, as rank 0 sees them.
std::vector<int64_t> agreed_steps(parallel::Communicator& world, const std::string& run_dir) {
  std::vector<int64_t> steps;
  if (world.rank() == 0)
    for (const CheckpointFile& f : list_checkpoints(run_dir)) steps.push_back(f.step);
  if (world.size() == 1) return steps;
  Tensor n = Tensor::from_vector<int64_t>({int64_t(steps.size())}, {1});
  world.broadcast(n, 0);
  steps.resize(size_t(n.to_vector<int64_t>()[0]));
  if (steps.empty()) return steps;
  Tensor t = Tensor::from_vector(steps, {int64_t(steps.size())});
  world.broadcast(t, 0);
  return t.to_vector<int64_t>();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return std::filesystem::equivalent(a, b, ec);
}

}  // namespace

void Trainer::restore() {
  const CheckpointConfig& c = config_.checkpoint;
  const bool rank0 = groups_.world->rank() == 0;
  auto say = [&](const std::string& m) {
    if (rank0) progress_->message(m);
  };
  if (c.resume == "auto") {
    const std::vector<int64_t> steps = agreed_steps(*groups_.world, config_.run.dir);
    for (int64_t step : steps) {
      const std::string path = checkpoint_path(config_.run.dir, step);
      std::string why;
      if (try_resume(path, &why)) break;
      say(fmt::format("resume: skipped {}: {}", path, why));
      build_model();  // the failed attempt may have loaded part of the state
    }
    if (resumed_from_.empty() && !steps.empty())
      say(fmt::format("resume: no usable checkpoint in {}/checkpoints; starting from step 0", config_.run.dir));
  } else if (c.resume != "none") {
    const auto t0 = std::chrono::steady_clock::now();
    const TrainerState s = load_checkpoint(c.resume, *model_, optimizer_.get(), LoadOptions{}, placement_of(groups_));
    apply_state(s, c.resume, seconds_since(t0));
  }
  if (!resumed_from_.empty() || !c.init_from) return;

  LoadOptions o;
  o.optimizer = false;
  o.fp8 = false;
  o.strict = c.strict;
  o.strict_settable = true;
  LoadReport report;
  const TrainerState s = load_checkpoint(*c.init_from, *model_, nullptr, o, placement_of(groups_), &report);
  say(
      fmt::format("init_from: {} tensors from {} (step {} of its run); the optimizer, step count and data position "
                  "start fresh",
                  report.tensors, *c.init_from, s.step));
  if (!report.clean())
    say(fmt::format("init_from: checkpoint.strict is false, so these kept their initial values or were ignored:\n{}",
                    report.describe()));
}

bool Trainer::try_resume(const std::string& path, std::string* why) {
  const auto t0 = std::chrono::steady_clock::now();
  std::optional<TrainerState> s;
  std::string message;
  try {
    s = load_checkpoint(path, *model_, optimizer_.get(), LoadOptions{}, placement_of(groups_));
  } catch (const CheckpointReadError& e) {
    message = without_path(e.what(), path);
  }
  if (!parallel::agree(*groups_.world, s.has_value(), &message)) {
    *why = message;
    return false;
  }
  apply_state(*s, path, seconds_since(t0));
  return true;
}

void Trainer::apply_state(const TrainerState& s, const std::string& path, double load_s) {
  step_ = s.step;
  tokens_seen_ = s.tokens_seen;
  skipped_total_ = s.skipped_steps;
  consecutive_skips_ = s.consecutive_skips;
  try {
    train_loader_->set_consumed_samples(s.consumed_samples);
  } catch (const InputError& e) {
    throw InputError(
        fmt::format("{}: cannot resume the data position (consumed_samples {}) with train.micro_batch_size "
                    "{} on {} rank(s): {}",
                    path, s.consumed_samples, config_.train.micro_batch_size, groups_.world->size(), e.what()));
  }
  resumed_from_ = path;
  if (same_file(path, checkpoint_path(config_.run.dir, step_))) saved_step_ = step_;
  if (groups_.world->rank() != 0) return;
  progress_->message(
      fmt::format("resumed from {}: step {}, {} tokens seen (saved by world {}, expert parallel {}; "
                  "loaded in {:.2f} s)",
                  path, s.step, s.tokens_seen, s.world_size, s.expert_parallel, load_s));
  try {  // a changed seed or window length changes the data order: say so
    const RunConfig saved = parse_config(s.config, {}, path + ":/trainer/config");
    if (saved.run.seed != config_.run.seed || saved.train.seq_len != config_.train.seq_len)
      progress_->message(
          fmt::format("resume: note: run.seed / train.seq_len ({} / {}) differ from the checkpoint's "
                      "({} / {}): the data order is not the one the checkpoint's run would have seen",
                      config_.run.seed, config_.train.seq_len, saved.run.seed, saved.train.seq_len));
  } catch (const std::exception&) {
    // An older or newer config schema: nothing to compare.
  }
}

void Trainer::open_metrics(bool resumed) {
  if (groups_.world->rank() != 0 || !config_.logging.jsonl) return;
  const std::string path = config_.run.dir + "/metrics.jsonl";
  // Lines past the resumed step belong to a run that did not reach a checkpoint: drop them so the
  // file reads as one run.
  if (resumed) drop_lines_after_step(path, step_);
  metrics_ = MetricsLog(path, /*append=*/resumed);
}

TrainerState Trainer::state() const {
  TrainerState s;
  s.step = step_;
  s.tokens_seen = tokens_seen_;
  s.consumed_samples = train_loader_ ? train_loader_->consumed_samples() : 0;
  s.skipped_steps = skipped_total_;
  s.consecutive_skips = consecutive_skips_;
  s.config = to_yaml(config_);
  s.world_size = groups_.world->size();
  s.expert_parallel = groups_.ep_size;
  s.recipe = std::string(fp8::recipe_name(config_.precision.recipe.kind));
  return s;
}

std::string Trainer::save() {
  const std::string path = checkpoint_path(config_.run.dir, step_);
  const SaveStats stats = save_checkpoint(path, *model_, optimizer_.get(), state(), groups_);
  last_save_s_ = stats.seconds;
  saved_step_ = step_;
  if (groups_.world->rank() == 0) {
    const std::vector<std::string> pruned = prune_checkpoints(config_.run.dir, config_.checkpoint.keep_last, step_);
    progress_->message(fmt::format("checkpoint: {} ({:.1f} MB in {:.2f} s{})", path, double(stats.bytes) / 1e6,
                                   stats.seconds,
                                   pruned.empty() ? "" : fmt::format(", {} older removed", pruned.size())));
  }
  return path;
}

void Trainer::load_weights(const std::string& path) {
  LoadOptions o;
  o.optimizer = false;
  const TrainerState s = load_checkpoint(path, *model_, nullptr, o, placement_of(groups_));
  step_ = s.step;
  tokens_seen_ = s.tokens_seen;
}

}  // namespace daedalus::train
