// Test helpers: compare tensors against double-precision references with explained tolerances,
// ragged shapes, seeded random inputs.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/generator.h"
#include "autograd/tensor.h"

namespace daedalus::testing {

// Sizes that hit every remainder path: 1, a prime below a SIMD width, one past a power of two, ...
inline const std::vector<int64_t> kRaggedSizes = {1, 7, 65, 129, 993};

// Passes when |actual - expected| <= atol + rtol * |expected| everywhere (NaN only matches NaN).
// The failure message names the worst element, its index, both values and the error statistics.
::testing::AssertionResult all_close(const Tensor& actual, const std::vector<double>& expected, double rtol,
                                     double atol);
::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double rtol, double atol);

// Unit roundoff u = 2^-p of a dtype with p significand bits: the largest relative error of one
// round-to-nearest. fp32 2^-24, bf16 2^-8, fp8e4m3 2^-4, fp8e5m2 2^-3.
double unit_roundoff(DType dtype);

// Seeded normal tensor, and the doubles it holds (the exact inputs a reference sees).
Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::f32, double std = 1.0);

// Builds a row-major double tensor index -> flat offset helper for references.
inline int64_t flat(const Shape& shape, const std::vector<int64_t>& index) {
  int64_t off = 0;
  for (size_t i = 0; i < shape.size(); ++i) off = off * shape[i] + index[i];
  return off;
}

}  // namespace daedalus::testing
