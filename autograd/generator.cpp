// Philox4x32-10 and the distributions drawn from it.
#include "autograd/generator.h"

#include <cmath>

#include "autograd/kernels/strided.h"

namespace daedalus {

std::array<uint32_t, 4> philox4x32(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  std::array<uint32_t, 4> c{uint32_t(counter_lo), uint32_t(counter_lo >> 32), uint32_t(counter_hi),
                            uint32_t(counter_hi >> 32)};
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kMul0) * c[0];
    const uint64_t p1 = uint64_t(kMul1) * c[2];
    c = {uint32_t(p1 >> 32) ^ c[1] ^ k0, uint32_t(p1), uint32_t(p0 >> 32) ^ c[3] ^ k1, uint32_t(p0)};
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return c;
}

namespace {
// (0, 1]: never 0, so log() in Box-Muller is finite.
double unit_open_low(uint32_t w) { return (double(w) + 1.0) * (1.0 / 4294967296.0); }
constexpr double kTwoPi = 6.283185307179586476925286766559;
}  // namespace

void Generator::fill_uniform(float* out, int64_t n, double low, double high) {
  const uint64_t base = offset_;
  cpu::parallel_rows((n + 3) / 4, 4, [&](int64_t block) {
    const auto w = philox4x32(base + uint64_t(block), 0, seed_);
    for (int lane = 0; lane < 4 && block * 4 + lane < n; ++lane) {
      // [0, 1) from the top 24 bits: exactly representable, so low + u * (high - low) rounds once.
      const double u = double(w[size_t(lane)] >> 8) * (1.0 / 16777216.0);
      out[block * 4 + lane] = float(low + u * (high - low));
    }
  });
  offset_ += uint64_t((n + 3) / 4);
}

void Generator::fill_normal(float* out, int64_t n, double mean, double std) {
  const uint64_t base = offset_;
  cpu::parallel_rows((n + 3) / 4, 4, [&](int64_t block) {
    const auto w = philox4x32(base + uint64_t(block), 0, seed_);
    for (int pair = 0; pair < 2; ++pair) {
      const double r = std::sqrt(-2.0 * std::log(unit_open_low(w[size_t(2 * pair)])));
      const double theta = kTwoPi * unit_open_low(w[size_t(2 * pair + 1)]);
      const int64_t i = block * 4 + 2 * pair;
      if (i < n) out[i] = float(mean + std * r * std::cos(theta));
      if (i + 1 < n) out[i + 1] = float(mean + std * r * std::sin(theta));
    }
  });
  offset_ += uint64_t((n + 3) / 4);
}

uint64_t Generator::next_u64() {
  const auto w = philox4x32(offset_++, 0, seed_);
  return uint64_t(w[0]) | (uint64_t(w[1]) << 32);
}

}  // namespace daedalus
