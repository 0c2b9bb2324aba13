// YaRN frequencies, cos/sin amplitude and softmax scale (formulas in rope_scaling.h).
#include "model/rope_scaling.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "autograd/check.h"
#include "model/config.h"

namespace daedalus::model {

void RopeScaling::validate() const {
  DAEDALUS_CHECK(std::isfinite(factor) && factor >= 1.0, "model.rope_scaling.factor: must be a number >= 1, got {}",
                 factor);
  DAEDALUS_CHECK(original_max_position_embeddings > 0,
                 "model.rope_scaling.original_max_position_embeddings: must be positive, got {}",
                 original_max_position_embeddings);
  for (const auto& [key, v] : {std::pair<const char*, double>{"beta_fast", beta_fast},
                               {"beta_slow", beta_slow},
                               {"mscale", mscale},
                               {"mscale_all_dim", mscale_all_dim}})
    DAEDALUS_CHECK(std::isfinite(v) && v >= 0, "model.rope_scaling.{}: must be a number >= 0, got {}", key, v);
  const double fast = beta_fast != 0 ? beta_fast : 32.0, slow = beta_slow != 0 ? beta_slow : 1.0;
  DAEDALUS_CHECK(fast >= slow, "model.rope_scaling.beta_fast: {} is below model.rope_scaling.beta_slow = {}", fast,
                 slow);
  DAEDALUS_CHECK(!attention_factor || (std::isfinite(*attention_factor) && *attention_factor > 0),
                 "model.rope_scaling.attention_factor: must be positive or null, got {}", attention_factor.value_or(0));
}

double yarn_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

kernels::RopeFrequencies rope_frequencies(const ModelConfig& c) {
  const int64_t d = c.qk_rope_head_dim;
  kernels::RopeFrequencies f = kernels::RopeFrequencies::standard(c.rope_theta, d);
  if (!c.rope_scaling) return f;
  const RopeScaling& y = *c.rope_scaling;
  const double base = c.rope_theta, s = y.factor, dd = double(d);
  const auto correction_dim = [&](double rotations) {
    return dd * std::log(double(y.original_max_position_embeddings) / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(base));
  };
  double low = correction_dim(y.beta_fast != 0 ? y.beta_fast : 32.0);
  double high = correction_dim(y.beta_slow != 0 ? y.beta_slow : 1.0);
  if (y.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, dd - 1);
  if (low == high) high += 0.001;  // HF: "prevent singularity"
  for (int64_t j = 0; j < d / 2; ++j) {
    const double extrapolation = f.inv_freq[size_t(j)], interpolation = extrapolation / s;
    const double ramp = std::clamp((double(j) - low) / (high - low), 0.0, 1.0);
    f.inv_freq[size_t(j)] = interpolation * ramp + extrapolation * (1 - ramp);
  }
  if (y.attention_factor) {
    f.attention_factor = *y.attention_factor;
  } else if (y.mscale != 0 && y.mscale_all_dim != 0) {
    f.attention_factor = yarn_mscale(s, y.mscale) / yarn_mscale(s, y.mscale_all_dim);
  } else {
    f.attention_factor = yarn_mscale(s, 1.0);
  }
  return f;
}

double attention_softmax_scale(const ModelConfig& c) {
  double scale = 1.0 / std::sqrt(double(c.qk_head_dim()));
  if (c.rope_scaling && c.rope_scaling->mscale_all_dim != 0) {
    const double m = yarn_mscale(c.rope_scaling->factor, c.rope_scaling->mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

}  // namespace daedalus::model
