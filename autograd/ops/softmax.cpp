// Softmax and log-softmax on the tape.
#include "autograd/ops/softmax.h"

#include "autograd/kernels/softmax.h"

namespace daedalus::ops {

Var softmax(const Var& x) {
  const Tensor y = kernels::softmax(x.value());
  SavedTensor keep_y = save(y);
  return record1("softmax", {x}, y, [keep_y](const BackwardContext& ctx) {
    return std::vector<Tensor>{kernels::softmax_backward(keep_y.get(), ctx.grad())};
  });
}

Var log_softmax(const Var& x) {
  const Tensor y = kernels::log_softmax(x.value());
  SavedTensor keep_y = save(y);
  return record1("log_softmax", {x}, y, [keep_y](const BackwardContext& ctx) {
    return std::vector<Tensor>{kernels::log_softmax_backward(keep_y.get(), ctx.grad())};
  });
}

}  // namespace daedalus::ops
