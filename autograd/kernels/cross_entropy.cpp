// Fused log-softmax cross-entropy: dispatchers and CPU kernels.
#include "autograd/kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/device_checks.h"
#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

// logits contiguous [rows, vocab]; targets contiguous [rows] (validated); loss fp32 []; lse fp32 [rows].
void cross_entropy(const Tensor& loss, const Tensor& lse, const Tensor& logits, const Tensor& targets,
                   int64_t ignore_index, int64_t valid, int64_t rows, int64_t vocab) {
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
  float* plse = lse.data<float>();
  dispatch_float("cross_entropy", logits.dtype(), [&]<typename T>() {
    dispatch_index("cross_entropy", targets.dtype(), [&]<typename I>() {
      const T* px = static_cast<const T*>(logits.data_ptr());
      const I* pt = static_cast<const I*>(targets.data_ptr());
      parallel_rows(rows, vocab, [&](int64_t r) {
        const T* xr = px + r * vocab;
        float m = -INFINITY;
        for (int64_t v = 0; v < vocab; ++v) m = std::max(m, to_float(xr[v]));
        double sum = 0.0;
        for (int64_t v = 0; v < vocab; ++v) sum += std::exp(to_float(xr[v]) - m);
        const double row_lse = double(m) + std::log(sum);
        plse[r] = float(row_lse);
        const int64_t t = int64_t(pt[r]);
        if (t != ignore_index) row_loss[size_t(r)] = row_lse - double(to_float(xr[t]));
      });
    });
  });
  double total = 0.0;  // in row order: deterministic
  for (double l : row_loss) total += l;
  *loss.data<float>() = valid > 0 ? float(total / double(valid)) : 0.0f;
}

// logits, dlogits contiguous [rows, vocab]; targets contiguous [rows] (validated); lse fp32 [rows].
void cross_entropy_backward(const Tensor& dlogits, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            double dloss, int64_t ignore_index, int64_t valid, int64_t rows, int64_t vocab) {
  const double scale = valid > 0 ? dloss / double(valid) : 0.0;
  const float* plse = lse.data<float>();
  dispatch_float("cross_entropy_backward", logits.dtype(), [&]<typename T>() {
    dispatch_index("cross_entropy_backward", targets.dtype(), [&]<typename I>() {
      const T* px = static_cast<const T*>(logits.data_ptr());
      const I* pt = static_cast<const I*>(targets.data_ptr());
      T* pd = static_cast<T*>(dlogits.data_ptr());
      parallel_rows(rows, vocab, [&](int64_t r) {
        const T* xr = px + r * vocab;
        T* dr = pd + r * vocab;
        const int64_t t = int64_t(pt[r]);
        if (t == ignore_index || valid == 0) {
          for (int64_t v = 0; v < vocab; ++v) dr[v] = from_float<T>(0.0f);
          return;
        }
        const float row_lse = plse[r];
        for (int64_t v = 0; v < vocab; ++v) {
          const double p = std::exp(to_float(xr[v]) - row_lse);
          dr[v] = round_from_double<T>(scale * (v == t ? p - 1.0 : p));
        }
      });
    });
  });
}

}  // namespace cpu

namespace kernels {

namespace {

// Shapes and dtypes of logits [N, V] and targets [N].
void check_logits_targets_shapes(std::string_view op, const Tensor& logits, const Tensor& targets) {
  DAEDALUS_CHECK(logits.dtype() == DType::f32 || logits.dtype() == DType::bf16,
                 "{}: logits must be fp32 or bf16, got {}", op, logits.describe());
  DAEDALUS_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64,
                 "{}: targets must be int32 or int64, got {}", op, targets.describe());
  check_dim(op, logits, "logits [N, V]", 2);
  check_dim(op, targets, "targets [N]", 1);
  DAEDALUS_CHECK(targets.size(0) == logits.size(0), "{}: targets {} do not match the rows of logits {}", op,
                 shape_str(targets.shape()), shape_str(logits.shape()));
  DAEDALUS_CHECK(logits.size(1) > 0 || logits.size(0) == 0, "{}: logits {} have no classes", op,
                 shape_str(logits.shape()));
}

// Every target in [0, vocab) or ignore_index, read on the host (a copy for CUDA targets).
// Returns the number of valid (not ignored) rows.
int64_t count_valid_targets(std::string_view op, const Tensor& targets, int64_t vocab, int64_t ignore_index) {
  const Tensor host = targets.to(Device::cpu()).contiguous();
  int64_t valid = 0;
  dispatch_index(op, host.dtype(), [&]<typename I>() {
    const I* pt = static_cast<const I*>(host.data_ptr());
    for (int64_t r = 0; r < host.numel(); ++r) {
      const int64_t t = int64_t(pt[r]);
      if (t == ignore_index) continue;
      if (t < 0 || t >= vocab) DAEDALUS_FAIL("{}", target_range_message(op, r, t, vocab, ignore_index));
      ++valid;
    }
  });
  return valid;
}

}  // namespace

CrossEntropyOutput cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  const Device device = common_device("cross_entropy", {&logits, &targets});
  check_logits_targets_shapes("cross_entropy", logits, targets);
  // `valid` is returned to the host (the backward's divisor, on the host with dloss), so CUDA
  // targets are read on the host here, one copy per forward.
  const int64_t valid = count_valid_targets("cross_entropy", targets, logits.size(1), ignore_index);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  CrossEntropyOutput out{Tensor::empty({}, DType::f32, device), Tensor::empty({rows}, DType::f32, device), valid};
  switch (device.type) {
    case DeviceType::cpu:
      cpu::cross_entropy(out.loss, out.lse, logits.contiguous(), targets.contiguous(), ignore_index, valid, rows,
                         vocab);
      break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL("cross_entropy", cross_entropy(out.loss, out.lse, logits.contiguous(), targets.contiguous(),
                                                          ignore_index, valid, rows, vocab));
      break;
  }
  return out;
}

Tensor cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse, double dloss,
                              int64_t ignore_index, int64_t valid) {
  const Device device = common_device("cross_entropy_backward", {&logits, &targets, &lse});
  check_logits_targets_shapes("cross_entropy_backward", logits, targets);
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  // The backward needs no count (valid is given), so CUDA targets are checked on the device,
  // deferred (autograd/device_checks.h): no host copy; the error surfaces at the next
  // synchronization. The CUDA kernel only compares v == target, so a bad target reads nothing.
  switch (device.type) {
    case DeviceType::cpu: count_valid_targets("cross_entropy_backward", targets, vocab, ignore_index); break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL("cross_entropy_backward",
                           check_targets("cross_entropy_backward", targets, vocab, ignore_index));
      break;
  }
  check_dtype("cross_entropy_backward", lse, "lse", DType::f32);
  DAEDALUS_CHECK(lse.dim() == 1 && lse.size(0) == rows,
                 "cross_entropy_backward: lse must be [{}] for logits {}, got {}", rows, shape_str(logits.shape()),
                 shape_str(lse.shape()));
  DAEDALUS_CHECK(valid >= 0, "cross_entropy_backward: valid must be >= 0, got {}", valid);
  Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), device);
  switch (device.type) {
    case DeviceType::cpu:
      cpu::cross_entropy_backward(dlogits, logits.contiguous(), targets.contiguous(), lse.contiguous(), dloss,
                                  ignore_index, valid, rows, vocab);
      break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL("cross_entropy_backward",
                           cross_entropy_backward(dlogits, logits.contiguous(), targets.contiguous(), lse.contiguous(),
                                                  dloss, ignore_index, valid, rows, vocab));
      break;
  }
  return dlogits;
}

}  // namespace kernels

}  // namespace daedalus
