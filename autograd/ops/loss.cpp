// Cross-entropy on the tape.
#include "autograd/ops/loss.h"

#include "autograd/kernels/cross_entropy.h"

namespace daedalus::ops {

Var cross_entropy(const Var& logits, const Tensor& targets, int64_t ignore_index) {
  kernels::CrossEntropyOutput out = kernels::cross_entropy(logits.value(), targets, ignore_index);
  SavedTensor keep_logits = save(logits.value());
  SavedTensor keep_lse = save(out.lse);
  // targets are integers: captured as they are, not through save() (see rope.cpp).
  return record1("cross_entropy", {logits}, out.loss,
                 [keep_logits, keep_lse, targets, ignore_index, valid = out.valid](const BackwardContext& ctx) {
                   return std::vector<Tensor>{kernels::cross_entropy_backward(
                       keep_logits.get(), targets, keep_lse.get(), ctx.grad().item(), ignore_index, valid)};
                 });
}

}  // namespace daedalus::ops
