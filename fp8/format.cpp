// Host parts of fp8/format.h: the Philox word behind stochastic rounding.
#include "fp8/format.h"

#include "autograd/generator.h"

namespace daedalus::fp8 {

uint32_t stochastic_word(uint64_t seed, uint64_t index) { return philox4x32(index / 4, 0, seed)[size_t(index % 4)]; }

}  // namespace daedalus::fp8
