// CUDA twin of autograd/kernels/adamw.h (called only through its dispatcher). Declared apart from
// kernels.h so that the optimizer's kernels do not rebuild every other kernel when they change.
#pragma once

#include <vector>

#include "autograd/kernels/adamw.h"

namespace daedalus::cuda {

// w, g fp32; m, v both fp32 or both bf16; all contiguous [n], n >= 1, on one device.
void adamw_step(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v, const kernels::AdamwConstants& c);
// xs fp32 contiguous on one device -> out: one host double per tensor (0 for an empty one).
void sum_squares(const std::vector<Tensor>& xs, std::vector<double>& out);

}  // namespace daedalus::cuda
