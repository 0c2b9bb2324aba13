// Embedding: dispatcher and CPU path. The forward is a row gather, the backward a scatter-add of
// rows (autograd/kernels/index.h); this file adds the shape contract and the op's own messages.
#include "autograd/kernels/embedding.h"

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/index.h"

namespace daedalus {

namespace cpu {

// out [M, D] = weight[ids]; ids flat [M], range-checked.
Tensor embedding(const Tensor& weight, const Tensor& flat_ids) { return kernels::gather_rows(weight, flat_ids); }

// dW [V, D] fp32 zeros += dy rows [M, D] at flat ids [M], range-checked.
void embedding_backward(const Tensor& dw, const Tensor& dy_rows, const Tensor& flat_ids) {
  kernels::scatter_add_rows(dw, flat_ids, dy_rows);
}

}  // namespace cpu

namespace kernels {

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  const Device device = common_device("embedding", {&weight, &ids});
  check_dim("embedding", weight, "weight", 2);
  check_float("embedding", weight, "weight");
  // The range check reads the ids on the host (a copy for CUDA ids; itself for CPU ids).
  check_index_range("embedding", ids.to(Device::cpu()), "ids", weight.size(0),
                    fmt::format("weight {}", shape_str(weight.shape())));
  Shape out_shape = ids.shape();
  out_shape.push_back(weight.size(1));
  const Tensor flat_ids = ids.reshape({ids.numel()});
  switch (device.type) {
    case DeviceType::cpu: return cpu::embedding(weight, flat_ids).view(out_shape);
    case DeviceType::cuda: {
      Tensor out = Tensor::empty({ids.numel(), weight.size(1)}, weight.dtype(), device);
      DAEDALUS_CUDA_KERNEL("embedding", embedding(out, weight, flat_ids));
      return out.view(out_shape);
    }
  }
  return {};
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
  // Read on the host: the range check, and for CUDA the per-row source lists of the backward kernel.
  const Tensor host_ids = ids.to(Device::cpu());
  check_index_range("embedding_backward", host_ids, "ids", vocab_size, fmt::format("vocab_size {}", vocab_size));
  Tensor dw = Tensor::zeros({vocab_size, d}, DType::f32, device);
  switch (device.type) {
    case DeviceType::cpu: cpu::embedding_backward(dw, dy.reshape({ids.numel(), d}), ids.reshape({ids.numel()})); break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL("embedding_backward", embedding_backward(dw, dy.reshape({ids.numel(), d}),
                                                                    host_ids.reshape({ids.numel()}).contiguous()));
      break;
  }
  return dw;
}

}  // namespace kernels

}  // namespace daedalus
