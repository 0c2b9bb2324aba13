// Learning-rate schedules against hand-computed values, and the schedule.* validation messages.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "tests/testing.h"
#include "train/schedule.h"

namespace daedalus::train {
namespace {

using testing::expect_error;

ScheduleConfig schedule(const std::string& type, int64_t warmup, double ratio = 0.1, double decay = 0.2) {
  ScheduleConfig c;
  c.type = type;
  c.warmup_steps = warmup;
  c.min_lr_ratio = ratio;
  c.decay_fraction = decay;
  return c;
}

// The formulas are a handful of double operations; 1e-15 relative covers their rounding.
constexpr double kTol = 1e-15;

TEST(Schedule, WarmupIsLinearFromBaseOverWarmupToBase) {
  // warmup 4, base 2: lr·(s+1)/4 = 0.5, 1, 1.5, 2, then constant 2.
  const ScheduleConfig c = schedule("constant", 4);
  const double expected[] = {0.5, 1.0, 1.5, 2.0, 2.0, 2.0};
  for (int64_t s = 0; s < 6; ++s) EXPECT_DOUBLE_EQ(learning_rate(c, 2.0, s, 10), expected[s]) << "step " << s;
}

TEST(Schedule, CosineEndsAtMinAtTheLastStep) {
  // T = 9, no warmup, base 2, min 0.2: lr = 0.2 + 1.8 (1 + cos(π s / 8)) / 2.
  const ScheduleConfig c = schedule("cosine", 0, 0.1);
  EXPECT_NEAR(learning_rate(c, 2.0, 0, 9), 2.0, kTol);
  EXPECT_NEAR(learning_rate(c, 2.0, 2, 9), 0.2 + 0.9 * (1 + std::sqrt(0.5)), kTol);  // cos(π/4) = √½: 1.7364
  EXPECT_NEAR(learning_rate(c, 2.0, 4, 9), 1.1, kTol);                               // halfway
  EXPECT_NEAR(learning_rate(c, 2.0, 8, 9), 0.2, kTol);                               // last step: min
  EXPECT_NEAR(learning_rate(c, 2.0, 50, 9), 0.2, kTol);                              // past the end: last rate
}

TEST(Schedule, CosineStartsAfterWarmup) {
  // T = 12, warmup 2: steps 0, 1 warm up (1, 2); the cosine spans steps 2..11 (9 intervals).
  const ScheduleConfig c = schedule("cosine", 2, 0.0);
  EXPECT_NEAR(learning_rate(c, 2.0, 0, 12), 1.0, kTol);
  EXPECT_NEAR(learning_rate(c, 2.0, 1, 12), 2.0, kTol);
  EXPECT_NEAR(learning_rate(c, 2.0, 2, 12), 2.0, kTol);
  EXPECT_NEAR(learning_rate(c, 2.0, 5, 12), 1.0 + std::cos(std::numbers::pi / 3), kTol);  // (5-2)/9 = 1/3: 1.5
  EXPECT_NEAR(learning_rate(c, 2.0, 11, 12), 0.0, kTol);
}

TEST(Schedule, WsdIsStableThenDecaysLinearlyOverTheLastFraction) {
  // T = 10, decay_fraction 0.3: the last 3 steps (7, 8, 9) decay from 1 to 0.1 in thirds of 0.9.
  const ScheduleConfig c = schedule("wsd", 2, 0.1, 0.3);
  const double expected[] = {0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.4, 0.1};
  for (int64_t s = 0; s < 10; ++s) EXPECT_NEAR(learning_rate(c, 1.0, s, 10), expected[s], kTol) << "step " << s;
  // 0.04 of 10 steps rounds to 0: at least one step decays, the last.
  const ScheduleConfig short_decay = schedule("wsd", 0, 0.1, 0.04);
  EXPECT_NEAR(learning_rate(short_decay, 1.0, 8, 10), 1.0, kTol);
  EXPECT_NEAR(learning_rate(short_decay, 1.0, 9, 10), 0.1, kTol);
}

TEST(Schedule, WarmupOfTheWholeRun) {
  // warmup = T: every step warms up; cosine never starts.
  const ScheduleConfig c = schedule("cosine", 4);
  EXPECT_NEAR(learning_rate(c, 1.0, 3, 4), 1.0, kTol);
  // warmup = T - 1: the only cosine step is the last one, which ends at min.
  const ScheduleConfig d = schedule("cosine", 3, 0.5);
  EXPECT_NEAR(learning_rate(d, 1.0, 2, 4), 1.0, kTol);
  EXPECT_NEAR(learning_rate(d, 1.0, 3, 4), 0.5, kTol);
}

TEST(Schedule, ValidateNamesTheKey) {
  EXPECT_NO_THROW(schedule("wsd", 7, 0.1, 0.3).validate(10));
  expect_error([] { schedule("linear", 0).validate(10); }, {"schedule.type", "constant, cosine or wsd", "linear"});
  // A warmup longer than the run: a warning, the schedule clipped at the end (lr 10/11 of base at step 9).
  EXPECT_NO_THROW(schedule("cosine", 11).validate(10));
  EXPECT_NO_THROW(schedule("wsd", 11).validate(10));
  EXPECT_NE(schedule("cosine", 11).warning(10).find("schedule.warmup_steps: 11 warmup steps but train.steps is 10"),
            std::string::npos);
  EXPECT_EQ(schedule("cosine", 10).warning(10), "");
  EXPECT_NEAR(learning_rate(schedule("cosine", 11), 1.0, 9, 10), 10.0 / 11.0, kTol);
  expect_error([] { schedule("cosine", -1).validate(10); }, {"schedule.warmup_steps", "-1"});
  expect_error([] { schedule("cosine", 0, 1.5).validate(10); }, {"schedule.min_lr_ratio", "[0, 1]", "1.5"});
  expect_error([] { schedule("cosine", 0, -0.1).validate(10); }, {"schedule.min_lr_ratio", "-0.1"});
  expect_error([] { schedule("wsd", 0, 0.1, 0.0).validate(10); }, {"schedule.decay_fraction", "(0, 1]"});
  expect_error([] { schedule("wsd", 0, 0.1, 1.5).validate(10); }, {"schedule.decay_fraction", "1.5"});
  expect_error([] { schedule("wsd", 8, 0.1, 0.3).validate(10); }, {"schedule.warmup_steps", "overlap", "last 3"});
  expect_error([] { schedule("cosine", 0).validate(0); }, {"train.steps", "positive"});
  expect_error([] { learning_rate(schedule("cosine", 0), 1.0, -1, 10); }, {"step", "-1"});
}

}  // namespace
}  // namespace daedalus::train
