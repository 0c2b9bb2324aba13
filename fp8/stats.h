// Statistics of one quantization (Transformer Engine's debug set): what users compare across
// recipes to see where FP8 loses information. Cheap enough to collect every N steps.
#pragma once

#include <cstdint>
#include <string>

#include "fp8/quantized.h"

namespace daedalus::fp8 {

struct QuantStats {
  int64_t count = 0;          // elements
  int64_t nonfinite = 0;      // NaN or inf in the input (never hidden behind a finite scale)
  double amax = 0;            // max |x| over finite elements
  double underflow_pct = 0;   // non-zero inputs that quantized to zero, % of non-zero inputs
  double saturation_pct = 0;  // finite inputs whose scaled magnitude exceeded the format's max, %
  double scale_inv_min = 0, scale_inv_max = 0;
  double relative_error = 0;  // ‖x − dequantize(q)‖ / ‖x‖ over finite elements
  double dynamic_range = 0;   // log2(amax / min non-zero |x|), in binades
};

// x: the tensor that was quantized (fp32/bf16, [rows, cols]); q: its quantization.
QuantStats quant_stats(const Tensor& x, const QuantizedTensor& q);

// One JSON object (no newline) with the fields above, for fp8_stats.jsonl.
std::string to_json(const QuantStats& s);

}  // namespace daedalus::fp8
