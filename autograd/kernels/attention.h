// Scaled-dot-product attention for MLA, memory-efficient (flash-attention style), forward and
// backward. One head attends over the sequence of its batch entry:
//   S = scale · Q·Kᵀ  [T, T],   P = softmax(S + mask) row-wise,   out = P·V
// with the causal mask hiding key j from query i when j > i (queries and keys share positions
// 0..T-1: self-attention over one sequence; a KV-cache decode with fewer queries than keys is not
// taken here). The qk head dim and the v head dim may differ (DeepSeek-V3 MLA: qk 192 = nope 128 +
// rope 64, v 128).
//
// Neither pass ever holds a [T, T] matrix. The forward walks query blocks of Bq rows and, inside
// each, key blocks of Bk rows up to the causal limit (Bq = Bk = 128, kBlockQ and kBlockK in
// attention.cpp), keeping an online softmax (running max m, running sum l, accumulator O rescaled
// whenever m grows) in fp32; it saves only out and lse = m + log(l) per query row. The backward
// recomputes P = exp(S - lse) block by block. Extra memory per thread: a few Bq x Bk blocks, plus
// Bq x Dv (bf16 dO) and, for bf16 gradients, fp32 accumulators of Bk x (Dqk + Dv); and the
// [B, H, T] row terms of the backward.
//
// Precision: every product accumulates in fp32 (oneDNN GEMMs on blocks). fp32 inputs: everything
// else is fp32 too. bf16 inputs (as FlashAttention-2 on GPUs): Q·Kᵀ reads the bf16 values
// exactly; P, dO and dS are rounded to bf16 to meet the bf16 V, Q, K operands of their GEMMs
// (relative error 2^-8 per element, averaged over the sum), the row statistics stay fp32.
//
// Determinism: each output row block is owned by one thread and accumulated in a fixed order, with
// no atomics; results are bit-identical for any OpenMP thread count.
//
// CUDA twin: autograd/cuda/attention.cu (same contract and rounding points, head dims up to 256,
// deterministic); it agrees with this kernel up to summation order and tile sizes, within the
// tolerances that tests/test_cuda_attention.cpp explains.
#pragma once

#include "autograd/tensor.h"

namespace daedalus::kernels {

struct AttentionOutput {
  Tensor out;  // [B, H, T, Dv] fp32, contiguous
  Tensor lse;  // [B, H, T] fp32: log Σ_j exp(S[i, j]) of the scaled, masked scores of each query row
};

// q [B, H, T, Dqk], k [B, H, T, Dqk], v [B, H, T, Dv]: fp32 or bf16 (all three the same), any
// strides (e.g. [B, T, H, D] tensors transposed to [B, H, T, D] are read in place). scale > 0 is
// usually 1/sqrt(Dqk) (times MLA's YaRN mscale²). causal: the mask above; false attends to all.
// doc_start (optional, causal only): int64 [B, T], non-decreasing along T with
// 0 <= doc_start[b, i] <= i: query i of batch entry b also stops seeing keys before
// doc_start[b, i] — the block-diagonal causal mask of documents packed into one sequence (a
// document's rows share its first position). Key blocks entirely before a query block's first
// visible key are skipped.
AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal = true,
                                  const Tensor& doc_start = Tensor());

struct AttentionGrads {
  Tensor dq;  // [B, H, T, Dqk] in q's dtype, contiguous
  Tensor dk;  // [B, H, T, Dqk] in k's dtype
  Tensor dv;  // [B, H, T, Dv] in v's dtype
};

// q, k, v, scale, causal as given to attention_forward; out [B, H, T, Dv] fp32 and lse [B, H, T]
// fp32 as it returned; dout [B, H, T, Dv] fp32, the gradient of out. Flash-attention backward:
//   D_i = Σ_c dO[i, c] · out[i, c];  per block pair  P = exp(S - lse),  dV += Pᵀ·dO,
//   dP = dO·Vᵀ,  dS = P ∘ (dP - D),  dQ += scale · dS·K,  dK += scale · dSᵀ·Q.
// One pass over key blocks writes dK and dV, a second over query blocks writes dQ (S and dP are
// computed twice: 7 block GEMMs per pair instead of 5, the price of owning every output row
// without atomics). Gradients accumulate in fp32 and are rounded once to a bf16 input's dtype.
AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                  const Tensor& lse, const Tensor& dout, double scale, bool causal = true,
                                  const Tensor& doc_start = Tensor());

}  // namespace daedalus::kernels
