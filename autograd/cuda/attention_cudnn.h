// cuDNN's fused flash attention for kernels/attention.h's contract, through the cuDNN frontend's
// SDPA graphs (the graph API TransformerEngine's fused attention uses): forward with softmax stats
// for training, backward with the deterministic algorithm, causal (top-left: queries and keys share
// positions 0..T-1) or full, BF16 operands, fp32 softmax and statistics. Built only when CMake finds
// cuDNN 9 and its frontend (DAEDALUS_CUDNN); callers go through kernels/attention_backend.h, which
// decides when it runs. **Unverified on a GPU** (docs/gpu.md, "cuDNN attention").
//
// Loading: libcudnn is not linked. The first call dlopens the library CMake found (its absolute
// path), else libcudnn.so.9 from the loader's path, and the frontend (built in its dynamic-loading
// mode) resolves every cuDNN entry point on that handle; cuDNN 9 is required.
//
// Layouts: q, k, v [B, H, T, D] bf16 are passed with their own strides when the head dim is unit
// stride and every stride and base pointer is 16-byte aligned (MLA's transposed [B, T, H, D]
// projections are read in place), else as contiguous copies. cuDNN writes O as bf16 [B, H, T, Dv];
// `out` (fp32, the contract) is its exact widening, and the backward narrows it back exactly.
// Stats are cuDNN's per-row log-sum-exp of the scaled, masked scores, in natural log: the
// contract's lse, which the kernel's backward also accepts.
//
// Graphs are built once per (device, shape, strides, scale, causal, pass) and cached for the
// process, with their workspace size; a shape cuDNN turns down is remembered too (one message).
#pragma once

#include <string>

#include "autograd/tensor.h"

namespace daedalus::cuda {

// "" once libcudnn.so.9 is loaded (the first call tries, once per process), else why not.
std::string cudnn_load_error();
// The loaded cuDNN's version (major·10000 + minor·100 + patch); 0 when not loaded.
int cudnn_version();

// kernels/attention_backend.h's cudnn_attention_validate: the frontend's checks of both graphs
// for a target architecture (sm_version 90: Hopper), no device needed.
std::string cudnn_attention_validate(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                                     int sm_version);

// kernels/attention_backend.h's cudnn_attention_forward / _backward, for CUDA bf16 operands whose
// shapes attention_forward / attention_backward checked: false (nothing written) when cuDNN
// cannot build the graph for this problem.
bool cudnn_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             double scale, bool causal);
bool cudnn_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, double scale,
                              bool causal);

}  // namespace daedalus::cuda
