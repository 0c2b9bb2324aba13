// Test helpers: compare tensors against double-precision references with explained tolerances,
// ragged shapes, seeded random inputs.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
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
inline constexpr double kU32 = 0x1p-24;  // fp32 unit roundoff
inline constexpr double kU16 = 0x1p-8;   // bf16 unit roundoff: 8 significant bits, 1 + 2^-8 rounds to 1

// Two GEMM results that sum the same exact products in different orders (CUDA against the CPU):
// passes when |actual - reference| <= (2k + 4)·2^-24·S + rel·|reference| element-wise, with
// S = abs_product, each element's Σ|a·b|. Each fp32 sum of k products lies within (k + 2)·u·S of
// the exact one (Higham, 3.1), hence the first term; rel covers a last rounding to a narrower
// dtype, where the two sums may straddle a boundary (one bf16 ulp <= 2^-7·|y|: rel = 2^-7).
::testing::AssertionResult gemm_sums_close(const Tensor& actual, const Tensor& reference, const Tensor& abs_product,
                                           double k, double rel = 0.0);

// Seeded normal tensor, and the doubles it holds (the exact inputs a reference sees).
Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::f32, double std = 1.0);

// [rows, cols] normal values whose magnitude changes by powers of two across rows and across
// 128-column tiles (every 1x128 / 128x128 FP8 scale differs, so a misplaced scale shows), with row 3
// all zero (amax 0 -> scale 1) when there are enough rows. fp32, then cast to `dtype`.
Tensor scaled_normal(int64_t rows, int64_t cols, uint64_t seed, DType dtype = DType::f32);

// Byte-for-byte equality of two tensors of one dtype and shape (any devices); the message names the
// first differing byte and its element.
::testing::AssertionResult bit_identical(const Tensor& actual, const Tensor& expected);

// Base fixture of the CUDA-vs-CPU tests: skips (with the reason) where CUDA is not built or no
// device is visible; `gpu` is cuda:0. scripts/gpu-check runs them on a machine with a GPU.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_built()) GTEST_SKIP() << "built without CUDA";
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible on this machine";
  }
  const Device gpu = Device::cuda(0);
};

// Builds a row-major double tensor index -> flat offset helper for references.
inline int64_t flat(const Shape& shape, const std::vector<int64_t>& index) {
  int64_t off = 0;
  for (size_t i = 0; i < shape.size(); ++i) off = off * shape[i] + index[i];
  return off;
}

}  // namespace daedalus::testing

namespace daedalus::testing {

// ---- gradient checks ----------------------------------------------------------------------------

// g[i] = (L(x + h e_i) - L(x - h e_i)) / 2h, in double: the independent check of every backward.
std::vector<double> finite_differences(const std::function<double(const std::vector<double>&)>& loss,
                                       std::vector<double> x, double h = 1e-6);
// sum_i w[i] * y[i]: a scalar loss with fixed random weights w, so dL/dy = w.
double weighted_sum(const std::vector<double>& w, const std::vector<double>& y);

// ---- inputs -------------------------------------------------------------------------------------

// [rows, cols] normal values laid out contiguously (layout 0), as a transposed view (1) or as a
// column slice (2): kernels must read any strides.
Tensor random_view(int64_t rows, int64_t cols, uint64_t seed, DType dtype, int layout, double std = 1.0);
// Rows that make accumulation order visible: the first `first` rows are +2^60, the last `first`
// rows -2^60, the rest normal. With index i % first every destination gets one giant first and
// its negation last; which small rows the giant absorbs depends on the order of the double sum,
// and the cancellation shows it in the rounded result. A thread-count-dependent order changes bits.
Tensor cancelling_sources(int64_t m, int64_t d, int64_t first, uint64_t seed, DType dtype);
// A scatter-add whose result shows the order of every row's sums: index [m] int64 of random rows
// in [0, n), src [m, d] fp32. Source s, at position p among its row's sources (in increasing s),
// holds +2^60 in column j where p == j % P, -2^60 where p == j % P + 1 (P: the longest row's source
// count - 1; d = P + 3), a normal value elsewhere. Summed in increasing s, column j of a row is
// the sum of its small values after position j % P + 1 (2^60 absorbs the old value and everything
// before), so another order (reversed, unstable) gives other bits.
struct ScatterOrderProbe {
  Tensor index, src;
};
ScatterOrderProbe scatter_order_probe(int64_t n, int64_t m, uint64_t seed);
// 0, 1, .., k-1, 0, 1, ...: m indices of `dtype`.
Tensor cyclic_index(int64_t m, int64_t k, DType dtype);
// The tensor's elements as raw bytes in row-major order (bit-exact comparisons).
std::vector<uint8_t> bytes(const Tensor& t);

// ---- files --------------------------------------------------------------------------------------

// gtest's temporary directory / "<name>-<pid>": a path of this process's own, so that concurrent
// test processes (ctest -j, several checkouts) never share a run directory. Not created.
std::string process_temp_path(const std::string& name);

// A fresh directory /tmp/daedalus_<tag>_XXXXXX, removed with everything in it at the end of the test.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const;  // path() + "/" + name
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- errors -------------------------------------------------------------------------------------

// The message of the InputError fn throws, or "<no InputError>".
std::string error_of(const std::function<void()>& fn);
// Passes when msg contains every part.
::testing::AssertionResult mentions(const std::string& msg, std::initializer_list<std::string_view> parts);
// fn must throw an InputError whose message contains every needle.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles);

}  // namespace daedalus::testing
