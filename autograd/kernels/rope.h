// Rotary position embedding (RoPE), forward and backward, for MLA's decoupled rope dims.
//
// Frequencies and angles: for a head dim D (even) and base theta,
//   angle(t, j) = positions[t] * theta^(-2j / D),   j in [0, D/2),
// computed in double, with cos and sin rounded to float once (the table). This is more accurate
// than PyTorch references that build the table in fp32 (their angle carries an error of about
// position * 2^-24 rad), so parity tests against them need a tolerance that grows with position.
// No YaRN / NTK frequency scaling here: a caller that needs it scales positions or theta itself.
//
// Each pair (a, b) of elements of a head is rotated by its angle:
//   a' = a cos - b sin,   b' = a sin + b cos        (inverse: the same with -sin)
// The layout says which elements form pair j:
//   interleaved: (x[2j], x[2j+1]) — DeepSeek-V3's reference inference code (torch.view_as_complex
//                on consecutive pairs) and HF transformers' DeepseekV3 with rope_interleave=True;
//                DeepSeek-V3 checkpoints store their rope dims in this order.
//   half:        (x[j], x[j + D/2]) — HF transformers' rotate_half convention (Llama & co).
// The two are related by a fixed permutation P of the last dim, P(x) = [x0, x2, ..., x1, x3, ...]
// (evens, then odds):  rope(P(x), half) == P(rope(x, interleaved)).
//
// Backward: the rotation is orthogonal, so the gradient is the inverse rotation of dy:
//   dx = rope(dy, positions, theta, layout, /*inverse=*/true)
// It uses exactly the transpose of the forward's float cos/sin matrix.
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace daedalus::kernels {

enum class RopeLayout : uint8_t { interleaved, half };

// x [B, T, H, D] fp32|bf16, any strides, D even; positions [T] int32|int64, on the host or on x's
// device; theta > 0 (DeepSeek-V3: 10000) -> y [B, T, H, D] x's dtype, contiguous. inverse rotates
// by -angle. The cos/sin table is built on the host from the positions' values; for a CUDA x it is
// uploaded once per (device, positions, theta, D) and cached (a few tables, least recently used
// dropped), so with host positions a CUDA call neither synchronizes nor copies; CUDA positions
// cost one small device-to-host copy per call.
Tensor rope(const Tensor& x, const Tensor& positions, double theta, RopeLayout layout, bool inverse = false);

}  // namespace daedalus::kernels
