// Top-k: dispatcher and CPU kernel.
//
// Each element becomes one 64-bit key, (order-preserving bits of the value) << 32 | (2^32 - 1 - index),
// so that "larger key" is exactly "larger value, or equal value and lower index". Keys are distinct,
// the order is total, and nth_element + sort of the first k yields the same answer as a stable full
// sort, for any thread count.
#include "autograd/kernels/topk.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/order_key.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

// x contiguous [rows, n] -> values [rows, k] (x's dtype), indices [rows, k] int64, both contiguous.
void topk(const Tensor& values, const Tensor& indices, const Tensor& x, int64_t k) {
  const int64_t n = x.size(-1), rows = n > 0 ? x.numel() / n : 0;
  int64_t* out_idx = indices.data<int64_t>();
  dispatch_float("topk", x.dtype(), [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out_val = static_cast<T*>(values.data_ptr());
#pragma omp parallel if (rows > 1 && rows * n >= kParallelThreshold)
    {
      std::vector<uint64_t> keys(static_cast<size_t>(n));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* row = in + r * n;
        for (int64_t j = 0; j < n; ++j)
          keys[size_t(j)] = codec::index_order_key(to_float(row[j]), j);
        if (k < n) std::nth_element(keys.begin(), keys.begin() + k, keys.end(), std::greater<>());
        std::sort(keys.begin(), keys.begin() + k, std::greater<>());
        for (int64_t c = 0; c < k; ++c) {
          const int64_t j = codec::index_of_order_key(keys[size_t(c)]);
          out_idx[r * k + c] = j;
          out_val[r * k + c] = row[j];  // the original bits (-0.0 stays -0.0)
        }
      }
    }
  });
}

}  // namespace cpu

namespace kernels {

TopK topk(const Tensor& x, int64_t k) {
  const Device device = common_device("topk", {&x});
  DAEDALUS_CHECK(x.dim() >= 1, "topk: x must be at least 1-d, got {}", shape_str(x.shape()));
  const int64_t n = x.size(-1);
  DAEDALUS_CHECK(k >= 1 && k <= n, "topk: k = {} is out of range [1, {}] for x {} (k counts along the last dim)", k, n,
                 shape_str(x.shape()));
  DAEDALUS_CHECK(n <= int64_t(0xFFFFFFFFll), "topk: last dim of x {} exceeds 2^32 - 1", shape_str(x.shape()));
  Shape out_shape = x.shape();
  out_shape.back() = k;
  TopK out{Tensor::empty(out_shape, x.dtype(), device), Tensor::empty(out_shape, DType::i64, device)};
  switch (device.type) {
    case DeviceType::cpu: cpu::topk(out.values, out.indices, x.contiguous(), k); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("topk", topk(out.values, out.indices, x.contiguous(), k)); break;
  }
  return out;
}

}  // namespace kernels

}  // namespace daedalus
