// Device-side comparisons that need kernels of their own (tests/cuda_codec_check.cu), called from
// the GoogleTest files. CUDA builds only.
#pragma once

#include <cstdint>

namespace daedalus::testing {

// Every one of the 2^32 float bit patterns encoded on the device both by the hardware convert
// (cvt.rn.satfinite, what kernels use on sm_89+) and by the integer encoder (the CPU's), E4M3 or
// E5M2, saturate mode. `mismatches` counts the inputs whose bytes differ; `first` is the smallest
// such input's bit pattern (0xFFFFFFFF when none) and `hardware`, `integer` its two bytes.
struct Fp8EncoderComparison {
  uint64_t mismatches = 0;
  uint32_t first = 0xFFFFFFFFu;
  uint8_t hardware = 0, integer = 0;
};
Fp8EncoderComparison compare_fp8_encoders_on_device(bool e5m2);

}  // namespace daedalus::testing
