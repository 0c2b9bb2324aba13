// Learning-rate schedules: linear warmup, then constant, cosine or warmup-stable-decay (schedule.h).
#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "autograd/check.h"

namespace daedalus::train {

namespace {

// WSD: the number of decaying steps at the end of the run.
int64_t wsd_decay_steps(double decay_fraction, int64_t total_steps) {
  return std::max<int64_t>(1, std::llround(decay_fraction * double(total_steps)));
}

}  // namespace

void ScheduleConfig::validate(int64_t total_steps) const {
  DAEDALUS_CHECK(total_steps > 0, "train.steps: must be positive, got {}", total_steps);
  DAEDALUS_CHECK(type == "constant" || type == "cosine" || type == "wsd",
                 "schedule.type: expected constant, cosine or wsd, got \"{}\"", type);
  DAEDALUS_CHECK(warmup_steps >= 0, "schedule.warmup_steps: must be >= 0, got {}", warmup_steps);
  DAEDALUS_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1, "schedule.min_lr_ratio: must be in [0, 1], got {}",
                 min_lr_ratio);
  DAEDALUS_CHECK(decay_fraction > 0 && decay_fraction <= 1, "schedule.decay_fraction: must be in (0, 1], got {}",
                 decay_fraction);
  if (type == "wsd" && warmup_steps <= total_steps) {  // longer: clipped (warning()), no decay to overlap
    const int64_t decay = wsd_decay_steps(decay_fraction, total_steps);
    DAEDALUS_CHECK(warmup_steps <= total_steps - decay,
                   "schedule.warmup_steps: {} warmup steps overlap the decay of the last {} steps "
                   "(schedule.decay_fraction = {} of train.steps = {})",
                   warmup_steps, decay, decay_fraction, total_steps);
  }
}

std::string ScheduleConfig::warning(int64_t total_steps) const {
  if (warmup_steps <= total_steps) return "";
  return fmt::format(
      "schedule.warmup_steps: {} warmup steps but train.steps is {}: the schedule is clipped at the end of the run "
      "(the learning rate reaches {:.0f}% of optimizer.lr)",
      warmup_steps, total_steps, 100.0 * double(total_steps) / double(warmup_steps));
}

double learning_rate(const ScheduleConfig& config, double base_lr, int64_t step, int64_t total_steps) {
  DAEDALUS_CHECK(step >= 0, "learning_rate: step must be >= 0, got {}", step);
  DAEDALUS_CHECK(total_steps > 0, "learning_rate: total steps must be positive, got {}", total_steps);
  const int64_t s = std::min(step, total_steps - 1);
  const int64_t warmup = config.warmup_steps;
  if (s < warmup) return base_lr * double(s + 1) / double(warmup);
  const double min_lr = config.min_lr_ratio * base_lr;
  if (config.type == "constant") return base_lr;
  if (config.type == "cosine") {
    const int64_t span = total_steps - 1 - warmup;  // steps from the end of warmup to the last step
    const double progress = span > 0 ? double(s - warmup) / double(span) : 1.0;
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }
  if (config.type == "wsd") {
    const int64_t decay = wsd_decay_steps(config.decay_fraction, total_steps);
    const int64_t start = total_steps - decay;  // first decaying step
    if (s < start) return base_lr;
    return base_lr - (base_lr - min_lr) * double(s - start + 1) / double(decay);
  }
  DAEDALUS_FAIL("schedule.type: expected constant, cosine or wsd, got \"{}\"", config.type);
}

}  // namespace daedalus::train
