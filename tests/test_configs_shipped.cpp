// Every config in configs/ loads and validates, builds (when small enough) the model it
// describes, and reports the parameter counts its header comment states.
#include <gtest/gtest.h>

#include <filesystem>

#include "model/causal_lm.h"
#include "model/param_count.h"
#include "train/config.h"

namespace daedalus::train {
namespace {

const std::filesystem::path kConfigs = std::filesystem::path(__FILE__).parent_path().parent_path() / "configs";

TEST(ShippedConfigs, EveryConfigLoadsAndValidates) {
  int n = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(kConfigs)) {
    if (entry.path().extension() != ".yaml") continue;
    if (entry.path().parent_path().filename() == "hardware") continue;  // hardware tables: tests/test_plan.cpp
    SCOPED_TRACE(entry.path().string());
    const RunConfig c = load_config(entry.path().string());
    EXPECT_NO_THROW(c.model.validate());
    ++n;
  }
  EXPECT_GE(n, 3);
}

TEST(ShippedConfigs, ParameterCountsMatchTheirHeaders) {
  const auto counts = [](const char* name) {
    return model::count_parameters(load_config((kConfigs / name).string()).model);
  };
  // tiny.yaml: what `scripts/train` prints in its banner.
  const model::ParameterCounts tiny = counts("tiny.yaml");
  EXPECT_NEAR(double(tiny.total), 1.09e6, 0.01e6);
  // small.yaml's header: ~60M total, ~20M activated.
  const model::ParameterCounts small = counts("small.yaml");
  EXPECT_NEAR(double(small.total), 60e6, 6e6) << small.total;
  EXPECT_NEAR(double(small.activated), 20e6, 4e6) << small.activated;
  // deepseek-v3.yaml: DeepSeek's 671B total (test_model_lm.cpp pins the exact figures).
  EXPECT_NEAR(double(counts("deepseek-v3.yaml").total), 671e9, 0.005 * 671e9);
}

TEST(ShippedConfigs, TinyBuildsTheModelItDescribes) {
  const RunConfig c = load_config((kConfigs / "tiny.yaml").string());
  model::LmOptions o;
  o.config = c.model;
  const model::CausalLM lm(o);
  const model::ParameterCounts p = model::count_parameters(c.model);
  EXPECT_EQ(lm.parameters().numel(), p.total + p.mtp_trained);
}

}  // namespace
}  // namespace daedalus::train
