// Embedding: the forward is a row gather, the backward a scatter-add of rows into zeros
// (autograd/kernels/index.h, on either device: on CUDA the same deterministic row-owner sums as on
// the CPU); this file adds the shape contract and the op's own messages.
#include "autograd/kernels/embedding.h"

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/index.h"

namespace daedalus {

namespace kernels {

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  common_device("embedding", {&weight, &ids});
  check_dim("embedding", weight, "weight", 2);
  check_float("embedding", weight, "weight");
  // CPU ids: checked here. CUDA ids: a deferred device check (no host copy), raised at the next
  // synchronization; the gather writes zero rows for bad ids meanwhile.
  check_index_range("embedding", ids, "ids", weight.size(0), fmt::format("weight {}", shape_str(weight.shape())));
  Shape out_shape = ids.shape();
  out_shape.push_back(weight.size(1));
  return gather_rows(weight, ids.reshape({ids.numel()})).view(out_shape);
}

Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t vocab_size) {
  const Device device = common_device("embedding_backward", {&dy, &ids});
  check_float("embedding_backward", dy, "dy");
  DAEDALUS_CHECK(vocab_size >= 0, "embedding_backward: vocab_size {} is negative", vocab_size);
  Shape expected = ids.shape();
  expected.push_back(dy.dim() > 0 ? dy.size(-1) : 0);
  DAEDALUS_CHECK(dy.dim() == ids.dim() + 1 && dy.shape() == expected,
                 "embedding_backward: dy {} must be ids' shape {} plus the embedding dim", shape_str(dy.shape()),
                 shape_str(ids.shape()));
  const int64_t d = dy.size(-1);
  // Names this op. CUDA ids: deferred, and raised by the host copy of the ids that scatter_add_rows'
  // plan makes next (a device-to-host copy), before scatter_add_rows' own check of that copy.
  check_index_range("embedding_backward", ids, "ids", vocab_size, fmt::format("vocab_size {}", vocab_size));
  Tensor dw = Tensor::zeros({vocab_size, d}, DType::f32, device);
  scatter_add_rows(dw, ids.reshape({ids.numel()}), dy.reshape({ids.numel(), d}));
  return dw;
}

}  // namespace kernels

}  // namespace daedalus
