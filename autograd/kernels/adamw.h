// The raw kernels of the AdamW optimizer (train/optimizer.h owns the rule and the state): one
// in-place update of a parameter and its moments, and the sums of squares of the global gradient
// norm. CPU here, CUDA twin in autograd/cuda/adamw.cu; both compute in double with every
// operation rounded separately (no fused multiply-add), so the two give the same bits.
#pragma once

#include <vector>

#include "autograd/tensor.h"

namespace daedalus::kernels {

// The constants of one step, shared by every element of every parameter (decay per parameter).
struct AdamwConstants {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double step_size = 0;   // lr / (1 - beta1^t)
  double bc2_sqrt = 1;    // sqrt(1 - beta2^t)
  double grad_scale = 1;  // clipping factor, 1 = none
  double decay = 0;       // lr * weight_decay of this parameter (0 for none)
};

// One AdamW step in place, per element i (double arithmetic, one rounding per stored value):
//   g_i <- fp32(g_i * grad_scale)                       (only when grad_scale != 1)
//   m_i <- S(beta1 * m_i + (1 - beta1) * g_i)           S = m's dtype, nearest even
//   v_i <- S(beta2 * v_i + (1 - beta2) * g_i^2)
//   w_i <- fp32(w_i * (1 - decay) - step_size * m_i / (sqrt(v_i) / bc2_sqrt + eps))
// w, g fp32; m, v both fp32 or both bf16; all contiguous, of one element count, on one device.
void adamw_step(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v, const AdamwConstants& c);

// xs: fp32 tensors, contiguous, on one device -> the sum of the squares of each one's elements, in
// double, as host values (one device-to-host copy for all of them on CUDA). Order: blocks of 8192
// elements, the block sums added in block order (CPU: each block summed in index order; CUDA: a
// fixed tree per block), so the bits depend on the shape alone, never on threads or timing.
std::vector<double> sum_squares(const std::vector<Tensor>& xs);

}  // namespace daedalus::kernels
