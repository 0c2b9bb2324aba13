// Differentiable scaled-dot-product attention (MLA's core), on the flash-attention kernels of
// autograd/kernels/attention.h: no [T, T] matrix is kept, in the forward or for the backward.
#pragma once

#include "autograd/tape.h"

namespace daedalus::ops {

// q [B, H, T, Dqk], k [B, H, T, Dqk], v [B, H, T, Dv] (fp32 or bf16, all the same; any strides,
// e.g. [B, T, H, D] projections transposed to [B, H, T, D]) -> out [B, H, T, Dv] fp32:
//   out = softmax(scale · Q·Kᵀ + mask) · V  per (batch, head),
// the causal mask hiding key j from query i when j > i; causal = false attends to every key.
// doc_start (optional) int64 [B, T], any device: query i of batch entry b sees keys from
// doc_start[b, i] on only — documents packed into one sequence do not attend to each other
// (kernels/attention.h; not differentiable).
// Saves q, k, v, out and the per-row logsumexp lse [B, H, T] (not the probabilities); backward
// recomputes P block by block. Gradients come back in each input's dtype.
// Under a SavedTensorHook, lse goes through the hook too: it must come back exactly (a lossy
// packing of lse scales every recomputed probability by e^error).
Var attention(const Var& q, const Var& k, const Var& v, double scale, bool causal = true,
              const Tensor& doc_start = Tensor());

}  // namespace daedalus::ops
