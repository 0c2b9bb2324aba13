// Order-preserving integer keys for floating-point values, identical on host and device
// (__host__ __device__ under nvcc, integer arithmetic only).
//
//   float_order_key(a) < float_order_key(b)  <=>  a < b      for non-NaN a, b
//   -0.0 and +0.0 map to one key (they compare equal); every NaN maps to the top (above +inf).
//   index_order_key(v, j) = float_order_key(v) << 32 | (2^32 - 1 - j): distinct for distinct j, and
//   "larger key" is exactly "larger value, or equal value and lower index" — the tie rule of topk
//   and of the MoE router. Sorting such keys gives the same answer whatever the sort algorithm.
//   double_order_key is float_order_key for doubles (64-bit).
#pragma once

#include <cstdint>

#include "autograd/dtype_codec.h"

namespace daedalus::codec {

DAEDALUS_HD uint64_t double_bits(double x) {
#if defined(__CUDA_ARCH__)
  return uint64_t(__double_as_longlong(x));
#else
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

DAEDALUS_HD uint32_t float_order_key(float v) {
  if (v != v) return 0xFFFFFFFFu;  // NaN
  const uint32_t u = float_bits(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

DAEDALUS_HD uint64_t double_order_key(double v) {
  if (v != v) return ~uint64_t(0);  // NaN
  const uint64_t u = double_bits(v == 0.0 ? 0.0 : v);
  return (u & (uint64_t(1) << 63)) ? ~u : (u | (uint64_t(1) << 63));
}

DAEDALUS_HD uint64_t index_order_key(float v, int64_t j) {
  return uint64_t(float_order_key(v)) << 32 | (0xFFFFFFFFull - uint64_t(j));
}

DAEDALUS_HD int64_t index_of_order_key(uint64_t key) { return int64_t(0xFFFFFFFFull - (key & 0xFFFFFFFFull)); }

}  // namespace daedalus::codec
