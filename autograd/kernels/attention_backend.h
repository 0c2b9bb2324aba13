// Which implementation runs a CUDA attention call: the kernels of autograd/cuda/attention.cu (the
// default) or cuDNN's fused flash attention (autograd/cuda/attention_cudnn.h: the cuDNN frontend's
// SDPA graphs on tensor cores, as TransformerEngine runs attention), and the rule that decides.
//
// DAEDALUS_ATTENTION, read once per process at the first CUDA attention call:
//   unset, "" or "kernel" -> AttentionBackend::kernel: always autograd/cuda/attention.cu.
//   "cudnn" -> AttentionBackend::cudnn: every call cuDNN can take exactly runs on cuDNN, the
//              others on the kernel (cudnn_attention_unsupported says which and why). A build
//              without cuDNN, or a machine where libcudnn.so.9 cannot be loaded, is an error at
//              the first CUDA attention call rather than a silent switch back to the kernel.
//   anything else -> InputError naming the variable and its values (exit 1).
// The default stays the kernel until the cuDNN path has run on a GPU (docs/gpu.md, "cuDNN
// attention"); CPU tensors always take the CPU kernel.
#pragma once

#include <string>

#include "autograd/tensor.h"

namespace daedalus::kernels {

enum class AttentionBackend { kernel, cudnn };

AttentionBackend parse_attention_backend(const char* value);  // the parser (nullptr = unset)
AttentionBackend attention_backend();                         // DAEDALUS_ATTENTION, parsed once

// Whether this build has the cuDNN path (CMake's DAEDALUS_CUDNN found cuDNN 9 and its frontend).
bool cudnn_attention_built();

// Why cuDNN cannot run this attention exactly as the contract of kernels/attention.h says, or ""
// when it can. q [B, H, T, Dqk], v [B, H, T, Dv] as attention_forward takes them (checked there):
//   - fp32 inputs: cuDNN's flash attention takes fp16/bf16 operands only, and the fp32 recipe's
//     attention is fp32 throughout (docs/precision.md); those calls stay on the kernel.
//   - a document mask (doc_start): a per-query first visible key is neither cuDNN's causal mask
//     nor its padding mask (cuDNN's ragged offsets could take packed documents as separate
//     sequences; not done: docs/gpu.md).
//   - T = 1: the frontend's SDPA backward turns s_q = s_kv = 1 down (found by validating the
//     graphs, CudnnAttentionGraphs.*), and a forward on cuDNN with its backward on the kernel
//     would only mix implementations for no gain at a one-token sequence.
//   - head dims not multiples of 8 or above 256 (the cuDNN SDPA support surface for bf16 on
//     Hopper; 192/128, DeepSeek-V3's MLA, is inside it).
// Anything else (shape and version limits of the installed cuDNN) is found when the graph is built:
// cudnn_attention_forward / _backward then return false and the kernel runs.
std::string cudnn_attention_unsupported(const Tensor& q, const Tensor& v, const Tensor& doc_start);

// Whether a CUDA attention call goes to cuDNN: backend() is cudnn and the problem is supported.
// With the cudnn backend, a build without cuDNN is an InputError and a libcudnn that does not load
// is an Error (exit 2), both naming DAEDALUS_ATTENTION. Never true for the kernel backend.
bool use_cudnn_attention(const Tensor& q, const Tensor& v, const Tensor& doc_start,
                         AttentionBackend backend = attention_backend());

// The cuDNN path itself (kernels/attention.h's contract; q, k, v bf16 CUDA tensors that
// cudnn_attention_unsupported accepts): out [B, H, T, Dv] fp32 and lse [B, H, T] fp32 are
// written, grads as attention_backward's. They return false, writing nothing, when cuDNN turns the
// graph down for this shape (the reason is printed once per shape on stderr); a library that does
// not load or a failure while running throws. In a build without cuDNN they throw.
bool cudnn_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             double scale, bool causal);
bool cudnn_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, double scale,
                              bool causal);

// Builds the forward and backward graphs of this problem (q, k, v of any device: only shapes and
// strides are read) for the architecture sm_version (90: Hopper) and runs the cuDNN frontend's
// validation on them — the graph's shapes, layouts and dtypes, and cuDNN's SDPA support surface
// for that architecture and the loaded cuDNN version — without a device. "" when both pass, else
// the frontend's reason. Lowering and planning (cuDNN's heuristics) need a device and are not run.
std::string cudnn_attention_validate(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                                     int sm_version = 90);

// "" when libcudnn.so.9 loaded (the first call tries), else why not; and the loaded cuDNN's
// version (e.g. 92700 for 9.27.0; 0 when not loaded). Without cuDNN in the build: a reason, 0.
std::string cudnn_load_error();
int cudnn_runtime_version();

}  // namespace daedalus::kernels
