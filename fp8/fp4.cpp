// FP4 operands for the CPU GEMM emulation: fp4_scaled_values_bf16 (fp8/quantized.h).
//
// An E2M1 value has at most 2 significant bits and an E4M3 block scale at most 4, so their product
// has at most 6 and is exact in BF16's 8; the exponents stay inside BF16's range (E2M1 in [0.5, 6],
// E4M3 scales in [2^-9, 448]; OCP MX FP4 scales at most 2^125, so 6 * 2^125 < BF16's max, and at
// least 2^-127, so 0.5 * 2^-127 = 2^-128 is a BF16 subnormal, a multiple of BF16's 2^-133). So one
// BF16 GEMM with FP32 accumulation over all of K forms exactly the products the block-scaled MMA
// forms (q_a s_a)(q_b s_b); only the order of the FP32 additions differs (docs/precision.md).
#include <algorithm>
#include <array>

#include "autograd/kernels/strided.h"
#include "fp8/format.h"
#include "fp8/quantized.h"

namespace daedalus::fp8 {

Tensor fp4_scaled_values_bf16(const QuantizedTensor& q) {
  constexpr std::string_view op = "fp4_scaled_values_bf16";
  DAEDALUS_CHECK(q.data.defined() && q.scale_inv.defined() && q.data.dim() == 2 && q.format == Format::e2m1 &&
                     q.data.dtype() == DType::f4e2m1 && q.data.device().is_cpu(),
                 "{}: expected FP4 (e2m1) codes [rows, cols] on the CPU, got {}", op,
                 q.data.defined() ? q.data.describe() : std::string("an undefined tensor"));
  DAEDALUS_CHECK(q.granularity == Granularity::mx_1x32 || is_nvfp4(q.granularity),
                 "{}: FP4 operands have mx_1x32, nv_1x16 or nv_16x16 scales, got {}", op,
                 granularity_name(q.granularity));
  const int64_t rows = q.rows(), cols = q.cols();
  const int64_t br = block_rows(q.granularity, rows), bc = block_cols(q.granularity, cols);
  const int64_t nbc = (cols + bc - 1) / bc;
  DAEDALUS_CHECK(q.scale_inv.numel() == ((rows + br - 1) / br) * nbc && q.scale_inv.dtype() == DType::f32,
                 "{}: {} scale_inv {} does not fit a [{}, {}] operand", op, granularity_name(q.granularity),
                 q.scale_inv.describe(), rows, cols);
  const Tensor codes = q.data.contiguous(), scales = q.scale_inv.contiguous();
  const fp4e2m1* c = codes.data<fp4e2m1>();
  const float* s = scales.data<float>();
  Tensor out = Tensor::empty({rows, cols}, DType::bf16);
  bf16* y = out.data<bf16>();
  std::array<float, 16> value{};
  for (uint8_t code = 0; code < 16; ++code) value[code] = codec::e2m1_to_float(fp4e2m1{code});
  cpu::parallel_rows(rows, cols, [&](int64_t r) {
    const float* srow = s + (r / br) * nbc;
    for (int64_t j = 0; j < nbc; ++j) {
      const int64_t c0 = j * bc, c1 = std::min(cols, c0 + bc);
      const float si = srow[j];
      for (int64_t k = c0; k < c1; ++k) y[r * cols + k] = codec::float_to_bf16(value[c[r * cols + k].bits & 0xFu] * si);
    }
  });
  return out;
}

}  // namespace daedalus::fp8
