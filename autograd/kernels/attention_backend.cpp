// The attention backend choice (kernels/attention_backend.h). The only file besides the cuDNN source
// that knows whether cuDNN is built in (CMake sets DAEDALUS_WITH_CUDNN on this file alone).
#include "autograd/kernels/attention_backend.h"

#include <cstdlib>

#include "autograd/check.h"

#if DAEDALUS_WITH_CUDNN
#include "autograd/cuda/attention_cudnn.h"
#endif

namespace daedalus::kernels {

namespace {
constexpr const char* kBuiltWithout =
    "this build has no cuDNN attention (CMake found no cuDNN 9 and cuDNN frontend: run scripts/setup where nvcc is, "
    "or configure with -DCUDNN_ROOT=..., and see docs/gpu.md)";
// cuDNN's bf16 flash attention on Hopper: head dims multiples of 8, at most 256.
constexpr int64_t kCudnnMaxHeadDim = 256, kCudnnHeadDimMultiple = 8;
}  // namespace

AttentionBackend parse_attention_backend(const char* value) {
  const std::string v = value == nullptr ? "" : value;
  if (v.empty() || v == "kernel") return AttentionBackend::kernel;
  if (v == "cudnn") return AttentionBackend::cudnn;
  DAEDALUS_FAIL(
      "DAEDALUS_ATTENTION={}: expected \"kernel\" (autograd/cuda/attention.cu, the default) or \"cudnn\" (cuDNN's "
      "fused flash attention for the bf16 calls it can take, docs/gpu.md)",
      v);
}

AttentionBackend attention_backend() {
  static const AttentionBackend backend = parse_attention_backend(std::getenv("DAEDALUS_ATTENTION"));
  return backend;
}

bool cudnn_attention_built() { return DAEDALUS_WITH_CUDNN; }

std::string cudnn_attention_unsupported(const Tensor& q, const Tensor& v, const Tensor& doc_start) {
  if (q.dtype() != DType::bf16)
    return fmt::format("{} inputs (cuDNN's flash attention takes bf16; the fp32 recipe's attention stays fp32)",
                       dtype_name(q.dtype()));
  if (doc_start.defined()) return "a document mask (doc_start) is not a cuDNN mask";
  if (q.size(2) == 1) return "T = 1 (cuDNN's SDPA backward does not take s_q = s_kv = 1)";
  for (const int64_t d : {q.size(3), v.size(3)})
    if (d % kCudnnHeadDimMultiple != 0 || d > kCudnnMaxHeadDim)
      return fmt::format("head dims {} (qk) and {} (v): cuDNN takes multiples of {} up to {}", q.size(3), v.size(3),
                         kCudnnHeadDimMultiple, kCudnnMaxHeadDim);
  return "";
}

bool use_cudnn_attention(const Tensor& q, const Tensor& v, const Tensor& doc_start, AttentionBackend backend) {
  if (backend != AttentionBackend::cudnn) return false;
  if (!cudnn_attention_built()) DAEDALUS_FAIL("DAEDALUS_ATTENTION=cudnn: {}", kBuiltWithout);
  if (const std::string why = cudnn_load_error(); !why.empty()) throw Error("DAEDALUS_ATTENTION=cudnn: " + why);
  return cudnn_attention_unsupported(q, v, doc_start).empty();
}

#if DAEDALUS_WITH_CUDNN

bool cudnn_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             double scale, bool causal) {
  return cuda::cudnn_attention_forward(q, k, v, out, lse, scale, causal);
}

bool cudnn_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, double scale,
                              bool causal) {
  return cuda::cudnn_attention_backward(q, k, v, out, lse, dout, dq, dk, dv, scale, causal);
}

std::string cudnn_attention_validate(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                                     int sm_version) {
  return cuda::cudnn_attention_validate(q, k, v, scale, causal, sm_version);
}

std::string cudnn_load_error() { return cuda::cudnn_load_error(); }

int cudnn_runtime_version() { return cuda::cudnn_version(); }

#else

bool cudnn_attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, bool) {
  DAEDALUS_FAIL("cuDNN attention: {}", kBuiltWithout);
}

bool cudnn_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, const Tensor&, const Tensor&, double, bool) {
  DAEDALUS_FAIL("cuDNN attention: {}", kBuiltWithout);
}

std::string cudnn_attention_validate(const Tensor&, const Tensor&, const Tensor&, double, bool, int) {
  DAEDALUS_FAIL("cuDNN attention: {}", kBuiltWithout);
}

std::string cudnn_load_error() { return kBuiltWithout; }

int cudnn_runtime_version() { return 0; }

#endif

}  // namespace daedalus::kernels
