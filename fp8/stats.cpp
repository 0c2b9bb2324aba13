// Quantization statistics, computed on the host in double. For CUDA tensors the operands are copied
// to the host explicitly (Tensor::to_doubles: x, the FP8 codes, and the dequantization done on the
// device) — a debug path, collected every N steps, whose numbers then equal the CPU run's exactly.
#include "fp8/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace daedalus::fp8 {

namespace {

// zero_scale_pct and scale_log2_p50 of `s`: blocks (quantized.h's grid, scale_inv row-major) whose
// scale is 0 while they hold a non-zero finite input, and the median log2 of the positive scales.
void scale_distribution(const std::vector<double>& xs, const QuantizedTensor& q, const std::vector<double>& si,
                        QuantStats& s) {
  const int64_t rows = q.rows(), cols = q.cols();
  const int64_t br = std::max<int64_t>(1, block_rows(q.granularity, rows));
  const int64_t bc = std::max<int64_t>(1, block_cols(q.granularity, cols));
  const int64_t nbc = (cols + bc - 1) / bc;
  std::vector<char> nonzero_block(si.size(), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double v = xs[size_t(r * cols + c)];
      const size_t b = q.granularity == Granularity::tensor ? 0 : size_t((r / br) * nbc + c / bc);
      if (v != 0 && std::isfinite(v) && b < nonzero_block.size()) nonzero_block[b] = 1;
    }
  int64_t zero_scales = 0;
  for (size_t b = 0; b < si.size(); ++b) zero_scales += (si[b] == 0 && nonzero_block[b]) ? 1 : 0;
  s.zero_scale_pct = 100.0 * double(zero_scales) / double(si.size());
  std::vector<double> logs;
  for (double v : si)
    if (v > 0 && std::isfinite(v)) logs.push_back(std::log2(v));
  if (!logs.empty()) {
    std::nth_element(logs.begin(), logs.begin() + ptrdiff_t(logs.size() / 2), logs.end());
    s.scale_log2_p50 = logs[logs.size() / 2];
  }
}

}  // namespace

QuantStats quant_stats(const Tensor& x, const QuantizedTensor& q) {
  DAEDALUS_CHECK(x.shape() == q.data.shape(), "quant_stats: input {} and quantized data {} differ",
                 shape_str(x.shape()), shape_str(q.data.shape()));
  const std::vector<double> xs = x.to_doubles();
  const std::vector<double> qs = q.data.to_doubles();  // FP8 codes as values (unscaled)
  const std::vector<double> dq = q.dequantize().to_doubles();
  const double fmax = max_finite(q.format);
  QuantStats s;
  s.count = int64_t(xs.size());
  double min_nonzero = std::numeric_limits<double>::infinity(), err2 = 0, norm2 = 0;
  int64_t nonzero = 0, underflow = 0, saturated = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    if (!std::isfinite(v)) {
      ++s.nonfinite;
      continue;
    }
    const double a = std::fabs(v);
    s.amax = std::max(s.amax, a);
    if (a > 0) {
      ++nonzero;
      min_nonzero = std::min(min_nonzero, a);
      if (qs[i] == 0 || dq[i] == 0) ++underflow;  // FP4: a zero block scale reads the block as zeros
    }
    // Saturation: the code hit ±max while the exact scaled value lay beyond it. The scale of this
    // element is q / dq's ratio; recover it from the dequantized value when q is non-zero. The
    // quantizer scaled in fp32 and the recovered scale carries fp32 rounding too, so a block's own
    // amax (scaled to exactly max by current scaling) lands within a few fp32 ulps of max: only a
    // margin beyond 2^-20 counts as clipped.
    if (std::fabs(qs[i]) == fmax && dq[i] != 0) {
      const double scale = qs[i] / dq[i];
      if (a * scale > fmax * (1 + 0x1p-20)) ++saturated;
    }
    err2 += (v - dq[i]) * (v - dq[i]);
    norm2 += v * v;
  }
  const int64_t finite = s.count - s.nonfinite;
  s.underflow_pct = nonzero ? 100.0 * double(underflow) / double(nonzero) : 0.0;
  s.saturation_pct = finite ? 100.0 * double(saturated) / double(finite) : 0.0;
  s.relative_error = norm2 > 0 ? std::sqrt(err2 / norm2) : 0.0;
  s.dynamic_range = nonzero ? std::log2(s.amax / min_nonzero) : 0.0;
  const std::vector<double> si = q.scale_inv.to_doubles();
  if (!si.empty()) {
    s.scale_inv_min = *std::min_element(si.begin(), si.end());
    s.scale_inv_max = *std::max_element(si.begin(), si.end());
    scale_distribution(xs, q, si, s);
  }
  s.format = std::string(format_name(q.format));
  s.granularity = std::string(granularity_name(q.granularity));
  s.tensor_scale_inv = q.tensor_scale_inv;
  return s;
}

std::string to_json(const QuantStats& s) {
  return fmt::format(
      "{{\"count\": {}, \"nonfinite\": {}, \"amax\": {:.6g}, \"underflow_pct\": {:.6g}, \"saturation_pct\": {:.6g}, "
      "\"scale_inv_min\": {:.6g}, \"scale_inv_max\": {:.6g}, \"relative_error\": {:.6g}, \"dynamic_range\": {:.6g}, "
      "\"format\": \"{}\", \"granularity\": \"{}\", \"scale_log2_p50\": {:.6g}, \"zero_scale_pct\": {:.6g}, "
      "\"tensor_scale_inv\": {:.6g}}}",
      s.count, s.nonfinite, s.amax, s.underflow_pct, s.saturation_pct, s.scale_inv_min, s.scale_inv_max,
      s.relative_error, s.dynamic_range, s.format, s.granularity, s.scale_log2_p50, s.zero_scale_pct,
      s.tensor_scale_inv);
}

}  // namespace daedalus::fp8
