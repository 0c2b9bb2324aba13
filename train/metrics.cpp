// metrics.jsonl lines and the terminal progress line.
#include "train/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "autograd/check.h"

namespace daedalus::train {

namespace {

// JSON has no NaN or inf: they are written as null (a skipped step's loss may be either).
nlohmann::ordered_json number(double v) { return std::isfinite(v) ? nlohmann::ordered_json(v) : nullptr; }

}  // namespace

double StepMetrics::worst_load() const {
  double worst = 0;
  for (double v : expert_load_max_over_mean) worst = std::max(worst, v);
  return worst;
}

std::string StepMetrics::to_json() const {
  nlohmann::ordered_json j;
  j["step"] = step;
  j["loss"] = number(loss);
  j["lm_loss"] = number(lm_loss);
  if (mtp_loss) j["mtp_loss"] = number(*mtp_loss);
  if (moe_aux_loss) j["moe_aux_loss"] = number(*moe_aux_loss);
  j["lr"] = lr;
  j["grad_norm"] = number(grad_norm);
  j["tokens"] = tokens;
  j["tokens_per_s"] = tokens_per_s;
  j["step_ms"] = step_ms;
  if (gpu_ms) j["gpu_ms"] = *gpu_ms;
  if (host_syncs) j["host_syncs"] = *host_syncs;
  if (grad_sync_ms) j["grad_sync_ms"] = *grad_sync_ms;
  j["mem_bytes"] = mem_bytes;
  j["skipped"] = skipped;
  if (!expert_load_max_over_mean.empty()) {
    j["expert_load_max_over_mean"] = worst_load();
    j["expert_load_max_over_mean_per_layer"] = expert_load_max_over_mean;
  }
  j["model_flops_per_s"] = model_flops_per_s;
  if (mfu) j["mfu"] = *mfu;
  if (dispatch_bytes > 0 || combine_bytes > 0) {
    j["dispatch_bytes"] = dispatch_bytes;
    j["combine_bytes"] = combine_bytes;
    j["backward_all_to_all_bytes"] = backward_all_to_all_bytes;
    j["all_to_all_ms"] = all_to_all_ms;
  }
  if (pipeline_bubble_theory) {
    j["pipeline_bubble"] = pipeline_bubble;
    j["pipeline_bubble_theory"] = *pipeline_bubble_theory;
    j["stage_mem_bytes"] = stage_mem_bytes;
  }
  if (!init_digest.empty()) j["init_digest"] = init_digest;
  if (!batch_digest.empty()) j["batch_digest"] = batch_digest;
  return j.dump();
}

std::string fp8_stats_json(int64_t step, const std::string& module, const std::string& operand,
                           const fp8::QuantStats& s) {
  nlohmann::ordered_json j;
  j["step"] = step;
  j["module"] = module;
  j["operand"] = operand;
  j["count"] = s.count;
  j["nonfinite"] = s.nonfinite;
  j["amax"] = number(s.amax);
  j["underflow_pct"] = number(s.underflow_pct);
  j["saturation_pct"] = number(s.saturation_pct);
  j["scale_inv_min"] = number(s.scale_inv_min);
  j["scale_inv_max"] = number(s.scale_inv_max);
  j["relative_error"] = number(s.relative_error);
  j["dynamic_range"] = number(s.dynamic_range);
  j["format"] = s.format;
  j["granularity"] = s.granularity;
  j["scale_log2_p50"] = number(s.scale_log2_p50);
  j["zero_scale_pct"] = number(s.zero_scale_pct);
  j["tensor_scale_inv"] = number(s.tensor_scale_inv);
  return j.dump();
}

std::string EvalMetrics::to_json() const {
  nlohmann::ordered_json j;
  j["step"] = step;
  j["val_loss"] = number(val_loss);
  j["val_bits_per_token"] = number(val_loss / std::log(2.0));
  j["tokens"] = tokens;
  return j.dump();
}

void drop_lines_after_step(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;  // cut short (or not ours): a reader of the file would choke on it
    if (j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() > step) continue;
    kept += line + "\n";
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  out << kept;
  if (!out.flush()) throw Error(fmt::format("{}: cannot rewrite: {}", path, std::strerror(errno)));
}

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  std::FILE* f = std::fopen(path.c_str(), append ? "a" : "w");
  DAEDALUS_CHECK(f != nullptr, "{}: cannot open for writing: {}", path, std::strerror(errno));
  owner_ = std::shared_ptr<std::FILE>(f, [](std::FILE* p) { std::fclose(p); });
  file_ = f;
}

void MetricsLog::write(const std::string& json_line) {
  if (file_ == nullptr) return;
  // fflush: a killed run keeps every line it logged, and a full disk shows up now, not at exit.
  if (std::fputs(json_line.c_str(), file_) < 0 || std::fputc('\n', file_) == EOF || std::fflush(file_) != 0) {
    const int e = errno;
    std::clearerr(file_);
    throw Error(fmt::format("{}: cannot write a line: {} (the run stops rather than lose its metrics)", path_,
                            std::strerror(e)));
  }
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string format_count(double n) {
  const double a = std::fabs(n);
  if (a >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (a >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (a >= 1e3) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

std::string format_bytes(double bytes) {
  const double a = std::fabs(bytes);
  if (a >= double(int64_t(1) << 40)) return fmt::format("{:.2f} TiB", bytes / double(int64_t(1) << 40));
  if (a >= double(1 << 30)) return fmt::format("{:.2f} GiB", bytes / double(1 << 30));
  if (a >= double(1 << 20)) return fmt::format("{:.2f} MiB", bytes / double(1 << 20));
  if (a >= 1024) return fmt::format("{:.1f} KiB", bytes / 1024);
  return fmt::format("{:.0f} B", bytes);
}

void ProgressLine::message(const std::string& text) {
  if (drawn_) {
    fmt::print(stderr, "\r\033[K");
    drawn_ = false;
  }
  fmt::print("{}\n", text);
  std::fflush(stdout);
}

void ProgressLine::step(const StepMetrics& m, double elapsed_s, int64_t first_step) {
  const int64_t done = m.step - first_step;
  const double eta = done > 0 ? elapsed_s / double(done) * double(total_ - m.step) : NAN;
  if (log_every_ > 0 && (m.step % log_every_ == 0 || m.step == total_ || m.skipped)) {
    std::string line = fmt::format("step {:>{}}/{}  loss {:.4f}  lr {:.3e}  grad_norm {:.3f}  {} tok/s  {:.0f} ms/step",
                                   m.step, std::to_string(total_).size(), total_, m.loss, m.lr, m.grad_norm,
                                   format_count(m.tokens_per_s), m.step_ms);
    if (m.mtp_loss) line += fmt::format("  mtp {:.4f}", *m.mtp_loss);
    if (!m.expert_load_max_over_mean.empty()) line += fmt::format("  load max/mean {:.2f}", m.worst_load());
    if (m.skipped) line += "  SKIPPED (non-finite gradients)";
    message(line);
  }
  if (interactive_) {
    fmt::print(stderr, "\r\033[Kstep {}/{}  loss {:.4f}  {} tok/s  ETA {}", m.step, total_, m.loss,
               format_count(m.tokens_per_s), format_duration(eta));
    std::fflush(stderr);
    drawn_ = true;
  }
}

void ProgressLine::eval(const EvalMetrics& m) {
  message(
      fmt::format("eval step {}: val_loss {:.4f} ({:.3f} bits/token)", m.step, m.val_loss, m.val_loss / std::log(2.0)));
}

void ProgressLine::finish() {
  if (drawn_) {
    fmt::print(stderr, "\r\033[K");
    drawn_ = false;
  }
}

}  // namespace daedalus::train
