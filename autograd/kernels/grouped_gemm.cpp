// Grouped GEMM: the dispatcher with its operand checks, and the CPU kernel (one kernels::gemm per
// non-empty group, written straight into c's rows or matrix: the reference the CUDA twin is tested
// against).
#include "autograd/kernels/grouped_gemm.h"

#include <string>
#include <string_view>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/gemm.h"

namespace daedalus {

namespace kernels {

void grouped_matmul_per_group(GroupedProduct product, const Tensor& c, const Tensor& a, const Tensor& b,
                              const std::vector<int64_t>& offsets) {
  for (size_t g = 0; g + 1 < offsets.size(); ++g) {
    const int64_t begin = offsets[g], end = offsets[g + 1];
    if (begin == end) continue;
    const Tensor a_g = a.slice(0, begin, end);
    switch (product) {
      case GroupedProduct::a_bt: gemm(a_g, b.select(0, int64_t(g)).t(), c.slice(0, begin, end)); break;
      case GroupedProduct::a_b: gemm(a_g, b.select(0, int64_t(g)), c.slice(0, begin, end)); break;
      case GroupedProduct::at_b: gemm(a_g.t(), b.slice(0, begin, end), c.select(0, int64_t(g))); break;
    }
  }
}

}  // namespace kernels

namespace kernels {

namespace {

std::string_view product_name(GroupedProduct p) {
  switch (p) {
    case GroupedProduct::a_bt: return "a_g · w_gᵀ";
    case GroupedProduct::a_b: return "a_g · w_g";
    case GroupedProduct::at_b: return "a_gᵀ · b_g";
  }
  return "?";
}

bool is_gemm_dtype(DType t) { return t == DType::f32 || t == DType::bf16; }

}  // namespace

Tensor grouped_matmul(GroupedProduct product, const Tensor& a, const Tensor& b, const std::vector<int64_t>& offsets,
                      DType out) {
  constexpr std::string_view op = "grouped_matmul";
  const Device device = common_device(op, {&a, &b});
  const std::string what = fmt::format("{} ({}): a {} and b {}", op, product_name(product), a.describe(), b.describe());
  DAEDALUS_CHECK(is_gemm_dtype(a.dtype()) && a.dtype() == b.dtype(), "{}: operands must be both fp32 or both bf16",
                 what);
  DAEDALUS_CHECK(is_gemm_dtype(out), "{}: unsupported output dtype {} (accepts fp32, bf16)", what, dtype_name(out));
  DAEDALUS_CHECK(offsets.size() >= 2 && offsets.front() == 0, "{}: {} offsets: expected G + 1 >= 2 starting at 0", what,
                 offsets.size());
  for (size_t g = 0; g + 1 < offsets.size(); ++g)
    DAEDALUS_CHECK(offsets[g] <= offsets[g + 1], "{}: offsets decrease at group {}", what, g);
  const int64_t groups = int64_t(offsets.size()) - 1, rows = offsets.back();
  const bool per_group_b = product != GroupedProduct::at_b;
  DAEDALUS_CHECK(a.dim() == 2 && a.size(0) == rows, "{}: a must be [R, .] with R = {} (the last offset)", what, rows);
  if (per_group_b) {
    DAEDALUS_CHECK(b.dim() == 3 && b.size(0) == groups, "{}: b must be [G, N, K] with G = {}", what, groups);
    const int64_t shared = product == GroupedProduct::a_bt ? b.size(2) : b.size(1);
    DAEDALUS_CHECK(a.size(1) == shared, "{}: a's columns {} must match b's {}", what, a.size(1),
                   product == GroupedProduct::a_bt ? "K" : "N");
  } else {
    DAEDALUS_CHECK(b.dim() == 2 && b.size(0) == rows, "{}: b must be [R, K] with R = {} (the last offset)", what, rows);
  }

  const Shape shape = product == GroupedProduct::a_bt  ? Shape{rows, b.size(1)}
                      : product == GroupedProduct::a_b ? Shape{rows, b.size(2)}
                                                       : Shape{groups, a.size(1), b.size(1)};
  bool empty_group = false;
  for (size_t g = 0; g + 1 < offsets.size(); ++g) empty_group = empty_group || offsets[g] == offsets[g + 1];
  // An empty sum is zero: a_bt / a_b when a has no columns; at_b for each group without rows (its
  // sum runs over the group's rows). c is zeroed then; the kernels write only non-empty products.
  const bool no_inner = product != GroupedProduct::at_b && a.size(1) == 0;
  const bool zero = no_inner || (product == GroupedProduct::at_b && empty_group);
  Tensor c = zero ? Tensor::zeros(shape, out, device) : Tensor::empty(shape, out, device);
  if (c.numel() == 0 || rows == 0 || no_inner) return c;
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  switch (device.type) {
    case DeviceType::cpu: grouped_matmul_per_group(product, c, ac, bc, offsets); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("grouped_matmul", grouped_matmul(product, c, ac, bc, offsets)); break;
  }
  return c;
}

}  // namespace kernels

}  // namespace daedalus
