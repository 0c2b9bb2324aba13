// CUDA twin of autograd/kernels/gemm: c = alpha * a·b + beta * c through cuBLASLt, fp32 and bf16,
// batched, on strided views.
//
// Numerics: compute type CUBLAS_COMPUTE_32F, scale type fp32. For fp32 operands that is a true
// fp32 GEMM: TF32 is OFF (that would be CUBLAS_COMPUTE_32F_FAST_TF32), so it stays a reference-grade
// fp32 product like oneDNN's on the CPU. bf16 operands multiply exactly into fp32 accumulators.
// The epilogue alpha·acc + beta·c runs in fp32 and c is rounded once on store (bf16 c: by
// cuBLASLt; fp32 operands with a bf16 c, which cuBLASLt has no kernel for: through an fp32
// temporary, rounded once by the copy). beta == 0 never reads c (cuBLAS semantics).
//
// Operand mapping. cuBLASLt is column-major: D [m, n] = op(A) [m, k] · op(B) [k, n]. A row-major
// c [M, N] (leading dim ldc) is the column-major cᵀ [N, M], and cᵀ = bᵀ · aᵀ, so
//   m = N, n = M, k = K;  A := b, B := a;  D = C := c (column-major N x M, ld = ldc).
// A matrix X [R, C] with strides (rs, cs) is, in column-major terms,
//   row-major (cs == 1, ld = rs >= C): Xᵀ [C, R], ld = rs  -> op N (it already is the transpose we need)
//   col-major (rs == 1, ld = cs >= R): X [R, C],  ld = cs  -> op T
// so transposed views (x.t()) and row/column slices are read in place. Anything else (a step along
// both dims, an expanded matrix dim) is copied to contiguous first. Batch dims: cuBLASLt takes one
// batch stride per operand, so an operand's batch dims must collapse into one (a 2-d operand, shared
// by every batch entry, has batch stride 0); otherwise it is copied. A shared 2-d b with a batch of
// row-major a and c is folded into one GEMM of M' = batch·M rows instead. c must be row-major with
// collapsible batch dims; otherwise it goes through a contiguous temporary.
//
// Caches: the shared handle and workspace (autograd/cuda/cublaslt.h); per problem (device, dtypes,
// dims, transposes, leading dims, batch strides, pointer alignments) the matmul descriptor, the
// layouts and the heuristic's algorithm, built once and kept for the process.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "autograd/cuda/cublaslt.h"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/kernels/copy.h"

namespace daedalus::cuda {

namespace {

// A matrix as cuBLAS sees it: column-major storage of either X (col_major) or Xᵀ, leading dim ld.
struct BlasMatrix {
  bool col_major = false;
  int64_t ld = 1;
};

// [rows, cols] with strides (rs, cs), or nothing when cuBLAS cannot address it. Size-1 dims take
// whatever stride is valid (their stride is never stepped).
std::optional<BlasMatrix> blas_matrix(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  if ((cs == 1 || cols == 1) && (rows == 1 || rs >= cols)) return BlasMatrix{false, rows == 1 ? cols : rs};
  if ((rs == 1 || rows == 1) && (cols == 1 || cs >= rows)) return BlasMatrix{true, cols == 1 ? rows : cs};
  return std::nullopt;
}

// The one stride that steps through t's batch dims (its dims before the last two) in row-major
// order, or nothing when they do not collapse. Size-1 dims are skipped; 0 when there is no batch.
std::optional<int64_t> batch_stride(const Tensor& t) {
  std::optional<int64_t> stride;  // of the innermost batch dim of size > 1
  int64_t next = 0;               // the stride the next one out must have to collapse with it
  for (int d = t.dim() - 3; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (stride && t.stride(d) != next) return std::nullopt;
    if (!stride) stride = t.stride(d);
    next = t.stride(d) * t.size(d);
  }
  return stride.value_or(0);
}

// An input operand ready for cuBLASLt (copied to contiguous when its layout needs it).
struct Operand {
  Tensor t;
  BlasMatrix m;
  int64_t batch_stride = 0;  // 0 for a 2-d operand shared by the batch
};

Operand prepare_input(const Tensor& x) {
  const auto fits = [](const Tensor& t) -> std::optional<Operand> {
    const auto m = blas_matrix(t.size(-2), t.size(-1), t.stride(-2), t.stride(-1));
    const auto s = t.dim() == 2 ? std::optional<int64_t>(0) : batch_stride(t);
    if (!m || !s) return std::nullopt;
    return Operand{t, *m, *s};
  };
  if (auto op = fits(x)) return *op;
  auto op = fits(x.contiguous());
  DAEDALUS_ASSERT(op.has_value());
  return *op;
}

// The alignment every matrix of a batch keeps: the largest power of two (up to 256) dividing both the
// address and the batch stride in bytes.
uint32_t alignment_of(const void* p, int64_t batch_stride_bytes) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p) | uintptr_t(batch_stride_bytes);
  uint32_t a = 1;
  while (a < 256 && u % (2 * a) == 0) a *= 2;
  return a;
}

cudaDataType_t lt_type(DType t) { return t == DType::bf16 ? CUDA_R_16BF : CUDA_R_32F; }

// Everything a cached plan depends on.
struct Problem {
  int device = 0;
  DType in = DType::f32, out = DType::f32;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool trans_a = false, trans_b = false;  // cuBLASLt's A (our b) and B (our a)
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  uint32_t align_a = 0, align_b = 0, align_c = 0;

  std::string key() const {
    return fmt::format("{} {}>{} m{} n{} k{} b{} t{}{} ld{},{},{} s{},{},{} al{},{},{}", device, int(in), int(out), m,
                       n, k, batch, int(trans_a), int(trans_b), lda, ldb, ldc, stride_a, stride_b, stride_c, align_a,
                       align_b, align_c);
  }
};

// Descriptors and algorithm of one problem; immutable once built, shared by every call.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

template <typename T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  DAEDALUS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

template <typename T>
void set_layout(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr, const T& value) {
  DAEDALUS_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, attr, &value, sizeof(value)));
}

template <typename T>
void set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const T& value) {
  DAEDALUS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
}

cublasLtMatrixLayout_t make_layout(DType dtype, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  DAEDALUS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, lt_type(dtype), uint64_t(rows), uint64_t(cols), ld));
  if (batch > 1) {
    set_layout(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, int32_t(batch));
    set_layout(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride);
  }
  return layout;
}

std::unique_ptr<Plan> create_plan(const Problem& p) {
  auto plan = std::make_unique<Plan>();
  DAEDALUS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));  // no TF32
  const cublasOperation_t ta = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_desc(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, ta);
  set_desc(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, tb);
  plan->a = p.trans_a ? make_layout(p.in, p.k, p.m, p.lda, p.batch, p.stride_a)
                      : make_layout(p.in, p.m, p.k, p.lda, p.batch, p.stride_a);
  plan->b = p.trans_b ? make_layout(p.in, p.n, p.k, p.ldb, p.batch, p.stride_b)
                      : make_layout(p.in, p.k, p.n, p.ldb, p.batch, p.stride_b);
  plan->c = make_layout(p.out, p.m, p.n, p.ldc, p.batch, p.stride_c);

  cublasLtMatmulPreference_t pref = nullptr;
  DAEDALUS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const CublasLt& lt = cublaslt(p.device);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = [&] {
    set_pref(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(kCublasLtWorkspaceBytes));
    // Only algorithms that work at the operands' actual alignment (the default assumes 256 bytes).
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, p.align_a);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, p.align_b);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, p.align_c);
    set_pref(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, p.align_c);
    return cublasLtMatmulAlgoGetHeuristic(lt.handle, plan->op, plan->a, plan->b, plan->c, plan->c, pref, 1, &result,
                                          &found);
  }();
  cublasLtMatmulPreferenceDestroy(pref);
  DAEDALUS_CUBLAS_CHECK(status);
  if (found == 0)
    throw Error(
        fmt::format("gemm: cuBLASLt has no algorithm for {} (device, in>out dtypes, m n k batch, transposes, "
                    "leading dims, batch strides, alignments)",
                    p.key()));
  plan->algo = result.algo;
  return plan;
}

// The plan of `p`, built on first use and kept for the process (descriptors are never destroyed,
// like the handle: the CUDA context may be gone during static destruction).
const Plan& cached_plan(const Problem& p) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::unique_ptr<Plan>> plans;
  const std::string key = p.key();
  const std::lock_guard lock(mutex);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, create_plan(p)).first;
  return *it->second;
}

}  // namespace

void gemm(const Tensor& a_in, const Tensor& b_in, const Tensor& c, float alpha, float beta) {
  DAEDALUS_CUDA_CHECK(cudaSetDevice(c.device().index));
  const cudaStream_t stream = compute_stream(c.device().index);
  const int64_t M = c.size(-2), N = c.size(-1), K = a_in.size(-1);
  const int64_t batch = c.numel() / (M * N);
  const DType in = a_in.dtype();
  const DType out_dtype = in == DType::f32 ? DType::f32 : c.dtype();  // cuBLASLt: fp32 operands give fp32 only

  Operand a = prepare_input(a_in), b = prepare_input(b_in);
  // c, or a contiguous temporary of out_dtype when cuBLASLt cannot write c directly.
  Tensor out = c;
  std::optional<BlasMatrix> cm = blas_matrix(M, N, c.stride(-2), c.stride(-1));
  std::optional<int64_t> cs = c.dim() == 2 ? std::optional<int64_t>(0) : batch_stride(c);
  // (a c with expanded batch dims would collapse to stride 0: several results into one matrix; the
  // dispatcher's contract forbids an overlapping c, and the temporary below handles it anyway)
  if (c.dtype() != out_dtype || !cm || cm->col_major || !cs || (batch > 1 && *cs == 0)) {
    out = beta != 0.0f ? kernels::cast(c, out_dtype) : Tensor::empty(c.shape(), out_dtype, c.device());
    cm = blas_matrix(M, N, out.stride(-2), out.stride(-1));
    cs = out.dim() == 2 ? std::optional<int64_t>(0) : batch_stride(out);
    DAEDALUS_ASSERT(cm && !cm->col_major && cs);
  }

  Problem p;
  p.device = c.device().index;
  p.in = in;
  p.out = out_dtype;
  p.m = N;
  p.n = M;
  p.k = K;
  p.batch = batch;
  p.trans_a = b.m.col_major;  // b row-major is bᵀ in column-major terms: op N
  p.trans_b = a.m.col_major;
  p.lda = b.m.ld;
  p.ldb = a.m.ld;
  p.ldc = cm->ld;
  p.stride_a = b.batch_stride;
  p.stride_b = a.batch_stride;
  p.stride_c = *cs;
  // A 2-d b shared by a batch of row-major a and c whose batches are evenly spaced rows: one GEMM
  // with batch·M rows (cuBLASLt's n) instead of a batch with a zero stride.
  if (batch > 1 && b_in.dim() == 2 && !a.m.col_major && a.batch_stride == M * a.m.ld && p.stride_c == M * p.ldc) {
    p.n = batch * M;
    p.batch = 1;
    p.stride_a = p.stride_b = p.stride_c = 0;
  } else if (p.batch == 1) {
    p.stride_a = p.stride_b = p.stride_c = 0;
  }
  const int64_t in_bytes = int64_t(dtype_size(in)), out_bytes = int64_t(dtype_size(out_dtype));
  p.align_a = alignment_of(b.t.data_ptr(), p.stride_a * in_bytes);
  p.align_b = alignment_of(a.t.data_ptr(), p.stride_b * in_bytes);
  p.align_c = alignment_of(out.data_ptr(), p.stride_c * out_bytes);
  DAEDALUS_CHECK(p.batch <= int64_t(INT32_MAX), "gemm: batch of {} matrices exceeds cuBLASLt's int32 count", p.batch);

  const Plan& plan = cached_plan(p);
  const CublasLt& lt = cublaslt(p.device);
  DAEDALUS_CUBLAS_CHECK(cublasLtMatmul(lt.handle, plan.op, &alpha, b.t.data_ptr(), plan.a, a.t.data_ptr(), plan.b,
                                       &beta, out.data_ptr(), plan.c, out.data_ptr(), plan.c, &plan.algo, lt.workspace,
                                       kCublasLtWorkspaceBytes, stream));
  if (!out.shares_storage(c)) kernels::copy(c, out);
}

}  // namespace daedalus::cuda
