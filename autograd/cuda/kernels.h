// CUDA twins of the CPU kernels: same operands, same contract (see the matching autograd/kernels/
// header for shapes and semantics). Called only through the dispatchers in autograd/kernels/.
#pragma once

#include <string_view>
#include <vector>

#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/grouped_gemm.h"
#include "autograd/kernels/moe_routing_core.h"
#include "autograd/kernels/reduce.h"
#include "autograd/kernels/rope.h"
#include "autograd/tensor.h"

namespace daedalus::cuda {

// copy.cu
void copy(const Tensor& dst, const Tensor& src, Fp8Overflow overflow);
void fill(const Tensor& dst, double value);

// elementwise.cu (operands already expanded to the output shape)
void binary(kernels::BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b);
void unary(kernels::UnaryOp op, const Tensor& out, const Tensor& x);
void affine(const Tensor& out, const Tensor& x, float alpha, float beta);
void add_(const Tensor& dst, const Tensor& src, float alpha);

// ---- rmsnorm.cu, rope.cu, softmax.cu, activation.cu, cross_entropy.cu ------------------------
// Same arguments as the CPU kernels of the matching autograd/kernels/*.cpp: the dispatchers pass
// contiguous operands (activation: any strides) and preallocated contiguous outputs.

// rmsnorm.cu: x, y [rows, dim]; weight fp32 [dim]; rstd fp32 [rows]; dweight fp32 [dim].
void rmsnorm(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& weight, double eps, int64_t rows,
             int64_t dim);
void rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dy, const Tensor& x, const Tensor& weight,
                      const Tensor& rstd, int64_t rows, int64_t dim);

// rope.cu: x, y [B, T, H, D]; cos_sin fp32 [2 * T * D/2] on the device (cos table, then sin table).
void rope(const Tensor& y, const Tensor& x, const Tensor& cos_sin, int64_t seq, int64_t heads, int64_t dim,
          kernels::RopeLayout layout, bool inverse);

// softmax.cu: every operand [rows, cols].
void softmax(const Tensor& y, const Tensor& x, int64_t rows, int64_t cols);
void log_softmax(const Tensor& y, const Tensor& x, int64_t rows, int64_t cols);
void softmax_backward(const Tensor& dx, const Tensor& y, const Tensor& dy, int64_t rows, int64_t cols);
void log_softmax_backward(const Tensor& dx, const Tensor& y, const Tensor& dy, int64_t rows, int64_t cols);

// activation.cu: outputs contiguous, inputs of the same shape with any strides.
void silu_backward(const Tensor& dx, const Tensor& x, const Tensor& dy);
void sigmoid_backward(const Tensor& dx, const Tensor& y, const Tensor& dy);
void swiglu(const Tensor& h, const Tensor& gate, const Tensor& up);
void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& gate, const Tensor& up, const Tensor& dy);

// cross_entropy.cu: logits, dlogits [rows, vocab]; targets [rows] (validated); lse fp32 [rows]; loss fp32 [].
void cross_entropy(const Tensor& loss, const Tensor& lse, const Tensor& logits, const Tensor& targets,
                   int64_t ignore_index, int64_t valid, int64_t rows, int64_t vocab);
void cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            double dloss, int64_t ignore_index, int64_t valid, int64_t rows, int64_t vocab);
// targets [rows] int32|int64, any strides: queues a deferred device check (device_checks.h) that
// every target is in [0, vocab) or == ignore_index.
void check_targets(std::string_view op, const Tensor& targets, int64_t vocab, int64_t ignore_index);

// ---- reduce.cu, index.cu, topk.cu, gemm.cu, grouped_gemm.cu ----------------------------------
// x contiguous [outer, n, inner] reduced over n -> out contiguous [outer * inner] (any shape), x's
// dtype or fp32.
void reduce(kernels::ReduceKind kind, const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out);
// index any shape and strides: queues a deferred device check (device_checks.h) whose violation
// surfaces, with the CPU check's message for the first bad element, at the next synchronization.
void check_index_range(std::string_view op, const Tensor& index, std::string_view name, int64_t limit,
                       std::string_view context);
// out [M, D] contiguous = x [N, D] (any strides, any dtype)[index [M] contiguous]; rows whose
// index is outside [0, N) (already reported by the deferred check) are zeros.
void gather_rows(const Tensor& out, const Tensor& x, const Tensor& index);
// dst [N, D] += weight * src [M, D] by index [M] contiguous; weight contiguous fp32 [M] or
// undefined (all ones). The range check is deferred and the plan is built on the device (index.cu).
void scatter_add_rows(const Tensor& dst, const Tensor& index, const Tensor& src, const Tensor& weight);
// x contiguous [rows, n] -> values [rows, k] (x's dtype), indices [rows, k] int64, contiguous.
void topk(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t k);
// c = alpha * a·b + beta * c; operands checked by the dispatcher (K >= 1, c non-empty).
void gemm(const Tensor& a, const Tensor& b, const Tensor& c, float alpha, float beta);
// grouped_gemm.cu: every non-empty group's product (kernels/grouped_gemm.h) in ONE
// cublasGemmGroupedBatchedEx call, written into c's rows / matrices. a, b contiguous and checked by
// the dispatcher (R >= 1, inner dims >= 1); c contiguous, allocated (and zeroed where needed) by it.
void grouped_matmul(kernels::GroupedProduct product, const Tensor& c, const Tensor& a, const Tensor& b,
                    const std::vector<int64_t>& offsets);

// ---- moe_routing.cu (kernels/moe_routing.h; the dispatcher checks shapes, ranges and dtypes) -----
// scores [N, E], bias [E] fp32 contiguous -> ids [N, k] int64 contiguous.
void group_limited_topk(const Tensor& ids, const Tensor& scores, const Tensor& bias, const routing::GroupLimit& limit);
// ids [N, k] int64 contiguous, gates [N, k] fp32 contiguous (capacity >= 0 only) -> pair, token
// [N·k] int64 (the kept pairs in expert order first), kept [N, k] fp32, counts [2E] int64 on the
// device (load per expert, then kept per expert). Queued only: the host waits when it copies counts.
void order_by_expert(const Tensor& ids, int64_t num_experts, const Tensor& gates, int64_t capacity, const Tensor& pair,
                     const Tensor& token, const Tensor& kept, const Tensor& counts);
// ids [B·T, k] int64 contiguous -> out [B, E] fp32 contiguous.
void expert_counts_per_sequence(const Tensor& out, const Tensor& ids, int64_t seq_len, int64_t num_experts,
                                float scale);

// ---- attention.cu ------------------------------------------------------------------------------
// (kernels/attention.h; head dims up to 256) q, k [B, H, T, Dqk], v [B, H, T, Dv] of
// one float dtype, any strides. Forward: out [B, H, T, Dv] and lse [B, H, T] fp32 contiguous.
// Backward: out, dout fp32 any strides; lse fp32 contiguous; dq, dk, dv contiguous in q's dtype.
// doc_start: undefined, or int64 [B, T] contiguous on q's device (the document mask).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                       double scale, bool causal, const Tensor& doc_start);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, double scale,
                        bool causal, const Tensor& doc_start);

}  // namespace daedalus::cuda
