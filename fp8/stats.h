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
  double underflow_pct = 0;   // non-zero inputs that quantized (or dequantize) to zero, % of non-zero inputs
  double saturation_pct = 0;  // finite inputs whose scaled magnitude exceeded the format's max, %
  double scale_inv_min = 0, scale_inv_max = 0;
  double relative_error = 0;  // ‖x − dequantize(q)‖ / ‖x‖ over finite elements
  double dynamic_range = 0;   // log2(amax / min non-zero |x|), in binades
  // The scale distribution (what FP4's narrow range makes worth watching): the median block's
  // log2(scale_inv), the % of blocks whose scale is 0 although the block is not (an NVFP4 E4M3 block
  // scale underflowing: the whole block reads as zeros), and NVFP4's tensor-level 1 / S (1 otherwise).
  std::string format, granularity;  // "e4m3" / "e5m2" / "e2m1", "tile_1x128" / "nv_1x16" / ...
  double scale_log2_p50 = 0;
  double zero_scale_pct = 0;
  double tensor_scale_inv = 1;
};

// x: the tensor that was quantized (fp32/bf16, [rows, cols]); q: its quantization.
QuantStats quant_stats(const Tensor& x, const QuantizedTensor& q);

// One JSON object (no newline) with the fields above, for fp8_stats.jsonl.
std::string to_json(const QuantStats& s);

}  // namespace daedalus::fp8
