// The CUDA math kernels (reduce, gather/scatter_add_rows, index range check, topk, cuBLASLt gemm,
// the grouped cuBLAS GEMM)
// against their CPU twins on ragged shapes, strided views, NaN and ties. Skips with a reason on
// machines without a CUDA device; scripts/gpu-check runs it on one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "autograd/device_checks.h"
#include "autograd/kernels/copy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/gemm.h"
#include "autograd/kernels/grouped_gemm.h"
#include "autograd/kernels/index.h"
#include "autograd/kernels/reduce.h"
#include "autograd/kernels/topk.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::all_close;
using testing::bytes;
using testing::random_tensor;

class CudaMath : public testing::CudaTest {};

Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

// One view applied to a tensor and to its GPU copy.
using View = std::function<Tensor(const Tensor&)>;

// ---- reductions ---------------------------------------------------------------------------------

// Sums and means: both devices accumulate in double and round once, in different orders, so the
// double sums differ by at most 2·n·2^-53·sum|x| (far below an output ulp for these sizes) and the
// rounded results by at most one ulp of the output: rtol = 2u (one ulp is <= 2u relative), plus an
// atol of 1e-9 for the cancellation case where the sum is near 0. max and amax are exact: tolerance 0.
double sum_rtol(DType d) { return 2.0 * testing::unit_roundoff(d); }
constexpr double kSumAtol = 1e-9;

void expect_reductions_match(const Tensor& x, const Tensor& xg, const std::string& what) {
  for (int dim = -x.dim(); dim < x.dim(); ++dim) {
    const std::string where = what + " dim " + std::to_string(dim);
    const double rtol = sum_rtol(x.dtype());
    EXPECT_TRUE(all_close(host(kernels::sum(xg, dim)), kernels::sum(x, dim), rtol, kSumAtol)) << where;
    EXPECT_TRUE(all_close(host(kernels::mean(xg, dim, /*keepdim=*/true)), kernels::mean(x, dim, /*keepdim=*/true), rtol,
                          kSumAtol))
        << where;
    if (x.size(dim) > 0) {
      EXPECT_TRUE(all_close(host(kernels::max(xg, dim)), kernels::max(x, dim), 0, 0)) << where;
    }
    EXPECT_TRUE(all_close(host(kernels::amax(xg, dim)), kernels::amax(x, dim), 0, 0)) << where;
  }
  EXPECT_TRUE(all_close(host(kernels::sum_all(xg)), kernels::sum_all(x), sum_rtol(DType::f32), kSumAtol)) << what;
  EXPECT_TRUE(all_close(host(kernels::amax_all(xg)), kernels::amax_all(x), 0, 0)) << what;
}

TEST_F(CudaMath, ReductionsMatchCpuOnRaggedShapesAndViews) {
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : testing::kRaggedSizes) {
      const Tensor x = random_tensor({3, n, 5}, 100 + uint64_t(n), d, 3.0);
      const Tensor xg = x.to(gpu);
      const std::string what = std::string(dtype_name(d)) + " n=" + std::to_string(n);
      expect_reductions_match(x, xg, what);
      // Views: a transpose (read in memory order), a permutation that needs a copy, a strided slice.
      expect_reductions_match(x.transpose(0, 2), xg.transpose(0, 2), what + " transposed");
      expect_reductions_match(x.permute({1, 0, 2}), xg.permute({1, 0, 2}), what + " permuted");
      expect_reductions_match(x.slice(2, 1, 5, 2), xg.slice(2, 1, 5, 2), what + " sliced");
      // sum_to_shape: leading dims and size-1 dims summed together.
      for (const Shape& to : {Shape{5}, Shape{n, 1}, Shape{1, n, 5}, Shape{3, 1, 1}}) {
        EXPECT_TRUE(all_close(host(kernels::sum_to_shape(xg, to)), kernels::sum_to_shape(x, to), sum_rtol(d), kSumAtol))
            << what << " to " << shape_str(to);
      }
    }
  }
}

TEST_F(CudaMath, ReductionsOverLongExtentsUseSeveralChunksAndAreDeterministic) {
  // Rows of 100003 elements (inner == 1) and columns of 20011 (inner == 3) span several chunks of
  // the GPU kernel, so the partial pass and the warp-tree combine run; 2^22 elements for sum_all.
  for (DType d : {DType::f32, DType::bf16}) {
    const Tensor rows = random_tensor({2, 100003}, 7, d), cols = random_tensor({2, 20011, 3}, 8, d);
    const Tensor big = random_tensor({int64_t(1) << 22}, 9, d);
    for (const Tensor* x : {&rows, &cols, &big}) {
      const Tensor xg = x->to(gpu);
      expect_reductions_match(*x, xg, std::string(dtype_name(d)) + " " + shape_str(x->shape()));
      // The same bits on every run (fixed reduction tree, no atomics).
      EXPECT_EQ(bytes(kernels::sum(xg, -1)), bytes(kernels::sum(xg, -1)));
      EXPECT_EQ(bytes(kernels::sum_all(xg)), bytes(kernels::sum_all(xg)));
    }
  }
}

TEST_F(CudaMath, MaxAndAmaxPropagateNanAndHandleInfinities) {
  for (DType d : {DType::f32, DType::bf16}) {
    for (int64_t n : {int64_t(7), int64_t(993), int64_t(100003)}) {
      std::vector<double> v = random_tensor({4, n}, 50 + uint64_t(n)).to_doubles();
      v[size_t(0 * n + n / 2)] = std::numeric_limits<double>::quiet_NaN();  // row 0: NaN mid-row
      v[size_t(1 * n + n - 1)] = std::numeric_limits<double>::quiet_NaN();  // row 1: NaN last
      v[size_t(2 * n)] = -std::numeric_limits<double>::infinity();          // row 2: -inf (amax inf)
      v[size_t(3 * n)] = std::numeric_limits<double>::infinity();           // row 3: +inf
      const Tensor x = Tensor::from_values(v, {4, n}, d), xg = x.to(gpu);
      for (int dim : {0, 1}) {
        EXPECT_TRUE(all_close(host(kernels::max(xg, dim)), kernels::max(x, dim), 0, 0)) << n << " dim " << dim;
        EXPECT_TRUE(all_close(host(kernels::amax(xg, dim)), kernels::amax(x, dim), 0, 0)) << n << " dim " << dim;
      }
      const Tensor m = host(kernels::max(xg, 1));
      EXPECT_TRUE(std::isnan(m.to_doubles()[0]) && std::isnan(m.to_doubles()[1]));  // the test can fail
      EXPECT_TRUE(std::isnan(host(kernels::amax_all(xg)).item()));
      EXPECT_TRUE(std::isnan(host(kernels::sum(xg, 1)).to_doubles()[0]));
    }
  }
}

TEST_F(CudaMath, ReductionsOfEmptyDims) {
  const Tensor x = Tensor::empty({3, 0}, DType::f32), xg = x.to(gpu);
  EXPECT_TRUE(all_close(host(kernels::sum(xg, 1)), kernels::sum(x, 1), 0, 0));    // 0
  EXPECT_TRUE(all_close(host(kernels::mean(xg, 1)), kernels::mean(x, 1), 0, 0));  // NaN
  EXPECT_TRUE(all_close(host(kernels::amax(xg, 1)), kernels::amax(x, 1), 0, 0));  // 0
  EXPECT_EQ(host(kernels::sum_all(xg)).item(), 0.0);
  EXPECT_EQ(kernels::sum(xg, 0).numel(), 0);
}

// ---- gather / scatter-add -----------------------------------------------------------------------

TEST_F(CudaMath, GatherRowsIsAnExactCopyForEveryDtypeAndView) {
  for (int64_t d : testing::kRaggedSizes) {
    for (DType index_dtype : {DType::i32, DType::i64}) {
      // Repeats, the last row, rows left out.
      const Tensor index = Tensor::from_values({4, 0, 36, 4, 17, 4, 2}, {7}, index_dtype);
      const Tensor ig = index.to(gpu);
      for (DType dtype : {DType::f32, DType::bf16, DType::f8e4m3, DType::i64}) {
        for (int layout : {0, 1, 2}) {  // plain, transposed view, column slice
          const Shape base_shape = layout == 0 ? Shape{37, d} : layout == 1 ? Shape{d, 37} : Shape{37, d + 3};
          const Tensor base = random_tensor(base_shape, 200 + uint64_t(d), DType::f32, 4.0).to(dtype);
          const View view = [&](const Tensor& t) {
            return layout == 0 ? t : layout == 1 ? t.t() : t.slice(1, 2, d + 2);
          };
          const Tensor got = kernels::gather_rows(view(base.to(gpu)), ig);
          EXPECT_EQ(got.device(), gpu);
          EXPECT_EQ(bytes(got), bytes(kernels::gather_rows(view(base), index)))
              << dtype_name(dtype) << " layout " << layout << " d=" << d;
        }
      }
    }
  }
}

// CUDA index checks are deferred (autograd/device_checks.h): the error surfaces at the next
// synchronize() or device-to-host copy, with the CPU check's message.
TEST_F(CudaMath, IndexRangeErrorsMatchCpu) {
  const Tensor x = random_tensor({10, 4}, 1).to(gpu);
  for (DType index_dtype : {DType::i32, DType::i64}) {
    const Tensor too_big = Tensor::from_values({0, 9, 1, 10, 11}, {5}, index_dtype).to(gpu);
    const Tensor negative = Tensor::from_values({0, -3, 99}, {3}, index_dtype).to(gpu);
    testing::expect_error(
        [&] {
          kernels::gather_rows(x, too_big);
          synchronize(gpu);
        },
        {"gather_rows", "index[3] = 10", "[0, 10)", "[10, 4]"});
    testing::expect_error(
        [&] {
          kernels::gather_rows(x, negative);
          synchronize(gpu);
        },
        {"gather_rows", "index[1] = -3", "[0, 10)"});
    // Any shape and strides: the first bad element in row-major order of the (transposed) view.
    const Tensor grid = Tensor::from_values({0, 1, 2, 3, 70000, 5}, {2, 3}, index_dtype).to(gpu).t();
    testing::expect_error(
        [&] {
          kernels::check_index_range("embedding", grid, "ids", 32000, "vocab 32000");
          synchronize(gpu);
        },
        {"embedding: ids[1, 1] = 70000 is out of range [0, 32000) (vocab 32000)"});
    kernels::check_index_range("embedding", grid, "ids", 70001, "vocab 70001");  // in range: no error
    synchronize(gpu);
    // scatter_add_rows defers its check too, and meanwhile adds only the in-range sources.
    const Tensor src = random_tensor({5, 4}, 2);
    const Tensor dst = Tensor::zeros({10, 4}, DType::f32, gpu);
    testing::expect_error(
        [&] {
          kernels::scatter_add_rows(dst, too_big, src.to(gpu));
          synchronize(gpu);
        },
        {"scatter_add_rows", "index[3] = 10", "[0, 10)", "dst [10, 4]"});
    Tensor want = Tensor::zeros({10, 4});
    kernels::scatter_add_rows(want, too_big.to(Device::cpu()).slice(0, 0, 3), src.slice(0, 0, 3));
    EXPECT_EQ(bytes(dst.to(Device::cpu())), bytes(want)) << "only index[0..3) is in range";
  }
}

TEST_F(CudaMath, DeferredIndexErrorSurfacesAtTheNextSyncThenClears) {
  const Tensor xh = random_tensor({10, 4}, 3);
  const Tensor x = xh.to(gpu);
  const Tensor bad = Tensor::from_values({2, 10, 0}, {3}, DType::i64).to(gpu);
  const Tensor good = Tensor::from_values({2, 9, 0}, {3}, DType::i64).to(gpu);

  // The call returns; the error waits for a synchronization point.
  Tensor out;
  EXPECT_NO_THROW(out = kernels::gather_rows(x, bad));
  testing::expect_error([&] { synchronize(gpu); }, {"gather_rows: index[1] = 10 is out of range [0, 10) (x [10, 4])"});
  // Reported once: the record and the table were cleared, so the same point is clean now.
  EXPECT_NO_THROW(synchronize(gpu));
  // Nothing was read out of bounds: the bad row is zeros, the others are x's rows.
  const Tensor got = host(out);
  EXPECT_EQ(bytes(got.slice(0, 0, 1)), bytes(xh.slice(0, 2, 3)));
  EXPECT_TRUE(all_close(got.slice(0, 1, 2), std::vector<double>(4, 0.0), 0, 0));
  EXPECT_EQ(bytes(got.slice(0, 2, 3)), bytes(xh.slice(0, 0, 1)));

  // A device-to-host copy is a synchronization point too (here of the gather's own output).
  testing::expect_error([&] { host(kernels::gather_rows(x, bad)); }, {"gather_rows", "index[1] = 10"});
  // Later calls succeed and are right.
  EXPECT_EQ(bytes(host(kernels::gather_rows(x, good))), bytes(kernels::gather_rows(xh, good.to(Device::cpu()))));

  // Several failing checks before one synchronization: the earliest queued one is reported.
  kernels::gather_rows(x, good);
  kernels::check_index_range("first_op", bad, "ids", 10, "first");
  kernels::check_index_range("second_op", Tensor::from_values({-1}, {1}, DType::i32).to(gpu), "ids", 10, "second");
  testing::expect_error([&] { synchronize(gpu); }, {"first_op: ids[1] = 10", "(first)"});
  EXPECT_NO_THROW(synchronize(gpu));

  // More checks than the host's table holds between two synchronizations: the table is drained by
  // a synchronization when full, and a violation after that is still found and named.
  for (uint32_t i = 0; i < PendingDeviceChecks::kCapacity + 5; ++i)
    kernels::check_index_range("many", good, "index", 10, "x");
  kernels::check_index_range("late", bad, "index", 10, "x");
  testing::expect_error([&] { synchronize(gpu); }, {"late: index[1] = 10"});
  EXPECT_NO_THROW(synchronize(gpu));
}

// Scatter-add on the GPU accumulates each destination row in double over its sources in increasing
// order and rounds once, like the CPU: results are compared bit for bit (tolerance 0), and the
// cancelling sources (+2^60 first, -2^60 last) make any other order visible in the bits.
TEST_F(CudaMath, ScatterAddRowsIsBitIdenticalToCpu) {
  for (int64_t d : testing::kRaggedSizes) {
    for (DType dst_dtype : {DType::f32, DType::bf16}) {
      for (DType src_dtype : {DType::f32, DType::bf16}) {
        for (bool weighted : {false, true}) {
          for (bool strided_dst : {false, true}) {
            const int64_t n = 23, m = 40;
            // Rows 0..7 each get 5 sources; rows 8..22 get none and must stay bit-for-bit untouched.
            const Tensor index = testing::cyclic_index(m, 8, DType::i64);
            const Tensor src = testing::cancelling_sources(m, d, 8, 300 + uint64_t(d), src_dtype);
            const Tensor weight = random_tensor({m}, 301 + uint64_t(d), DType::f32);
            const Tensor init = random_tensor({n, d}, 302 + uint64_t(d), dst_dtype);
            // The destination as a view: a transposed [d, n] buffer seen as [n, d].
            const Tensor dst_cpu = strided_dst ? init.t().contiguous().t() : init.clone();
            const Tensor dst_gpu = strided_dst ? init.to(gpu).t().contiguous().t() : init.to(gpu).clone();
            if (weighted) {
              kernels::scatter_add_rows(dst_cpu, index, src, weight);
              kernels::scatter_add_rows(dst_gpu, index.to(gpu), src.to(gpu), weight.to(gpu));
            } else {
              kernels::scatter_add_rows(dst_cpu, index, src);
              kernels::scatter_add_rows(dst_gpu, index.to(gpu), src.to(gpu));
            }
            const std::string what = std::string(dtype_name(dst_dtype)) + "+=" + std::string(dtype_name(src_dtype)) +
                                     (weighted ? " weighted" : "") + (strided_dst ? " strided" : "") +
                                     " d=" + std::to_string(d);
            EXPECT_EQ(bytes(dst_gpu), bytes(dst_cpu)) << what;
            EXPECT_EQ(bytes(dst_gpu.slice(0, 8, n)), bytes(init.slice(0, 8, n))) << what << ": untouched rows";
            EXPECT_NE(bytes(dst_gpu.slice(0, 0, 8)), bytes(init.slice(0, 0, 8))) << what << ": touched rows";
          }
        }
      }
    }
  }
}

// The device plan on an MoE combine's shape: many sources per row in random order and rows without
// sources — each row gets exactly its own sources, and the others stay untouched. (The sums of
// exact double products hardly depend on their order; the next test checks the order.)
TEST_F(CudaMath, ScatterAddRowsRandomIndexIsBitIdenticalToCpu) {
  const int64_t n = 3000, m = 24000, d = 67;
  std::vector<int64_t> rows(static_cast<size_t>(m));
  Generator gen(11);
  for (int64_t& r : rows) r = int64_t(gen.next_u64() % uint64_t(n - 100));  // rows >= n - 100 get nothing
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (DType index_dtype : {DType::i32, DType::i64}) {
      const Tensor index = index_dtype == DType::i64
                               ? Tensor::from_vector(rows, {m})
                               : Tensor::from_vector(std::vector<int32_t>(rows.begin(), rows.end()), {m});
      const Tensor src = random_tensor({m, d}, 12, dtype), weight = random_tensor({m}, 13);
      const Tensor init = random_tensor({n, d}, 14, dtype);
      Tensor a = init.clone(), b = init.to(gpu);
      kernels::scatter_add_rows(a, index, src, weight);
      kernels::scatter_add_rows(b, index.to(gpu), src.to(gpu), weight.to(gpu));
      EXPECT_EQ(bytes(b), bytes(a)) << dtype_name(dtype) << " index " << dtype_name(index_dtype);
    }
  }
}

// The order of each row's sums (testing::scatter_order_probe: another order gives other bits;
// ScatterAddRows.ProbeSeesTheOrderOfTheSums checks that on the CPU).
TEST_F(CudaMath, ScatterAddRowsSumsEachRowInIncreasingSourceOrder) {
  const testing::ScatterOrderProbe probe = testing::scatter_order_probe(300, 2400, 21);
  const int64_t n = 300, m = probe.src.size(0), d = probe.src.size(1);
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (bool weighted : {false, true}) {
      const Tensor init = random_tensor({n, d}, 23, dtype), ones = Tensor::ones({m});
      Tensor a = init.clone(), b = init.to(gpu);
      if (weighted) {
        kernels::scatter_add_rows(a, probe.index, probe.src, ones);
        kernels::scatter_add_rows(b, probe.index.to(gpu), probe.src.to(gpu), ones.to(gpu));
      } else {
        kernels::scatter_add_rows(a, probe.index, probe.src);
        kernels::scatter_add_rows(b, probe.index.to(gpu), probe.src.to(gpu));
      }
      EXPECT_EQ(bytes(b), bytes(a)) << dtype_name(dtype) << (weighted ? " weighted" : "");
    }
  }
}

TEST_F(CudaMath, ScatterAddRowsWithInt32IndexAndAnEmptyIndex) {
  const Tensor index = Tensor::from_values({3, 3, 0, 3}, {4}, DType::i32);
  const Tensor src = random_tensor({4, 129}, 5), init = random_tensor({5, 129}, 6);
  Tensor a = init.clone(), b = init.to(gpu);
  kernels::scatter_add_rows(a, index, src);
  kernels::scatter_add_rows(b, index.to(gpu), src.to(gpu));
  EXPECT_EQ(bytes(b), bytes(a));
  kernels::scatter_add_rows(b, Tensor::empty({0}, DType::i64, gpu), Tensor::empty({0, 129}, DType::f32, gpu));
  EXPECT_EQ(bytes(b), bytes(a));
}

// ---- topk -------------------------------------------------------------------------------------

// Values drawn from a handful of levels (many ties), with NaN, +-inf and both zeros sprinkled in.
Tensor tie_heavy(int64_t rows, int64_t n, uint64_t seed, DType d) {
  std::vector<double> v = random_tensor({rows, n}, seed).to_doubles();
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = std::round(v[i] * 2.0) / 2.0;  // levels 0.5 apart: ties everywhere
    if (i % 11 == 3) v[i] = std::numeric_limits<double>::quiet_NaN();
    if (i % 13 == 5) v[i] = (i % 2) ? -0.0 : 0.0;
    if (i % 17 == 7)
      v[i] = (i % 2) ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  }
  return Tensor::from_values(v, {rows, n}, d);
}

// The GPU must give the CPU's exact answer: same values (same bits, so -0.0 stays -0.0), same indices.
void expect_topk_matches(const Tensor& x, const Tensor& xg, int64_t k, const std::string& what) {
  const kernels::TopK cpu = kernels::topk(x, k), gpu_out = kernels::topk(xg, k);
  EXPECT_EQ(bytes(gpu_out.indices), bytes(cpu.indices)) << what << " k=" << k;
  EXPECT_EQ(bytes(gpu_out.values), bytes(cpu.values)) << what << " k=" << k;
}

TEST_F(CudaMath, TopKMatchesCpuWithTiesNanAndZeros) {
  for (DType d : {DType::f32, DType::bf16}) {
    std::vector<int64_t> sizes = testing::kRaggedSizes;
    for (int64_t n : {int64_t(256), int64_t(2048), int64_t(2049), int64_t(5000)}) sizes.push_back(n);
    for (int64_t n : sizes) {
      const Tensor x = tie_heavy(6, n, 400 + uint64_t(n), d), xg = x.to(gpu);
      const std::string what = std::string(dtype_name(d)) + " n=" + std::to_string(n);
      for (int64_t k : {int64_t(1), std::min<int64_t>(8, n), (n + 1) / 2, n}) expect_topk_matches(x, xg, k, what);
      // A strided view (the dispatcher makes it contiguous) and a 3-d input.
      expect_topk_matches(x.t().contiguous().t(), xg.t().contiguous().t(), std::min<int64_t>(3, n), what + " view");
      expect_topk_matches(x.view({2, 3, n}), xg.view({2, 3, n}), 1, what + " 3-d");
    }
  }
}

TEST_F(CudaMath, TopKOverAVocabularyRow) {
  // Sampling shape: rows of the DeepSeek-V3 vocabulary (129280), the CUB path.
  const Tensor x = random_tensor({3, 129280}, 500, DType::bf16), xg = x.to(gpu);  // bf16: many ties
  for (int64_t k : {int64_t(1), int64_t(50), int64_t(129280)}) expect_topk_matches(x, xg, k, "vocab");
  const kernels::TopK t = kernels::topk(xg, 4);
  const std::vector<double> v = host(t.values).to_doubles();
  EXPECT_GE(v[0], v[1]);  // sorted descending
  EXPECT_GE(v[1], v[2]);
}

// ---- gemm -------------------------------------------------------------------------------------

// Both devices accumulate fp32 (bf16 products are exact in fp32) in different orders; the standard
// bound for a length-K dot product in fp32 is |err| <= K·u·sum_k |a_ik||b_kj| per side (u = 2^-24),
// so |gpu - cpu| <= 2·K·u·(|a|·|b|)_ij, scaled by |alpha|; the fp32 epilogue alpha·acc + beta·c adds
// a few u of |alpha·ab| + |beta·c|. A bf16 c is rounded once on each side from fp32 values that may
// straddle a rounding boundary: one bf16 ulp, <= 2^-7 relative. Checked element by element.
// c_layout 1: c is a column-major view (the GPU writes it through a temporary).
void expect_gemm_matches(const Tensor& a, const Tensor& b, const Tensor& ag, const Tensor& bg, DType out, double alpha,
                         double beta, const std::string& what, int c_layout = 0) {
  const Tensor c0 = random_tensor(kernels::matmul(a, b).shape(), 77, out);
  const Device gpu = Device::cuda(0);
  Tensor c_cpu = c_layout == 1 ? c0.transpose(-2, -1).contiguous().transpose(-2, -1) : c0.clone();
  Tensor c_gpu = c_layout == 1 ? c0.to(gpu).transpose(-2, -1).contiguous().transpose(-2, -1) : c0.to(gpu);
  if (beta == 0.0) c_gpu.fill_(std::numeric_limits<double>::quiet_NaN());  // beta == 0 must not read c
  kernels::gemm(a, b, c_cpu, alpha, beta);
  kernels::gemm(ag, bg, c_gpu, alpha, beta);
  const Tensor abs_a = kernels::unary(kernels::UnaryOp::abs, kernels::cast(a, DType::f32));
  const Tensor abs_b = kernels::unary(kernels::UnaryOp::abs, kernels::cast(b, DType::f32));
  const std::vector<double> mag = kernels::matmul(abs_a, abs_b).to_doubles();
  const std::vector<double> cs = c0.to_doubles(), want = c_cpu.to_doubles(), got = host(c_gpu).to_doubles();
  const double k = double(a.size(-1)), u = testing::kU32;
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double scale = std::fabs(alpha) * mag[i] * 1.001 + std::fabs(beta) * std::fabs(cs[i]);
    double tol = (2.0 * k + 4.0) * u * scale + 1e-30;
    if (out == DType::bf16) tol += std::ldexp(std::fabs(want[i]), -7);
    if (!(std::fabs(got[i] - want[i]) <= tol) && bad++ < 3)
      ADD_FAILURE() << what << ": element " << i << " gpu " << got[i] << " cpu " << want[i] << " tol " << tol;
  }
  EXPECT_EQ(bad, 0) << what;
}

TEST_F(CudaMath, GemmMatchesCpuOnRaggedShapesAndTransposes) {
  for (DType in : {DType::f32, DType::bf16}) {
    for (DType out : {DType::f32, DType::bf16}) {
      for (int64_t m : {int64_t(1), int64_t(7), int64_t(65), int64_t(129)}) {
        const int64_t n = m == 1 ? 993 : m + 3, k = m == 129 ? 993 : m * 2 + 1;
        // Layouts: 0 plain, 1 transposed view (x.t() of a contiguous [cols, rows]), 2 column slice.
        for (int la : {0, 1, 2}) {
          for (int lb : {0, 1, 2}) {
            const Tensor a = testing::random_view(m, k, 600 + uint64_t(m), in, la);
            const Tensor b = testing::random_view(k, n, 700 + uint64_t(m), in, lb);
            const auto same_view = [&](const Tensor& t, int layout) {  // t's view rebuilt on the GPU
              if (layout == 1) return t.t().contiguous().to(gpu).t();
              return t.contiguous().to(gpu);
            };
            const std::string what = std::string(dtype_name(in)) + ">" + std::string(dtype_name(out)) + " " +
                                     std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                                     " layouts " + std::to_string(la) + std::to_string(lb);
            // Column slices on the GPU: slice a padded copy so the view is genuinely strided there too.
            const auto gpu_view = [&](const Tensor& t, int layout) {
              if (layout != 2) return same_view(t, layout);
              Tensor padded = Tensor::zeros({t.size(0), t.size(1) + 3}, t.dtype(), gpu);
              padded.slice(1, 2, t.size(1) + 2).copy_(t.to(gpu));
              return padded.slice(1, 2, t.size(1) + 2);
            };
            expect_gemm_matches(a, b, gpu_view(a, la), gpu_view(b, lb), out, 1.0, 0.0, what);
          }
        }
        const Tensor a = random_tensor({m, k}, 800, in), b = random_tensor({k, n}, 801, in);
        expect_gemm_matches(a, b, a.to(gpu), b.to(gpu), out, -0.75, 0.5, "alpha/beta " + std::to_string(m));
        expect_gemm_matches(a, b, a.to(gpu), b.to(gpu), out, 2.0, 1.0, "beta 1 " + std::to_string(m));
      }
    }
  }
}

TEST_F(CudaMath, GemmBatchedAndBroadcast) {
  for (DType in : {DType::f32, DType::bf16}) {
    const int64_t m = 33, k = 65, n = 17;
    const Tensor a3 = random_tensor({4, m, k}, 900, in), b3 = random_tensor({4, k, n}, 901, in);
    const Tensor a2 = random_tensor({m, k}, 902, in), b2 = random_tensor({k, n}, 903, in);
    const std::string dt(dtype_name(in));
    // Both batched; a 2-d b shared by the batch (folded into one GEMM); a 2-d a shared (batch stride 0).
    expect_gemm_matches(a3, b3, a3.to(gpu), b3.to(gpu), DType::f32, 1.0, 0.0, dt + " batched");
    expect_gemm_matches(a3, b2, a3.to(gpu), b2.to(gpu), DType::f32, 1.0, 0.5, dt + " shared b");
    expect_gemm_matches(a2, b3, a2.to(gpu), b3.to(gpu), DType::bf16, 1.0, 0.0, dt + " shared a");
    // Two batch dims, transposed matrices inside the batch, and a batch dim that does not collapse
    // (a slice of the batch: still one stride) or must be copied (permuted batch dims).
    const Tensor a4 = random_tensor({2, 3, k, m}, 904, in).transpose(-2, -1);
    const Tensor b4 = random_tensor({2, 3, k, n}, 905, in);
    expect_gemm_matches(a4, b4, random_tensor({2, 3, k, m}, 904, in).to(gpu).transpose(-2, -1), b4.to(gpu), DType::f32,
                        1.0, 0.0, dt + " 4-d transposed a");
    const Tensor a5 = random_tensor({3, 2, m, k}, 906, in).transpose(0, 1);
    expect_gemm_matches(a5, b4, random_tensor({3, 2, m, k}, 906, in).to(gpu).transpose(0, 1), b4.to(gpu), DType::f32,
                        1.0, 0.0, dt + " permuted batch");
    const Tensor a6 = random_tensor({8, m, k}, 907, in).slice(0, 1, 8, 2);
    expect_gemm_matches(a6, b2, random_tensor({8, m, k}, 907, in).to(gpu).slice(0, 1, 8, 2), b2.to(gpu), DType::f32,
                        1.0, 0.0, dt + " strided batch, shared b");
    // An expanded (stride-0) batch operand.
    const Tensor a7 = a2.unsqueeze(0).expand({4, m, k});
    expect_gemm_matches(a7, b3, a2.to(gpu).unsqueeze(0).expand({4, m, k}), b3.to(gpu), DType::f32, 1.0, 0.0,
                        dt + " expanded a");
  }
}

TEST_F(CudaMath, GemmWritesStridedOutputsThroughATemporary) {
  const Tensor a = random_tensor({65, 129}, 1000), b = random_tensor({129, 7}, 1001);
  for (DType out : {DType::f32, DType::bf16}) {
    expect_gemm_matches(a, b, a.to(gpu), b.to(gpu), out, 1.0, 0.0, "column-major c", /*c_layout=*/1);
    expect_gemm_matches(a, b, a.to(gpu), b.to(gpu), out, 0.5, -1.0, "column-major c, beta", /*c_layout=*/1);
  }
  // matmul allocates on the operands' device.
  const Tensor y = kernels::matmul(a.to(gpu), b.to(gpu), DType::bf16);
  EXPECT_EQ(y.device(), gpu);
  EXPECT_EQ(y.dtype(), DType::bf16);
}

// ---- grouped GEMM --------------------------------------------------------------------------------

// kernels::grouped_matmul on CUDA (one cublasGemmGroupedBatchedEx call) against its CPU twin (one
// oneDNN GEMM per group): every product, fp32 and bf16 operands into fp32 and bf16, groups of 0, 1
// and uneven rows. Tolerance (testing::gemm_sums_close): both sides sum the same exact products in
// fp32 in different orders, k of them (a_bt: K, a_b: N, at_b: the group's rows): (2k + 4)·u·S, S =
// Σ|a·b| from the CPU kernel on absolute values; a bf16 output adds one bf16 ulp (2^-7·|y|). The
// bf16 -> fp32 case runs the operands widened through TF32 (grouped_gemm.cu): exact for bf16 values,
// so it passes the same fp32 bound, which a lossy TF32 rounding (~2^-11·S) would fail by far.
// Shapes: N, K multiples of 8 take the grouped call; the ragged ones (13, 9) its fallback, one
// cuBLASLt GEMM per group (pointers not 16-byte aligned).
TEST_F(CudaMath, GroupedMatmulMatchesCpuPerGroupProducts) {
  using kernels::GroupedProduct;
  const std::vector<int64_t> offsets = {0, 0, 37, 38, 38, 103, 104, 232};  // 0, 37, 1, 0, 65, 1, 128 rows
  const int64_t groups = int64_t(offsets.size()) - 1, rows = offsets.back();
  int64_t max_rows = 0;
  for (size_t g = 0; g + 1 < offsets.size(); ++g) max_rows = std::max(max_rows, offsets[g + 1] - offsets[g]);
  const auto abs32 = [](const Tensor& t) {
    return kernels::unary(kernels::UnaryOp::abs, kernels::cast(t, DType::f32));
  };
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{64, 96}, std::pair<int64_t, int64_t>{13, 9}}) {
    for (GroupedProduct p : {GroupedProduct::a_bt, GroupedProduct::a_b, GroupedProduct::at_b}) {
      for (DType in : {DType::f32, DType::bf16}) {
        for (DType out : {DType::f32, DType::bf16}) {
          SCOPED_TRACE(::testing::Message() << "product " << int(p) << " " << dtype_name(in) << ">" << dtype_name(out)
                                            << " N " << n << " K " << k);
          const Tensor a = random_tensor({rows, p == GroupedProduct::a_bt ? k : n}, 1100, in);
          const Tensor b =
              p == GroupedProduct::at_b ? random_tensor({rows, k}, 1101, in) : random_tensor({groups, n, k}, 1102, in);
          const Tensor want = kernels::grouped_matmul(p, a, b, offsets, out);
          const Tensor got = kernels::grouped_matmul(p, a.to(gpu), b.to(gpu), offsets, out);
          ASSERT_EQ(got.device(), gpu);
          ASSERT_EQ(got.dtype(), out);
          const Tensor s = kernels::grouped_matmul(p, abs32(a), abs32(b), offsets);
          const double sum_len = p == GroupedProduct::a_bt  ? double(k)
                                 : p == GroupedProduct::a_b ? double(n)
                                                            : double(max_rows);
          EXPECT_TRUE(testing::gemm_sums_close(got, want, s, sum_len, out == DType::bf16 ? 0x1p-7 : 0.0));
          if (p == GroupedProduct::at_b) {  // groups 0 and 3 have no rows: exact zeros
            EXPECT_TRUE(testing::bit_identical(host(got.select(0, 0).contiguous()), Tensor::zeros({n, k}, out)));
            EXPECT_TRUE(testing::bit_identical(host(got.select(0, 3).contiguous()), Tensor::zeros({n, k}, out)));
          }
        }
      }
    }
  }
}

// 300 groups of 0 to 3 rows: 3 x ~225 device pointers, more than one launch of the kernel that
// writes them (480 per launch, grouped_gemm.cu). Same tolerance as above.
TEST_F(CudaMath, GroupedMatmulWithManyGroups) {
  using kernels::GroupedProduct;
  std::vector<int64_t> offsets = {0};
  for (int64_t g = 0; g < 300; ++g) offsets.push_back(offsets.back() + g % 4);
  const int64_t groups = 300, rows = offsets.back(), n = 16, k = 32;
  const auto abs32 = [](const Tensor& t) {
    return kernels::unary(kernels::UnaryOp::abs, kernels::cast(t, DType::f32));
  };
  for (GroupedProduct p : {GroupedProduct::a_bt, GroupedProduct::a_b, GroupedProduct::at_b}) {
    SCOPED_TRACE(::testing::Message() << "product " << int(p));
    const Tensor a = random_tensor({rows, p == GroupedProduct::a_bt ? k : n}, 1200, DType::bf16);
    const Tensor b = p == GroupedProduct::at_b ? random_tensor({rows, k}, 1201, DType::bf16)
                                               : random_tensor({groups, n, k}, 1202, DType::bf16);
    const Tensor want = kernels::grouped_matmul(p, a, b, offsets, DType::bf16);
    const Tensor got = kernels::grouped_matmul(p, a.to(gpu), b.to(gpu), offsets, DType::bf16);
    const Tensor s = kernels::grouped_matmul(p, abs32(a), abs32(b), offsets);
    const double sum_len = p == GroupedProduct::a_bt ? double(k) : p == GroupedProduct::a_b ? double(n) : 3.0;
    EXPECT_TRUE(testing::gemm_sums_close(got, want, s, sum_len, 0x1p-7));
  }
}

}  // namespace
}  // namespace daedalus
