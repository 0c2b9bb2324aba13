// RoPE variants of the model: plain RoPE and YaRN (`model.rope_scaling`, HF's rope_scaling /
// rope_parameters map with type yarn), computed as transformers' DeepseekV3 computes them
// (modeling_rope_utils._compute_yarn_parameters, yarn_get_mscale, yarn_apply_mscale).
//
// With d = qk_rope_head_dim, base = rope_theta, s = factor, L = original_max_position_embeddings:
//   extrapolation[j] = base^(-2j/d),  interpolation[j] = extrapolation[j] / s,   j in [0, d/2)
//   corr(r)          = d · ln(L / (2π r)) / (2 ln base)                 (the dim making r rotations in L)
//   low, high        = corr(beta_fast), corr(beta_slow), floored / ceiled when truncate,
//                      clamped to [0, d - 1]; high += 0.001 when low == high
//   ramp[j]          = clamp((j - low) / (high - low), 0, 1)
//   inv_freq[j]      = interpolation[j] · ramp[j] + extrapolation[j] · (1 - ramp[j])
//   mscale(s, m)     = 1 if s <= 1 else 0.1 · m · ln(s) + 1
//   attention factor = attention_factor if given, else mscale(s, mscale) / mscale(s, mscale_all_dim)
//                      when mscale and mscale_all_dim are both nonzero, else mscale(s, 1)
//                      (multiplies cos and sin, i.e. the rotated dims of q and k)
//   softmax scale    = (qk_nope + qk_rope)^-1/2 · mscale(s, mscale_all_dim)^2 when mscale_all_dim != 0
//                      (DeepSeek's correction of every dim's score), else (qk_nope + qk_rope)^-1/2
// beta_fast / beta_slow of 0 mean 32 / 1 (HF's `or` defaults). DeepSeek-V3's release: s = 40,
// L = 4096, beta 32 / 1, mscale = mscale_all_dim = 1: attention factor 1, softmax scale
// (0.1 ln 40 + 1)^2 = 1.8688... times 192^-1/2. Everything is computed in double; the kernel
// rounds the cos/sin table to float once (autograd/kernels/rope.h).
#pragma once

#include <cstdint>
#include <optional>

#include "autograd/kernels/rope.h"

namespace daedalus::model {

struct ModelConfig;

// `model.rope_scaling` when set (null: plain RoPE). Only type yarn exists.
struct RopeScaling {
  double factor = 1.0;                               // s >= 1
  int64_t original_max_position_embeddings = 4096;   // L, the pretraining context
  double beta_fast = 32.0;                           // 0 means 32, as in HF
  double beta_slow = 1.0;                            // 0 means 1
  double mscale = 0.0;                               // 0: not given (HF's absent)
  double mscale_all_dim = 0.0;                       // 0: no softmax-scale correction
  std::optional<double> attention_factor;            // overrides the mscale ratio
  bool truncate = true;                              // floor / ceil the correction range

  // InputError naming `model.rope_scaling.<key>`.
  void validate() const;
};

double yarn_mscale(double factor, double mscale);  // mscale(s, m) above

// The frequencies and cos/sin amplitude of the model's RoPE (plain or YaRN), for qk_rope_head_dim.
kernels::RopeFrequencies rope_frequencies(const ModelConfig& config);

// The attention softmax scale: (qk_nope + qk_rope)^-1/2, times mscale(s, mscale_all_dim)^2 with YaRN.
double attention_softmax_scale(const ModelConfig& config);

}  // namespace daedalus::model
