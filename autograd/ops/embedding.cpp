// Embedding lookup on the tape.
#include "autograd/ops/embedding.h"

#include "autograd/kernels/copy.h"
#include "autograd/kernels/embedding.h"

namespace daedalus::ops {

Var embedding(const Var& weight, const Tensor& ids) {
  // ids are integers: captured as they are, not through save() (see rope.cpp).
  return record1("embedding", {weight}, kernels::embedding(weight.value(), ids),
                 [ids, vocab = weight.shape()[0], dtype = weight.dtype()](const BackwardContext& ctx) {
                   const Tensor dw = kernels::embedding_backward(ctx.grad(), ids, vocab);  // fp32 [V, D]
                   return std::vector<Tensor>{dw.dtype() == dtype ? dw : kernels::cast(dw, dtype)};
                 });
}

}  // namespace daedalus::ops
