// DeepSeek's FP8 block format: dequantization (import) and quantization (export).
#include "train/hf_fp8.h"

#include <cmath>
#include <vector>

#include "autograd/check.h"
#include "fp8/format.h"

namespace daedalus::train {

namespace {

constexpr float kE4m3Max = 448.0f;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

Tensor dequantize_fp8_blocks(const Tensor& codes, const Tensor& scale_inv, int64_t br, int64_t bc, int64_t split_rows) {
  DAEDALUS_CHECK(codes.dtype() == DType::f8e4m3 && codes.dim() >= 2, "dequantize: codes {} must be fp8e4m3 [..., R, C]",
                 codes.describe());
  const Tensor s = scale_inv.to(Device::cpu()).to(DType::f32).contiguous();
  const Tensor q = codes.to(Device::cpu()).contiguous();
  const int64_t r = q.size(-2), c = q.size(-1), batch = r * c == 0 ? 0 : q.numel() / (r * c);
  const int64_t block_rows = split_rows > 0 ? 2 * ceil_div(split_rows, br) : ceil_div(r, br);
  const int64_t block_cols = ceil_div(c, bc);
  DAEDALUS_CHECK(s.dim() == q.dim() && s.size(-2) == block_rows && s.size(-1) == block_cols &&
                     s.numel() == batch * block_rows * block_cols,
                 "dequantize: scale_inv {} does not hold the {}x{} blocks of codes {} (expected [..., {}, {}])",
                 s.describe(), br, bc, q.describe(), block_rows, block_cols);
  Tensor out = Tensor::empty(q.shape(), DType::f32, Device::cpu());
  const auto* in = static_cast<const fp8e4m3*>(q.data_ptr());
  const float* sp = s.data<float>();
  float* op = out.data<float>();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < r; ++i) {
      // In the second half of a split tensor, rows restart at that half's own blocks.
      const int64_t bi = split_rows > 0 && i >= split_rows ? ceil_div(split_rows, br) + (i - split_rows) / br : i / br;
      const float* srow = sp + (b * block_rows + bi) * block_cols;
      const fp8e4m3* qrow = in + (b * r + i) * c;
      float* orow = op + (b * r + i) * c;
      for (int64_t j = 0; j < c; ++j) orow[j] = codec::e4m3_to_float(qrow[j]) * srow[j / bc];
    }
  return out;
}

Fp8Blocks quantize_fp8_blocks(const Tensor& w, int64_t br, int64_t bc, bool ue8m0) {
  DAEDALUS_CHECK(w.dim() == 2, "quantize_fp8_blocks: W {} must be [R, C]", w.describe());
  const Tensor x = w.to(Device::cpu()).to(DType::f32).contiguous();
  const int64_t r = x.size(0), c = x.size(1), nbr = ceil_div(r, br), nbc = ceil_div(c, bc);
  Fp8Blocks out{Tensor::empty({r, c}, DType::f8e4m3, Device::cpu()),
                Tensor::empty({nbr, nbc}, DType::f32, Device::cpu())};
  const float* xp = x.data<float>();
  auto* qp = static_cast<fp8e4m3*>(out.codes.data_ptr());
  float* sp = out.scale_inv.data<float>();
  for (int64_t bi = 0; bi < nbr; ++bi)
    for (int64_t bj = 0; bj < nbc; ++bj) {
      const int64_t r0 = bi * br, r1 = std::min(r, r0 + br), c0 = bj * bc, c1 = std::min(c, c0 + bc);
      float amax = 0;
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t j = c0; j < c1; ++j) amax = std::max(amax, std::fabs(xp[i * c + j]));
      // Candidates, largest first.
      std::vector<float> candidates;
      float base = 1.0f;
      if (amax > 0 && std::isfinite(amax)) {
        if (ue8m0) {
          base = fp8::compute_mx_scale_inv(amax, kE4m3Max);  // 2^ceil(log2(amax / 448)), always exact again
        } else {
          base = amax / kE4m3Max;
          const float up1 = std::nextafter(base, INFINITY), down1 = std::nextafter(base, 0.0f);
          candidates = {std::nextafter(up1, INFINITY), up1, base, down1, std::nextafter(down1, 0.0f)};
        }
      }
      const auto exact = [&](float s) {
        for (int64_t i = r0; i < r1; ++i)
          for (int64_t j = c0; j < c1; ++j) {
            const float v = xp[i * c + j];
            if (codec::e4m3_to_float(codec::float_to_e4m3(v / s)) * s != v) return false;
          }
        return true;
      };
      float scale = base;
      for (float s : candidates)
        if (s > 0 && std::isfinite(s) && exact(s)) {
          scale = s;
          break;
        }
      sp[bi * nbc + bj] = scale;
      for (int64_t i = r0; i < r1; ++i)
        for (int64_t j = c0; j < c1; ++j) qp[i * c + j] = codec::float_to_e4m3(xp[i * c + j] / scale);
    }
  return out;
}

}  // namespace daedalus::train
