// GEMM (c = alpha * a·b + beta * c) against a double-precision reference on the exact inputs:
// ragged shapes, fp32 and bf16, transposed / sliced / batched / broadcast operands, accumulation,
// bf16 output, the primitive cache, and every error path.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "autograd/kernels/gemm.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using kernels::cpu_has_bf16_matmul;
using kernels::gemm;
using kernels::matmul;
using testing::all_close;
using testing::random_tensor;

// ---- the reference and its tolerance ---------------------------------------------------------
//
// The inputs are exactly representable (the reference reads the very values the kernel reads),
// so the only error is the kernel's arithmetic, all in fp32: K multiply-adds (bf16 x bf16 products
// are exact in fp32; an fp32 product rounds at most once, fused or not), then the alpha scaling
// and the beta sum: n = K + 2 roundings of at most u = 2^-24 relative each. With
//   S_ij = |alpha| * sum_k |a_ik * b_kj| + |beta * c_ij|,
// every partial sum is at most S_ij, so the worst case is |error| <= n * u * S_ij (Higham,
// "Accuracy and Stability of Numerical Algorithms", 3.1). Rounding errors of random data behave
// like independent variables, which gives the probabilistic bound lambda * sqrt(n) * u * S_ij
// (Higham & Mary 2019). We use atol = 4 * sqrt(n) * u * max_ij S_ij:
//   - for n <= 16 it is at least the worst-case bound, so it cannot fail spuriously;
//   - for larger n each rounding error is relative to a partial sum of random-sign terms, which is
//     about sqrt(k) typical terms while S is about K of them, so the actual error is a small
//     fraction of u * S, far inside 4 * sqrt(n) * u * S.
// A kernel that accumulated in bf16 (errors around 2^-8 * S) or misread a stride fails by orders
// of magnitude.
//
// A bf16 output adds one rounding of the fp32 result r to 8 significant bits: at most 2^-8 * |r|
// (tests/testing.h's unit_roundoff(bf16) says 2^-9, half of that: too tight for a tie), and
// |r| <= |expected| + atol, hence rtol = 2^-8 and atol * (1 + 2^-8).
constexpr double kLambda = 4.0;
const double kBf16Rounding = std::ldexp(1.0, -8);

struct Reference {
  std::vector<double> values;  // alpha * a·b + beta * c0, row-major over c's shape
  double atol = 0;             // the fp32 accumulation bound above
};

// a [..., M, K] (or [M, K]) · b [..., K, N] (or [K, N]) into c_shape [..., M, N]; c0 holds c's
// values before the call (read only when beta != 0).
Reference reference_gemm(const Tensor& a, const Tensor& b, const Shape& c_shape, double alpha = 1.0, double beta = 0.0,
                         const std::vector<double>& c0 = {}) {
  const size_t r = c_shape.size();
  const int64_t M = c_shape[r - 2], N = c_shape[r - 1], K = a.size(-1);
  Shape a_shape(c_shape.begin(), c_shape.end() - 2), b_shape = a_shape;
  a_shape.insert(a_shape.end(), {M, K});
  b_shape.insert(b_shape.end(), {K, N});
  const std::vector<double> A = a.expand(a_shape).to_doubles(), B = b.expand(b_shape).to_doubles();
  const int64_t batches = shape_numel(c_shape) / std::max<int64_t>(M * N, 1);

  Reference ref;
  ref.values.resize(static_cast<size_t>(shape_numel(c_shape)));
  double max_magnitude = 0;
  for (int64_t p = 0; p < batches; ++p) {
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        double sum = 0, magnitude = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double term = A[static_cast<size_t>((p * M + i) * K + k)] * B[static_cast<size_t>((p * K + k) * N + j)];
          sum += term;
          magnitude += std::fabs(term);
        }
        const size_t idx = static_cast<size_t>((p * M + i) * N + j);
        double value = alpha * sum;
        magnitude *= std::fabs(alpha);
        if (beta != 0.0) {
          value += beta * c0[idx];
          magnitude += std::fabs(beta * c0[idx]);
        }
        ref.values[idx] = value;
        max_magnitude = std::max(max_magnitude, magnitude);
      }
    }
  }
  ref.atol = kLambda * std::sqrt(double(K + 2)) * testing::unit_roundoff(DType::f32) * max_magnitude;
  return ref;
}

::testing::AssertionResult matches(const Tensor& c, const Reference& ref) {
  if (c.dtype() == DType::bf16) return all_close(c, ref.values, kBf16Rounding, ref.atol * (1 + kBf16Rounding));
  return all_close(c, ref.values, 0.0, ref.atol);
}

std::string problem_str(int64_t M, int64_t N, int64_t K, DType in) {
  return "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + " " +
         std::string(dtype_name(in));
}

// Every combination of the small ragged sizes, plus shapes with one 993-sized dim.
std::vector<std::tuple<int64_t, int64_t, int64_t>> ragged_problems() {
  std::vector<std::tuple<int64_t, int64_t, int64_t>> problems;
  std::vector<int64_t> small;
  for (int64_t s : testing::kRaggedSizes)
    if (s < 993) small.push_back(s);
  for (int64_t m : small)
    for (int64_t n : small)
      for (int64_t k : small) problems.emplace_back(m, n, k);
  problems.emplace_back(993, 65, 129);
  problems.emplace_back(7, 993, 65);
  problems.emplace_back(65, 129, 993);
  return problems;
}

int64_t cpu_allocations() { return allocator_for(Device::cpu()).stats().allocations; }

uint64_t next_seed() {
  static uint64_t seed = 1000;
  return ++seed;
}

// ---- results ------------------------------------------------------------------------------------

void check_ragged(DType in, DType out) {
  for (auto [M, N, K] : ragged_problems()) {
    const Tensor a = random_tensor({M, K}, next_seed(), in), b = random_tensor({K, N}, next_seed(), in);
    const Tensor c = matmul(a, b, out);
    ASSERT_EQ(c.shape(), (Shape{M, N}));
    ASSERT_EQ(c.dtype(), out);
    EXPECT_TRUE(matches(c, reference_gemm(a, b, {M, N}))) << problem_str(M, N, K, in);
  }
}

TEST(Gemm, Fp32RaggedShapes) { check_ragged(DType::f32, DType::f32); }

TEST(Gemm, Bf16RaggedShapesAccumulateInFp32) { check_ragged(DType::bf16, DType::f32); }

TEST(Gemm, Bf16OutputIsRoundedOnce) {
  check_ragged(DType::bf16, DType::bf16);
  // fp32 inputs with a bf16 output (oneDNN has no such matmul: an fp32 temporary, then one rounding).
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{65, 7, 993}, {129, 65, 7}}) {
    const Tensor a = random_tensor({M, K}, next_seed()), b = random_tensor({K, N}, next_seed());
    EXPECT_TRUE(matches(matmul(a, b, DType::bf16), reference_gemm(a, b, {M, N}))) << problem_str(M, N, K, DType::f32);
  }
}

TEST(Gemm, TransposedAndSlicedOperandsAreReadInPlace) {
  const int64_t M = 65, N = 129, K = 33;
  for (DType dt : {DType::f32, DType::bf16}) {
    const Tensor a = random_tensor({M, K}, next_seed(), dt), b = random_tensor({K, N}, next_seed(), dt);
    const Tensor at = random_tensor({K, M}, next_seed(), dt).t();                      // column-major a
    const Tensor bt = random_tensor({N, K}, next_seed(), dt).t();                      // column-major b (x·Wᵀ)
    const Tensor as = random_tensor({M, K + 10}, next_seed(), dt).slice(1, 3, 3 + K);  // row stride K + 10
    const Tensor bs = random_tensor({K + 5, N + 9}, next_seed(), dt).slice(0, 2, 2 + K).slice(1, 4, 4 + N);
    const Tensor ats = random_tensor({K + 3, M + 2}, next_seed(), dt).slice(0, 1, 1 + K).slice(1, 2, 2 + M).t();
    const std::vector<std::tuple<std::string, Tensor, Tensor>> cases = {
        {"a transposed", at, b}, {"b transposed", a, bt}, {"both transposed", at, bt},
        {"a sliced", as, b},     {"b sliced", a, bs},     {"a sliced and transposed", ats, bs},
    };
    for (const auto& [what, x, y] : cases) {
      ASSERT_FALSE(x.is_contiguous() && y.is_contiguous()) << what;
      Tensor c = Tensor::empty({M, N});
      gemm(x, y, c);  // first call builds the primitive
      const int64_t before = cpu_allocations();
      gemm(x, y, c);
      if (dt == DType::f32 || cpu_has_bf16_matmul()) {  // without a BF16 matmul, BF16 operands are widened
        EXPECT_EQ(cpu_allocations(), before) << what << ": an operand was copied";
      }
      EXPECT_TRUE(matches(c, reference_gemm(x, y, {M, N}))) << what << " " << dtype_name(dt);
    }
  }
}

TEST(Gemm, OperandsWithoutAUnitStrideAreCopiedAndCorrect) {
  const int64_t M = 7, N = 65, K = 129;
  const Tensor a = random_tensor({M, 2 * K}, next_seed()).slice(1, 0, 2 * K, 2);  // every other column
  const Tensor b = random_tensor({K, 1}, next_seed()).expand({K, N});             // stride-0 columns
  Tensor c = Tensor::empty({M, N});
  gemm(a, b, c);
  EXPECT_TRUE(matches(c, reference_gemm(a, b, {M, N})));
}

TEST(Gemm, StridedOutputIsWrittenInPlaceAndLeavesTheRestAlone) {
  const int64_t M = 65, N = 7, K = 129;
  const Tensor a = random_tensor({M, K}, next_seed()), b = random_tensor({K, N}, next_seed());
  for (bool transposed : {false, true}) {
    // c: a column slice of a wider buffer (row-major with a leading dimension), or a transposed view.
    Tensor buffer = transposed ? random_tensor({N, M}, next_seed()) : random_tensor({M, N + 5}, next_seed());
    const std::vector<double> buffer_before = buffer.to_doubles();
    Tensor c = transposed ? buffer.t() : buffer.slice(1, 2, 2 + N);
    const std::vector<double> c0 = c.to_doubles();
    gemm(a, b, c, /*alpha=*/0.5, /*beta=*/1.0);
    EXPECT_TRUE(matches(c, reference_gemm(a, b, {M, N}, 0.5, 1.0, c0))) << "transposed=" << transposed;
    if (!transposed) {  // the columns outside the slice are untouched
      const std::vector<double> after = buffer.to_doubles();
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j : {0, 1, 2 + int(N), 3 + int(N), 4 + int(N)}) {
          const size_t idx = static_cast<size_t>(i * (N + 5) + j);
          ASSERT_EQ(after[idx], buffer_before[idx]) << "row " << i << " column " << j;
        }
    }
  }
}

TEST(Gemm, BatchedAndBroadcastBatch) {
  const int64_t B = 3, M = 65, N = 7, K = 129;
  for (DType dt : {DType::f32, DType::bf16}) {
    auto rnd = [&](const Shape& s) { return random_tensor(s, next_seed(), dt); };
    const std::vector<std::tuple<std::string, Tensor, Tensor>> cases = {
        {"[B,M,K]x[B,K,N]", rnd({B, M, K}), rnd({B, K, N})},
        {"[B,M,K]x[K,N]", rnd({B, M, K}), rnd({K, N})},
        {"[M,K]x[B,K,N]", rnd({M, K}), rnd({B, K, N})},
        {"[2,B,M,K]x[K,N]", rnd({2, B, M, K}), rnd({K, N})},
        {"[2,B,M,K]x[2,B,K,N]", rnd({2, B, M, K}), rnd({2, B, K, N})},
        {"[M,K]x[2,B,K,N] transposed b", rnd({M, K}), rnd({2, B, N, K}).transpose(-1, -2)},
        {"a with batch inside the rows", rnd({M, B, K}).permute({1, 0, 2}), rnd({B, K, N})},
        {"b expanded over the batch", rnd({B, M, K}), rnd({K, N}).unsqueeze(0).expand({B, K, N})},
        {"sliced batch of a", rnd({2 * B, M, K}).slice(0, 1, 2 * B, 2), rnd({B, K, N})},
    };
    for (const auto& [what, x, y] : cases) {
      const Tensor c = matmul(x, y);
      Shape expected = x.dim() >= y.dim() ? x.shape() : y.shape();
      expected[expected.size() - 2] = M;
      expected[expected.size() - 1] = N;
      ASSERT_EQ(c.shape(), expected) << what;
      EXPECT_TRUE(matches(c, reference_gemm(x, y, expected))) << what << " " << dtype_name(dt);
    }
  }
}

TEST(Gemm, AlphaAndBetaAccumulateIntoC) {
  const int64_t M = 129, N = 65, K = 993;
  for (DType in : {DType::f32, DType::bf16}) {
    for (DType out : {DType::f32, DType::bf16}) {
      const Tensor a = random_tensor({M, K}, next_seed(), in), b = random_tensor({K, N}, next_seed(), in);
      for (auto [alpha, beta] : {std::pair{1.0, 1.0}, {0.5, 1.0}, {-2.0, 0.25}}) {
        Tensor c = random_tensor({M, N}, next_seed(), out, /*std=*/10.0);
        const std::vector<double> c0 = c.to_doubles();
        gemm(a, b, c, alpha, beta);
        EXPECT_TRUE(matches(c, reference_gemm(a, b, {M, N}, alpha, beta, c0)))
            << dtype_name(in) << " -> " << dtype_name(out) << " alpha=" << alpha << " beta=" << beta;
      }
    }
  }
}

TEST(Gemm, BetaZeroNeverReadsC) {
  const int64_t M = 7, N = 129, K = 65;
  for (DType in : {DType::f32, DType::bf16}) {
    for (DType out : {DType::f32, DType::bf16}) {
      const Tensor a = random_tensor({M, K}, next_seed(), in), b = random_tensor({K, N}, next_seed(), in);
      Tensor c = Tensor::full({M, N}, std::numeric_limits<double>::quiet_NaN(), out);
      gemm(a, b, c, /*alpha=*/1.5, /*beta=*/0.0);
      EXPECT_TRUE(matches(c, reference_gemm(a, b, {M, N}, 1.5))) << dtype_name(in) << " -> " << dtype_name(out);
    }
  }
}

TEST(Gemm, CachedPrimitivesKeepAlphaAndBetaApart) {
  // Same shapes and strides each time; only alpha / beta change, which the cache key must see.
  const int64_t M = 65, N = 65, K = 65;
  const Tensor a = random_tensor({M, K}, next_seed()), b = random_tensor({K, N}, next_seed());
  for (auto [alpha, beta] : {std::pair{1.0, 0.0}, {3.0, 0.0}, {1.0, 0.0}, {3.0, 2.0}, {3.0, 0.0}}) {
    Tensor c = random_tensor({M, N}, next_seed());
    const std::vector<double> c0 = c.to_doubles();
    gemm(a, b, c, alpha, beta);
    EXPECT_TRUE(matches(c, reference_gemm(a, b, {M, N}, alpha, beta, c0))) << "alpha=" << alpha << " beta=" << beta;
  }
}

TEST(Gemm, EmptyInnerOrOuterDimensions) {
  // K = 0: an empty sum, so c = beta * c (and zeros when beta = 0, whatever c held).
  Tensor c = Tensor::full({3, 4}, std::numeric_limits<double>::quiet_NaN());
  gemm(Tensor::empty({3, 0}), Tensor::empty({0, 4}), c);
  EXPECT_TRUE(all_close(c, std::vector<double>(12, 0.0), 0, 0));
  c.fill_(2.0);
  gemm(Tensor::empty({3, 0}), Tensor::empty({0, 4}), c, /*alpha=*/1.0, /*beta=*/0.5);
  EXPECT_TRUE(all_close(c, std::vector<double>(12, 1.0), 0, 0));
  // M = 0 or a zero batch: nothing to compute.
  EXPECT_EQ(matmul(Tensor::empty({0, 5}), Tensor::ones({5, 4})).shape(), (Shape{0, 4}));
  EXPECT_EQ(matmul(Tensor::empty({0, 2, 5}), Tensor::ones({5, 4})).shape(), (Shape{0, 2, 4}));
}

TEST(Gemm, ConcurrentCallersGetTheirOwnResults) {
  // Threads share cached primitives (same and different shapes) and run them at the same time, each
  // on its own stream and scratchpad. With oneDNN's default (library-wide) scratchpad this failed in
  // about 9 runs out of 10; every result of every repeat is checked, not just the last.
  constexpr int kThreads = 4, kRepeats = 20;
  std::vector<Tensor> as, bs;
  std::vector<Reference> refs;
  for (int t = 0; t < kThreads; ++t) {
    const int64_t M = 65, N = t % 2 ? 7 : 129, K = 129;
    as.push_back(random_tensor({M, K}, next_seed()));
    bs.push_back(random_tensor({K, N}, next_seed()));
    refs.push_back(reference_gemm(as.back(), bs.back(), {M, N}));
  }
  std::vector<int> failures(kThreads, 0);
  std::vector<std::string> first_failure(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      const size_t i = static_cast<size_t>(t);
      for (int repeat = 0; repeat < kRepeats; ++repeat) {
        const Tensor c = matmul(as[i], bs[i]);
        if (const ::testing::AssertionResult ok = matches(c, refs[i]); !ok && failures[i]++ == 0)
          first_failure[i] = ok.message();
      }
    });
  for (std::thread& thread : threads) thread.join();
  for (size_t t = 0; t < kThreads; ++t)
    EXPECT_EQ(failures[t], 0) << "thread " << t << " got " << failures[t] << " of " << kRepeats
                              << " results wrong; first: " << first_failure[t];
}

// ---- errors ------------------------------------------------------------------------------------

void expect_input_error(const std::function<void()>& call, const std::vector<std::string>& fragments) {
  try {
    call();
    ADD_FAILURE() << "no InputError; expected one mentioning " << fragments.front();
  } catch (const InputError& e) {
    const std::string message = e.what();
    for (const std::string& f : fragments)
      EXPECT_NE(message.find(f), std::string::npos) << message << "\nmissing: " << f;
  }
}

TEST(Gemm, ErrorsNameTheOpAndBothShapes) {
  const Tensor a34 = Tensor::zeros({3, 4}), b46 = Tensor::zeros({4, 6}), c36 = Tensor::zeros({3, 6});
  expect_input_error(
      [&] {
        gemm(a34, Tensor::zeros({5, 6}), Tensor::zeros({3, 6}));
      },
      {"gemm: a [3, 4] and b [5, 6]: inner dimensions 4 and 5 differ"});
  expect_input_error(
      [&] {
        gemm(Tensor::zeros({2, 3, 4}), Tensor::zeros({5, 4, 6}), Tensor::zeros({2, 3, 6}));
      },
      {"gemm: a [2, 3, 4] and b [5, 4, 6]: batch dimensions [2] and [5] differ"});
  expect_input_error(
      [&] {
        gemm(a34, b46, Tensor::zeros({3, 7}));
      },
      {"gemm: c [3, 7] does not match a [3, 4] · b [4, 6] (expected [3, 6])"});
  expect_input_error([&] { gemm(a34, b46, Tensor::zeros({2, 3, 6})); }, {"gemm", "c [2, 3, 6]", "[3, 4]", "[4, 6]"});
  expect_input_error([&] { gemm(Tensor::zeros({4}), b46, c36); }, {"gemm: a [4] and b [4, 6]", "at least 2-d"});
  expect_input_error(
      [&] {
        gemm(a34, Tensor::zeros({4, 6}, DType::bf16), c36);
      },
      {"gemm", "fp32[3, 4]", "bf16[4, 6]", "dtypes fp32 and bf16 differ"});
  expect_input_error(
      [&] {
        gemm(Tensor::zeros({3, 4}, DType::i32), Tensor::zeros({4, 6}, DType::i32), c36);
      },
      {"gemm", "int32[3, 4]", "int32[4, 6]", "unsupported dtype int32"});
  expect_input_error(
      [&] {
        gemm(Tensor::zeros({3, 4}, DType::f8e4m3), Tensor::zeros({4, 6}, DType::f8e4m3), c36);
      },
      {"gemm", "fp8e4m3[3, 4]", "fp8e4m3[4, 6]", "FP8", "fp8/"});
  expect_input_error(
      [&] {
        gemm(a34, Tensor::zeros({4, 6}, DType::f8e5m2), c36);
      },
      {"gemm", "[3, 4]", "fp8e5m2[4, 6]", "FP8"});
  expect_input_error(
      [&] {
        gemm(a34, b46, Tensor::zeros({3, 6}, DType::i64));
      },
      {"gemm", "[3, 4]", "[4, 6]", "unsupported output dtype int64"});
  expect_input_error([&] { gemm(a34, b46, Tensor()); }, {"gemm", "undefined"});
  const Shape ones(11, 1);  // 13-d: one more than oneDNN's 12
  Shape a13 = ones, b13 = ones;
  a13.insert(a13.end(), {3, 4});
  b13.insert(b13.end(), {4, 6});
  expect_input_error([&] { matmul(Tensor::zeros(a13), Tensor::zeros(b13)); },
                     {"gemm", shape_str(a13), shape_str(b13), "at most 12 dims"});
  // matmul reports under its own name.
  expect_input_error(
      [&] {
        matmul(a34, Tensor::zeros({5, 6}));
      },
      {"matmul: a [3, 4] and b [5, 6]: inner dimensions 4 and 5 differ"});
  expect_input_error([&] { matmul(a34, b46, DType::f8e4m3); },
                     {"matmul", "[3, 4]", "[4, 6]", "unsupported output dtype fp8e4m3"});
}

}  // namespace
}  // namespace daedalus
