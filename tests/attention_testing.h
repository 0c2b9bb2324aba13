// Shared by the GPU attention tests (test_cuda_attention.cpp: the CUDA kernels; and
// test_cuda_attention_cudnn.cpp: cuDNN's fused attention), both against the CPU attention: a
// problem, its operands on both devices, a magnitude for tolerances.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "tests/testing.h"

namespace daedalus::testing::attn {

// q, k [B, H, T, Dqk], v [B, H, T, Dv]; the usual 1/sqrt(Dqk) scale.
struct Case {
  int64_t B = 2, H = 3, T = 7, Dqk = 48, Dv = 32;
  bool causal = true;
  double scale() const { return 1.0 / std::sqrt(double(Dqk)); }
  std::string str() const {
    return "B=" + std::to_string(B) + " H=" + std::to_string(H) + " T=" + std::to_string(T) +
           " Dqk=" + std::to_string(Dqk) + " Dv=" + std::to_string(Dv) + (causal ? " causal" : " full");
  }
};

// One [B, H, T, D] operand on both devices: the same values, in the same layout. transposed:
// stored as [B, T, H, D] (a projection's output) and viewed through a transpose, as MLA passes it.
struct Pair {
  Tensor cpu, gpu;
};

inline Pair heads(const Case& c, int64_t D, uint64_t seed, DType dtype, bool transposed, double std = 1.0) {
  if (transposed) {
    const Tensor x = random_tensor({c.B, c.T, c.H, D}, seed, dtype, std);
    return {x.transpose(1, 2), x.to(Device::cuda(0)).transpose(1, 2)};
  }
  const Tensor x = random_tensor({c.B, c.H, c.T, D}, seed, dtype, std);
  return {x, x.to(Device::cuda(0))};
}

struct Inputs {
  Pair q, k, v;
};

inline Inputs inputs_for(const Case& c, DType dtype, bool transposed, uint64_t seed) {
  // std 1.5 for q and k: scores of std ~2, peaked rows, so the running max moves between tiles.
  return {heads(c, c.Dqk, seed, dtype, transposed, 1.5), heads(c, c.Dqk, seed + 1, dtype, transposed, 1.5),
          heads(c, c.Dv, seed + 2, dtype, transposed)};
}

inline double max_abs(const Tensor& t) {
  double m = 0;
  for (double x : t.to_doubles()) m = std::max(m, std::fabs(x));
  return m;
}

}  // namespace daedalus::testing::attn
