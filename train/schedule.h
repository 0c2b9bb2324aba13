// The learning-rate schedule (config section `schedule:`): the rate of each optimizer step as a
// multiple of optimizer.lr.
//
// With base = optimizer.lr, T = train.steps, W = warmup_steps, min = min_lr_ratio · base and
// step s = 0, 1, ..., T − 1 (0-based optimizer steps; steps past the end keep the last step's rate):
//   warmup   s < W: base · (s + 1) / W — linear from base/W at step 0 to base at step W − 1
//   constant base
//   cosine   min + (base − min) · (1 + cos(π · (s − W) / (T − 1 − W))) / 2: base right after the
//            warmup, min at the last step T − 1
//   wsd      warmup-stable-decay: base until the last D = round(decay_fraction · T) steps (at least
//            1), then linear: base − (base − min) · (s − (T − D) + 1) / D, reaching min at step T − 1
#pragma once

#include <cstdint>
#include <string>

namespace daedalus::train {

struct ScheduleConfig {
  std::string type = "cosine";  // constant | cosine | wsd
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;    // cosine and wsd end at min_lr_ratio · optimizer.lr
  double decay_fraction = 0.2;  // wsd: the fraction of train.steps that decays
  // InputError naming `schedule.<key>`: unknown type, a negative warmup (or, for wsd, one
  // overlapping the decay), ratio outside [0, 1], decay_fraction outside (0, 1].
  void validate(int64_t total_steps) const;
  // A warmup longer than the run is not an error (a quick `--set train.steps=3` of a long config):
  // the schedule runs as configured and the run ends inside the warmup. The line saying so, or "".
  std::string warning(int64_t total_steps) const;
};

// The rate of 0-based optimizer step `step` of a `total_steps`-step run (formulas above).
double learning_rate(const ScheduleConfig& config, double base_lr, int64_t step, int64_t total_steps);

}  // namespace daedalus::train
