// Attention on the tape: one node, saving the inputs, the output and its row logsumexp.
#include "autograd/ops/attention.h"

#include "autograd/kernels/attention.h"

namespace daedalus::ops {

Var attention(const Var& q, const Var& k, const Var& v, double scale, bool causal, const Tensor& doc_start) {
  // On q's device once, for the forward and the backward (the kernels take it there).
  const Tensor starts = doc_start.defined() ? doc_start.to(DType::i64).to(q.value().device()) : Tensor();
  kernels::AttentionOutput fwd = kernels::attention_forward(q.value(), k.value(), v.value(), scale, causal, starts);
  const bool recording = grad_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  SavedTensor keep_q, keep_k, keep_v, keep_out, keep_lse;
  if (recording) {
    keep_q = save(q.value());
    keep_k = save(k.value());
    keep_v = save(v.value());
    keep_out = save(fwd.out);
    keep_lse = save(fwd.lse);
  }
  return record1("attention", {q, k, v}, fwd.out,
                 [keep_q, keep_k, keep_v, keep_out, keep_lse, scale, causal, starts](const BackwardContext& ctx) {
                   // A saved-tensor hook may hand out and lse back in another dtype: the kernel takes fp32.
                   kernels::AttentionGrads g = kernels::attention_backward(
                       keep_q.get(), keep_k.get(), keep_v.get(), keep_out.get().to(DType::f32),
                       keep_lse.get().to(DType::f32), ctx.grad(), scale, causal, starts);
                   // One kernel computes all three; inputs that want none get none.
                   return std::vector<Tensor>{ctx.needs_grad(0) ? g.dq : Tensor(), ctx.needs_grad(1) ? g.dk : Tensor(),
                                              ctx.needs_grad(2) ? g.dv : Tensor()};
                 });
}

}  // namespace daedalus::ops
