// Quantization statistics, computed on the host in double. For CUDA tensors the operands are copied
// to the host explicitly (Tensor::to_doubles: x, the FP8 codes, and the dequantization done on the
// device) — a debug path, collected every N steps, whose numbers then equal the CPU run's exactly.
#include "fp8/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace daedalus::fp8 {

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
      if (qs[i] == 0) ++underflow;
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
  }
  return s;
}

std::string to_json(const QuantStats& s) {
  return fmt::format(
      "{{\"count\": {}, \"nonfinite\": {}, \"amax\": {:.6g}, \"underflow_pct\": {:.6g}, \"saturation_pct\": {:.6g}, "
      "\"scale_inv_min\": {:.6g}, \"scale_inv_max\": {:.6g}, \"relative_error\": {:.6g}, \"dynamic_range\": {:.6g}}}",
      s.count, s.nonfinite, s.amax, s.underflow_pct, s.saturation_pct, s.scale_inv_min, s.scale_inv_max,
      s.relative_error, s.dynamic_range);
}

}  // namespace daedalus::fp8
