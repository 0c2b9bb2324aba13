// Seeded random numbers that are the same on every machine, thread count and device.
//
// Philox4x32-10 (Salmon et al., SC'11), a counter-based generator: element i of a fill draws
// from counter (offset + i / 4), lane i % 4, so any element can be computed independently (the
// CUDA twin produces the same stream). Normals use Box-Muller evaluated in double precision and
// rounded once to float, so libm differences in the last bit of a double almost never show.
#pragma once

#include <array>
#include <cstdint>

namespace daedalus {

// One Philox4x32-10 block: 4 random words for (counter, key).
std::array<uint32_t, 4> philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key);

class Generator {
 public:
  explicit Generator(uint64_t seed) : seed_(seed) {}

  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }  // Philox blocks consumed so far (state to checkpoint)
  void set_offset(uint64_t offset) { offset_ = offset; }

  // Fills out[0..n) and advances the offset by ceil(n / 4) blocks.
  void fill_uniform(float* out, int64_t n, double low, double high);
  void fill_normal(float* out, int64_t n, double mean, double std);
  uint64_t next_u64();  // e.g. to derive per-rank or per-layer seeds

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

}  // namespace daedalus
