// DeepSeek's FP8 weight format (the DeepSeek-V3/R1 release, transformers' FineGrainedFP8, vLLM and
// SGLang's block-FP8 loaders): a weight W [..., R, C] as E4M3 codes plus one fp32 inverse scale per
// (br x bc) block of the last two dims (128 x 128 in every release), ragged edge blocks included:
//   W[r, c] = e4m3(code[r, c]) · scale_inv[r / br, c / bc]
// scale_fmt ue8m0 (DeepSeek-V3.1): every scale_inv is a power of two.
#pragma once

#include <cstdint>

#include "autograd/tensor.h"

namespace daedalus::train {

// codes [..., R, C] fp8e4m3, scale_inv [..., ceil(R/br), ceil(C/bc)] (fp32, or anything that
// converts) -> W [..., R, C] fp32, each element one fp32 product: exact for power-of-two scales
// (an E4M3 value times 2^k inside fp32's range), else correctly rounded (torch's fp32 result).
// split_rows > 0: dim -2 is two halves of split_rows rows, each with its own ceil(split_rows/br)
// block rows (transformers' stacked experts.gate_up_proj of separately quantized gate and up).
Tensor dequantize_fp8_blocks(const Tensor& codes, const Tensor& scale_inv, int64_t br, int64_t bc,
                             int64_t split_rows = 0);

struct Fp8Blocks {
  Tensor codes;      // [R, C] fp8e4m3
  Tensor scale_inv;  // [ceil(R/br), ceil(C/bc)] fp32
};

// W [R, C] fp32 -> DeepSeek's blocks, codes = W / scale rounded to nearest even, per block with
// amax = max |W| (an all-zero block has scale 1):
//   ue8m0: scale = 2^ceil(log2(amax / 448)), DeepSeek's rule. Values that came from this format are
//          reproduced exactly, and so are the bytes, except in a block whose largest code was 224:
//          its values come back as codes twice as large under half the scale (the same numbers;
//          amax / 448 is then a power of two and the rule takes the smaller scale).
//   fp32:  the largest of amax / 448 rounded to fp32 and its two fp32 neighbours either side under
//          which every element dequantizes back to exactly its W; else amax / 448 (DeepSeek's
//          reference). So a tensor imported from this format is written back byte for byte.
Fp8Blocks quantize_fp8_blocks(const Tensor& w, int64_t br, int64_t bc, bool ue8m0);

}  // namespace daedalus::train
