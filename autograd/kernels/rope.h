// Rotary position embedding (RoPE), forward and backward, for MLA's decoupled rope dims.
//
// Frequencies and angles: for a head dim D (even), frequencies inv_freq[j] and an amplitude m,
//   angle(t, j) = positions[t] * inv_freq[j],   j in [0, D/2),
//   table: m * cos(angle), m * sin(angle)
// computed in double, rounded to float once (the table). Plain RoPE (RopeFrequencies::standard) is
// inv_freq[j] = theta^(-2j / D), m = 1; YaRN (model/rope_scaling.h computes it) blends two
// frequency sets and scales the amplitude by its attention factor. Computing the angle in double
// is more accurate than PyTorch references that build the table in fp32 (their angle carries an
// error of about position * 2^-24 rad), so parity tests against them need a tolerance that grows
// with position.
//
// Each pair (a, b) of elements of a head is rotated by its angle (and scaled by m):
//   a' = m (a cos - b sin),   b' = m (a sin + b cos)   (inverse: the same with -sin; with m != 1 it
//                                                       is the transpose, m^2 times the inverse)
// The layout says which elements form pair j:
//   interleaved: (x[2j], x[2j+1]) — DeepSeek-V3's reference inference code (torch.view_as_complex
//                on consecutive pairs) and HF transformers' DeepseekV3 with rope_interleave=True;
//                DeepSeek-V3 checkpoints store their rope dims in this order.
//   half:        (x[j], x[j + D/2]) — HF transformers' rotate_half convention (Llama & co).
// The two are related by a fixed permutation P of the last dim, P(x) = [x0, x2, ..., x1, x3, ...]
// (evens, then odds):  rope(P(x), half) == P(rope(x, interleaved)).
//
// Backward: the map is m times a rotation, so the gradient is its transpose applied to dy:
//   dx = rope(dy, positions, freqs, layout, /*inverse=*/true)
// It uses exactly the transpose of the forward's float cos/sin matrix.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/tensor.h"

namespace daedalus::kernels {

enum class RopeLayout : uint8_t { interleaved, half };

// The frequencies [D/2] and the amplitude m of the table (see above).
struct RopeFrequencies {
  std::vector<double> inv_freq;   // [D/2], finite and >= 0
  double attention_factor = 1.0;  // m: YaRN's cos/sin scale; 1 for plain RoPE

  // Plain RoPE: inv_freq[j] = theta^(-2j / dim), m = 1. InputError unless theta is finite and > 0
  // and dim is even and >= 0.
  static RopeFrequencies standard(double theta, int64_t dim);
};

// x [B, T, H, D] fp32|bf16, any strides, D even; positions [T] int32|int64, on the host or on x's
// device; freqs.inv_freq of size D/2 -> y [B, T, H, D] x's dtype, contiguous. inverse rotates by
// -angle. The cos/sin table is built on the host from the positions' values; for a CUDA x it is
// uploaded once per (device, positions, frequencies) and cached (a few tables, least recently used
// dropped), so with host positions a CUDA call neither synchronizes nor copies; CUDA positions
// cost one small device-to-host copy per call.
Tensor rope(const Tensor& x, const Tensor& positions, const RopeFrequencies& freqs, RopeLayout layout,
            bool inverse = false);
// Plain RoPE, theta > 0 (DeepSeek-V3: 10000): rope(x, positions, RopeFrequencies::standard(theta, D), ...).
Tensor rope(const Tensor& x, const Tensor& positions, double theta, RopeLayout layout, bool inverse = false);

}  // namespace daedalus::kernels
