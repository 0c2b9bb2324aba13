// RMSNorm over the last dimension (DeepSeek-V3's pre-attention, pre-FFN, final and latent norms),
// forward and backward. x and dy are fp32|bf16 with any strides; weight is fp32|bf16 independently
// of x (an fp32 master weight may scale bf16 activations). Math in float, row reductions in double,
// one rounding on store. Outputs are new contiguous tensors.
#pragma once

#include "autograd/tensor.h"

namespace daedalus::kernels {

struct RmsNormOutput {
  Tensor y;     // [..., D], x's dtype
  Tensor rstd;  // fp32 [rows], rows = numel(x) / D: what backward needs besides x and weight
};

// x [..., D] fp32|bf16, weight [D] fp32|bf16, eps > 0 (DeepSeek-V3: 1e-6):
//   rstd[r] = 1 / sqrt(mean_d x[r, d]^2 + eps)   (computed in double, stored fp32)
//   y[r, d] = x[r, d] * rstd[r] * weight[d]      (with the stored fp32 rstd)
RmsNormOutput rmsnorm(const Tensor& x, const Tensor& weight, double eps);

struct RmsNormGrads {
  Tensor dx;       // [..., D], x's dtype
  Tensor dweight;  // fp32 [D], summed over all rows
};

// dy [..., D] (x's shape and dtype), x [..., D], weight [D], rstd fp32 [rows] from rmsnorm():
//   dx[r, d]   = rstd[r] * weight[d] * dy[r, d] - x[r, d] * rstd[r]^3 / D * sum_k dy[r, k] weight[k] x[r, k]
//   dweight[d] = sum_r dy[r, d] * x[r, d] * rstd[r]
// dweight is deterministic and independent of the thread count: rows are split into a fixed
// number of blocks, each block sums its rows in order (in double), and the block partials are
// added in block order. No atomics.
RmsNormGrads rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd);

}  // namespace daedalus::kernels
