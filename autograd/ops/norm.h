// Differentiable RMSNorm over the last dimension (DeepSeek-V3's pre-attention, pre-FFN, final and
// MLA latent norms), through kernels::rmsnorm / rmsnorm_backward.
#pragma once

#include "autograd/tape.h"

namespace daedalus::ops {

// x [..., D] fp32|bf16, weight [D] fp32|bf16 (independently: an fp32 master weight may scale bf16
// activations), eps >= 0 (DeepSeek-V3: 1e-6) -> y [..., D], x's dtype:
//   y = x / sqrt(mean_d x^2 + eps) * weight.
// Saves x, weight and the fp32 per-row rstd [rows]. dx comes back in x's dtype, dweight in
// weight's dtype (summed over all rows in double by the kernel, then rounded once).
Var rms_norm(const Var& x, const Var& weight, double eps);

}  // namespace daedalus::ops
