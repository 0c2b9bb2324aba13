// CUDA twin of autograd/kernels/grouped_gemm: every non-empty group's product in ONE
// cublasGemmGroupedBatchedEx call (instead of one GEMM launch, and a copy, per group), written
// straight into c's rows (a_bt, a_b) or matrices (at_b).
//
// Operand mapping. cuBLAS is column-major: C [m, n] = op(A) [m, k] · op(B) [k, n], ld = the step
// between columns. A contiguous row-major X [r, c] (ld c) read column-major is Xᵀ [c, r], ld c. So
// the row-major c_g = p · q is computed as c_gᵀ = qᵀ · pᵀ: cuBLAS's A is our right operand (from
// b), its B our left one (from a), and its C [m, n] is c_gᵀ, which is c_g's memory as it stands.
// Per group g with M = M_g rows (a_g = a + begin·cols(a), w_g = b + g·N·K, b_g = b + begin·K):
//
//   a_bt  c_g [M, N] = a_g [M, K] · w_g [N, K]ᵀ    c_gᵀ [N, M] = w_g · a_gᵀ       m = N, n = M, k = K
//         A = w_g, stored as w_gᵀ [K, N] ld K; op(A) must be w_g [N, K]          -> op T, lda = K
//         B = a_g, stored as a_gᵀ [K, M] ld K; op(B) must be a_gᵀ [K, M]         -> op N, ldb = K
//         C = c_g (rows begin.. of c), stored as c_gᵀ [N, M]                      -> ldc = N
//   a_b   c_g [M, K] = a_g [M, N] · w_g [N, K]     c_gᵀ [K, M] = w_gᵀ · a_gᵀ      m = K, n = M, k = N
//         A = w_g, stored as w_gᵀ [K, N] ld K; op(A) must be w_gᵀ [K, N]         -> op N, lda = K
//         B = a_g, stored as a_gᵀ [N, M] ld N; op(B) must be a_gᵀ [N, M]         -> op N, ldb = N
//         C = c_g (rows begin.. of c), stored as c_gᵀ [K, M]                      -> ldc = K
//   at_b  c_g [N, K] = a_g [M, N]ᵀ · b_g [M, K]    c_gᵀ [K, N] = b_gᵀ · a_g       m = K, n = N, k = M
//         A = b_g, stored as b_gᵀ [K, M] ld K; op(A) must be b_gᵀ [K, M]         -> op N, lda = K
//         B = a_g, stored as a_gᵀ [N, M] ld N; op(B) must be a_g [M, N]          -> op T, ldb = N
//         C = c_g (matrix g of c), stored as c_gᵀ [K, N]                          -> ldc = K
// Every ld meets cuBLAS's minimum (op N: ld >= max(1, rows of op's input) = m or k; op T: ld >=
// max(1, k) or max(1, n); ldc >= max(1, m)).
//
// Groups. Each non-empty group is one cuBLAS group of group_size 1 (a cuBLAS group shares m, n, k;
// ours differ in M). Groups without rows are left out of the arrays (a_bt, a_b: nothing to write;
// at_b: the dispatcher zeroed c) rather than passed with a zero dim.
//
// Numerics. cublasGemmGroupedBatchedEx (cuBLAS 12.5 to 13.1) takes, for CUBLAS_COMPUTE_32F with
// fp32 alpha and beta, A/B/C all bf16, all fp16 or all fp32 — no bf16 operands with an fp32 C:
//   fp32 · fp32 -> fp32: CUBLAS_COMPUTE_32F, a true fp32 GEMM (the handle's math mode is
//     CUBLAS_DEFAULT_MATH: no TF32), like autograd/cuda/gemm.cu.
//   bf16 · bf16 -> bf16: CUBLAS_COMPUTE_32F: exact products, fp32 accumulation, rounded once on store.
//   bf16 · bf16 -> fp32: the operands are widened to fp32 (exact) and multiplied with
//     CUBLAS_COMPUTE_32F_FAST_TF32. TF32 keeps 10 mantissa bits and a bf16 value has 7, so the
//     conversion to TF32 is exact and so are the products (fp32 holds 8 x 8 significant bits): the
//     arithmetic of a bf16 GEMM with fp32 accumulation and fp32 output, at the TF32 tensor-core rate
//     (half the bf16 one), plus one cast of each operand.
//   fp32 · fp32 -> bf16: into an fp32 temporary, rounded once by the copy (as gemm.cu does).
//
// Alignment. cuBLAS reads the matrix pointers on the device, so it cannot look at them to pick a
// kernel; for bf16/fp16 operands and the FAST compute types its documentation asks for pointers
// aligned to 16 bytes, or else to rules tied to k·sizeof(A) that row offsets like ours need not
// meet. We ask 16 bytes of every pointer, fp32 included (conservative). When any pointer of the
// call would be less aligned (N or K not a multiple of 8 bf16 / 4 fp32 elements, or an operand
// that starts mid-buffer) this falls back to one cuBLASLt GEMM per group (autograd/cuda/gemm.cu,
// which tells its heuristic the real alignment), still written straight into c.
//
// Pointer arrays. Aarray, Barray and Carray must be in device memory; the dims, ld, op, alpha,
// beta and group-size arrays are read from the host during the call. The three pointer arrays are
// written into one device int64 tensor by small kernels that carry the values as their launch
// parameters (copied at launch: no pinned staging buffer, and no host-device synchronization,
// which a cudaMemcpy from pageable memory would cost). The tensor is held until the GEMM has been
// enqueued; the caching allocator may then hand its block out again, to work that runs after the
// GEMM on the same stream (the device's compute stream, autograd/cuda/stream.h: the cuBLAS
// handle's too).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "autograd/cuda/cublaslt.h"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/stream.h"
#include "autograd/kernels/copy.h"

namespace daedalus::cuda {

namespace {

using kernels::GroupedProduct;

static_assert(sizeof(void*) == sizeof(int64_t), "device pointers travel in an int64 tensor");

// Group g's cuBLAS dims and where its matrices start, in elements from a, b and c.
struct Group {
  int64_t m = 0, n = 0, k = 0;
  int64_t off_a = 0, off_b = 0, off_c = 0;
};

// The non-empty groups of `product` (see the table above). n_dim, k_dim: the shared N and K.
std::vector<Group> cublas_groups(GroupedProduct product, const std::vector<int64_t>& offsets, int64_t n_dim,
                                 int64_t k_dim) {
  std::vector<Group> groups;
  for (size_t g = 0; g + 1 < offsets.size(); ++g) {
    const int64_t begin = offsets[g], rows = offsets[g + 1] - begin, gi = int64_t(g);
    if (rows == 0) continue;
    switch (product) {
      case GroupedProduct::a_bt:
        groups.push_back({n_dim, rows, k_dim, begin * k_dim, gi * n_dim * k_dim, begin * n_dim});
        break;
      case GroupedProduct::a_b:
        groups.push_back({k_dim, rows, n_dim, begin * n_dim, gi * n_dim * k_dim, begin * k_dim});
        break;
      case GroupedProduct::at_b:
        groups.push_back({k_dim, n_dim, rows, begin * n_dim, begin * k_dim, gi * n_dim * k_dim});
        break;
    }
  }
  return groups;
}

// Kernel parameters are limited to 4 KiB: up to 480 pointers per launch.
constexpr int kPointersPerLaunch = 480;
struct PointerBatch {
  int64_t values[kPointersPerLaunch];
};
static_assert(sizeof(PointerBatch) + sizeof(int64_t*) + sizeof(int) <= 4096, "kernel parameters exceed 4 KiB");

// dst[i] = batch.values[i] for i < count.
__global__ void store_pointers_kernel(int64_t* dst, PointerBatch batch, int count) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < count) dst[i] = batch.values[i];
}

// A device int64 tensor holding `values`, written on `stream`.
Tensor device_pointer_array(const std::vector<int64_t>& values, Device device, cudaStream_t stream) {
  Tensor out = Tensor::empty({int64_t(values.size())}, DType::i64, device);
  auto* dst = static_cast<int64_t*>(out.data_ptr());
  for (size_t start = 0; start < values.size(); start += kPointersPerLaunch) {
    PointerBatch batch{};
    const int count = int(std::min(values.size() - start, size_t(kPointersPerLaunch)));
    std::copy_n(values.begin() + ptrdiff_t(start), count, batch.values);
    constexpr int kThreads = 128;
    store_pointers_kernel<<<(count + kThreads - 1) / kThreads, kThreads, 0, stream>>>(dst + start, batch, count);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  }
  return out;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int blas_int(int64_t v) {
  DAEDALUS_CHECK(v <= int64_t(INT_MAX), "grouped_matmul: dimension {} exceeds cuBLAS's int", v);
  return int(v);
}

}  // namespace

void grouped_matmul(GroupedProduct product, const Tensor& c, const Tensor& a_in, const Tensor& b_in,
                    const std::vector<int64_t>& offsets) {
  const int device = c.device().index;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device));
  const DType in = a_in.dtype();
  const bool widen = in == DType::bf16 && c.dtype() == DType::f32;   // bf16 -> fp32: via TF32 (see above)
  const bool narrow = in == DType::f32 && c.dtype() == DType::bf16;  // fp32 -> bf16: via an fp32 temporary
  const int64_t in_bytes = int64_t(widen ? sizeof(float) : dtype_size(in));
  const int64_t out_bytes = int64_t(narrow ? sizeof(float) : dtype_size(c.dtype()));

  const int64_t n_dim = product == GroupedProduct::at_b ? a_in.size(1) : b_in.size(1);
  const int64_t k_dim = product == GroupedProduct::a_bt ? a_in.size(1) : b_in.size(-1);
  const std::vector<Group> groups = cublas_groups(product, offsets, n_dim, k_dim);
  if (groups.empty()) return;

  // Widened operands and the fp32 temporary are fresh allocations (512-byte aligned).
  bool aligned =
      (widen || (aligned16(a_in.data_ptr()) && aligned16(b_in.data_ptr()))) && (narrow || aligned16(c.data_ptr()));
  for (const Group& g : groups)
    aligned = aligned && g.off_a * in_bytes % 16 == 0 && g.off_b * in_bytes % 16 == 0 && g.off_c * out_bytes % 16 == 0;
  if (!aligned) {
    kernels::grouped_matmul_per_group(product, c, a_in, b_in, offsets);  // one cuBLASLt GEMM per group
    return;
  }

  const Tensor a = widen ? kernels::cast(a_in, DType::f32) : a_in;
  const Tensor b = widen ? kernels::cast(b_in, DType::f32) : b_in;
  const Tensor out = narrow ? Tensor::zeros(c.shape(), DType::f32, c.device()) : c;  // zeros: at_b's empty groups
  const cudaDataType_t type = a.dtype() == DType::bf16 ? CUDA_R_16BF : CUDA_R_32F;   // A, B and C alike
  const cublasComputeType_t compute = widen ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;

  // Per product, the same ops and leading dims for every group (the table above).
  const cublasOperation_t op_a = product == GroupedProduct::a_bt ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = product == GroupedProduct::at_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int64_t lda = k_dim, ldb = product == GroupedProduct::a_bt ? k_dim : n_dim;
  const int64_t ldc = product == GroupedProduct::a_bt ? n_dim : k_dim;

  const size_t count = groups.size();
  const std::vector<cublasOperation_t> ops_a(count, op_a), ops_b(count, op_b);
  const std::vector<int> lda_v(count, blas_int(lda)), ldb_v(count, blas_int(ldb)), ldc_v(count, blas_int(ldc));
  const std::vector<int> sizes(count, 1);
  const std::vector<float> alpha(count, 1.0f), beta(count, 0.0f);
  std::vector<int> m(count), n(count), k(count);
  std::vector<int64_t> pointers(3 * count);  // cuBLAS's A pointers, then its B pointers, then its C pointers
  const auto address = [](const Tensor& t, int64_t offset, int64_t bytes) {
    return int64_t(reinterpret_cast<uintptr_t>(static_cast<const char*>(t.data_ptr()) + offset * bytes));
  };
  for (size_t i = 0; i < count; ++i) {
    const Group& g = groups[i];
    m[i] = blas_int(g.m);
    n[i] = blas_int(g.n);
    k[i] = blas_int(g.k);
    pointers[i] = address(b, g.off_b, in_bytes);
    pointers[count + i] = address(a, g.off_a, in_bytes);
    pointers[2 * count + i] = address(out, g.off_c, out_bytes);
  }
  const Tensor device_pointers = device_pointer_array(pointers, c.device(), compute_stream(device));
  const auto* array = static_cast<void* const*>(device_pointers.data_ptr());

  const Cublas& blas = cublas(device);
  DAEDALUS_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(blas.handle, ops_a.data(), ops_b.data(), m.data(), n.data(),
                                                   k.data(), alpha.data(), array, type, lda_v.data(), array + count,
                                                   type, ldb_v.data(), beta.data(), array + 2 * count, type,
                                                   ldc_v.data(), int(count), sizes.data(), compute));
  if (narrow) kernels::copy(c, out);
}

}  // namespace daedalus::cuda
