// Differentiable rotary position embedding (MLA's decoupled rope dims), through kernels::rope.
// The map is a rotation times the attention factor m, so backward is its transpose applied to the
// output gradient (kernels::rope with inverse): nothing is saved but the positions.
#pragma once

#include "autograd/kernels/rope.h"
#include "autograd/tape.h"

namespace daedalus::ops {

// x [B, T, H, D] fp32|bf16 (any strides, D even), positions [T] int32|int64 (not differentiable),
// theta > 0 (DeepSeek-V3: 10000) -> y [B, T, H, D], x's dtype. Layouts: see kernels/rope.h.
Var rope(const Var& x, const Tensor& positions, double theta, kernels::RopeLayout layout);
// The same with explicit frequencies (YaRN: model/rope_scaling.h); freqs.inv_freq has D/2 entries.
Var rope(const Var& x, const Tensor& positions, const kernels::RopeFrequencies& freqs, kernels::RopeLayout layout);

}  // namespace daedalus::ops
