// Element types of a Tensor and the dispatch helpers that turn a runtime dtype into a C++ type.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "autograd/dtype_codec.h"

namespace daedalus {

// f4e2m1: FP4 E2M1 codes, one per byte (unpacked; the FP4 recipes' emulation). u8: raw bytes
// (packed FP4 pairs and E8M0 scales in the MXFP4 export).
enum class DType : uint8_t { f32, bf16, f8e4m3, f8e5m2, i32, i64, f4e2m1, u8 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);      // "fp32", "bf16", "fp8e4m3", "fp8e5m2", "int32", "int64", "fp4e2m1", "uint8"
DType parse_dtype(std::string_view name);  // inverse of dtype_name; InputError on anything else
bool is_floating(DType t);                 // fp32, bf16, the FP8 formats and FP4 E2M1
bool is_fp8(DType t);

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<bf16>() {
  return DType::bf16;
}
template <>
constexpr DType dtype_of<fp8e4m3>() {
  return DType::f8e4m3;
}
template <>
constexpr DType dtype_of<fp8e5m2>() {
  return DType::f8e5m2;
}
template <>
constexpr DType dtype_of<fp4e2m1>() {
  return DType::f4e2m1;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::u8;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::i64;
}

[[noreturn]] void throw_unsupported_dtype(std::string_view op, DType t, std::string_view accepted);

// Calls fn.template operator()<T>() for the C++ type of `t`, for the arithmetic dtypes (fp32 and
// bf16, computed in float). Anything else is an InputError naming the op and the dtype.
template <typename Fn>
decltype(auto) dispatch_float(std::string_view op, DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn.template operator()<float>();
    case DType::bf16: return fn.template operator()<bf16>();
    default: throw_unsupported_dtype(op, t, "fp32, bf16");
  }
}

// Every floating storage dtype, FP8 and FP4 included (for casts, copies and comparisons).
template <typename Fn>
decltype(auto) dispatch_storage_float(std::string_view op, DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn.template operator()<float>();
    case DType::bf16: return fn.template operator()<bf16>();
    case DType::f8e4m3: return fn.template operator()<fp8e4m3>();
    case DType::f8e5m2: return fn.template operator()<fp8e5m2>();
    case DType::f4e2m1: return fn.template operator()<fp4e2m1>();
    default: throw_unsupported_dtype(op, t, "fp32, bf16, fp8e4m3, fp8e5m2, fp4e2m1");
  }
}

// Index dtypes.
template <typename Fn>
decltype(auto) dispatch_index(std::string_view op, DType t, Fn&& fn) {
  switch (t) {
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::i64: return fn.template operator()<int64_t>();
    default: throw_unsupported_dtype(op, t, "int32, int64");
  }
}

// Every dtype (copies, fills, printing).
template <typename Fn>
decltype(auto) dispatch_all(std::string_view op, DType t, Fn&& fn) {
  switch (t) {
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::i64: return fn.template operator()<int64_t>();
    case DType::u8: return fn.template operator()<uint8_t>();
    default: return dispatch_storage_float(op, t, std::forward<Fn>(fn));
  }
}

// Value <-> double for any element type (printing, comparisons, scalar access).
template <typename T>
DAEDALUS_HD double element_to_double(T v) {
  if constexpr (std::is_integral_v<T>) {
    return double(v);
  } else {
    return double(to_float(v));
  }
}
template <typename T>
DAEDALUS_HD T element_from_double(double v) {
  if constexpr (std::is_integral_v<T>) {
    return T(v);
  } else {
    return from_float<T>(float(v));
  }
}

// One element from type S to type D: floats round to nearest even, FP8 per `overflow`,
// float -> integer truncates toward zero. The copy kernels on every device use this.
template <typename D, typename S>
DAEDALUS_HD D convert_element(S v, Fp8Overflow overflow) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_integral_v<D> || std::is_integral_v<S>) {
    return element_from_double<D>(element_to_double(v));
  } else if constexpr (std::is_same_v<D, fp8e4m3>) {
    return codec::float_to_e4m3(to_float(v), overflow);
  } else if constexpr (std::is_same_v<D, fp8e5m2>) {
    return codec::float_to_e5m2(to_float(v), overflow);
  } else if constexpr (std::is_same_v<D, fp4e2m1>) {
    return codec::float_to_e2m1(to_float(v));  // always saturating (E2M1 has no inf or NaN)
  } else {
    return from_float<D>(to_float(v));
  }
}

// Rounds a double accumulator to the storage type exactly once (nearest even), for every kernel that
// sums in double (reductions, scatter-add, embedding backward). For bf16, double -> float -> bf16
// would round twice; rounding to odd at float precision first keeps the sticky information, and
// float has 16 more significand bits than bf16, so the final nearest-even rounding is exact-once.
template <typename T>
T round_from_double(double v);

template <>
inline float round_from_double<float>(double v) {
  return float(v);
}

template <>
inline bf16 round_from_double<bf16>(double v) {
  float f = float(v);
  if (std::isfinite(f) && double(f) != v) {
    if (std::fabs(double(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);  // truncate toward zero
    f = codec::bits_float(codec::float_bits(f) | 1u);                      // inexact: make it odd
  }
  return from_float<bf16>(f);
}

}  // namespace daedalus
