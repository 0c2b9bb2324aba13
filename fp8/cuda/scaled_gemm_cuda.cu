// cuBLASLt GEMMs for CUDA tensors: the FP8 scaled GEMM (fp8/scaled_gemm.h's CUDA half) and the
// bf16 TN GEMM of the bf16 recipe. Contract and shape rules: fp8/cuda/scaled_gemm_cuda.h.
//
// Operand mapping. cuBLASLt is column-major and computes D [m, n] = op(A) [m, k] · op(B) [k, n].
// Our y [M, N] row-major is, in memory, the column-major matrix yᵀ [N, M] = b · aᵀ, so:
//   m = N, n = M, k = K
//   A := b.data  [N, K] row-major == column-major K x N, ld = K; op(A) = T -> [N, K]
//   B := a.data  [M, K] row-major == column-major K x M, ld = K; op(B) = N -> [K, M]
//   D := y       [M, N] row-major == column-major N x M, ld = N
// That is cuBLAS "TN", the only FP8 layout Hopper runs (both operands K-major). Every scale
// travels with its data: cuBLASLt's A scale is b.scale_inv, its B scale is a.scale_inv.
//
// Scale layouts cuBLASLt expects, per operand with data [R, K] (R = N for A, M for B), from
// cublasLt.h (cublasLtMatmulMatrixScale_t) and NUMERICS.md "cuBLASLt on Hopper" (matching
// PyTorch's is_blockwise_1x128_scaling / is_blockwise_128x128_scaling checks):
//   SCALAR_32F      one fp32 in device memory                      = our tensor scale_inv [1]
//   OUTER_VEC_32F   R fp32 (A: m = N values, B: n = M values)      = our row scale_inv [R]
//   VEC128_32F      [R, K/128] with R fastest (strides [1, R])     <- ours is [R, K/128] row-major:
//                   transposed by scales_1x128_kernel
//   BLK128x128_32F  [ceil(R/128), K/128] with K/128 fastest and a row stride of round_up(K/128, 4)
//                   (column-major [round_up(K/128, 4), R/128]) <- ours is row-major with stride
//                   K/128: re-strided by scales_128x128_kernel (without the padding results are
//                   silently wrong when (K/128) % 4 != 0).
// The scale pointers hold dequantization factors (D = scale_A·scale_B·(A·B)): our scale_inv.
//
// Caches: the shared cuBLASLt handle and 32 MiB workspace per device (autograd/cuda/cublaslt.h),
// the heuristic's algorithm per (device, shape, types, scale modes). Everything runs on the device's
// compute stream (autograd/cuda/stream.h) like the other CUDA kernels, so temporary scale buffers
// may go back to the caching allocator right after the matmul is queued: their next user runs after it.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/check.h"
#include "autograd/cuda/cublaslt.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"
#include "fp8/cuda/grouped_gemm_kernel.h"
#include "fp8/cuda/scaled_gemm_cuda.h"

namespace daedalus::fp8 {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Key of a cached heuristic: device, m, n, k, A/B/D types, A/B scale modes, A/B/D pointer alignments.
using AlgoKey = std::tuple<int, int64_t, int64_t, int64_t, int, int, int, int, int, uint32_t, uint32_t, uint32_t>;

// The largest power of two (up to cuBLASLt's default assumption of 256) dividing the address.
uint32_t alignment_of(const void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 1;
  while (a < 256 && u % (2 * a) == 0) a *= 2;
  return a;
}

// RAII for the descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  Descriptors() = default;
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
  ~Descriptors() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

template <typename T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const T& value) {
  DAEDALUS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

// What one GEMM call needs, in cuBLASLt's terms (see the mapping at the top of the file).
struct LtGemm {
  int device = 0;
  int64_t m = 0, n = 0, k = 0;
  cudaDataType_t a_type = CUDA_R_32F, b_type = CUDA_R_32F;
  const void* a = nullptr;  // [m, k] seen as column-major k x m, op T
  const void* b = nullptr;  // [n, k] seen as column-major k x n, op N
  void* d = nullptr;        // column-major m x n, fp32
  bool scaled = false;      // FP8: scale modes and pointers below are set
  int32_t a_scale_mode = 0, b_scale_mode = 0;
  const void* a_scale = nullptr;
  const void* b_scale = nullptr;
  const char* what = "";
};

void run_lt_gemm(const LtGemm& g) {
  cuda::CublasLt& state = cuda::cublaslt(g.device);
  Descriptors desc;
  DAEDALUS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  set_attribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, trans_a);
  set_attribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, trans_b);
  if (g.scaled) {
    const int8_t fast_accum = 0;  // promote partial sums to FP32 (DeepSeek-V3's N_C = 128 scheme)
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, fast_accum);
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, g.a_scale_mode);
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, g.b_scale_mode);
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, g.a_scale);
    set_attribute(desc.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, g.b_scale);
  }
  const auto rows = [](int64_t v) { return uint64_t(v); };
  DAEDALUS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.a, g.a_type, rows(g.k), rows(g.m), g.k));
  DAEDALUS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.b, g.b_type, rows(g.k), rows(g.n), g.k));
  DAEDALUS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.d, CUDA_R_32F, rows(g.m), rows(g.n), g.m));

  static std::mutex mutex;
  static std::map<AlgoKey, cublasLtMatmulAlgo_t> algos;
  // The heuristic assumes 256-byte aligned operands unless told otherwise; the grouped GEMM writes
  // group g's rows at y + offsets[g] * N, only 32-byte aligned in general (N % 8 == 0), so the
  // actual alignments are passed (and keyed on): an algorithm needing more would fail the call.
  const uint32_t align_a = alignment_of(g.a), align_b = alignment_of(g.b), align_d = alignment_of(g.d);
  const AlgoKey key{g.device,
                    g.m,
                    g.n,
                    g.k,
                    int(g.a_type),
                    int(g.b_type),
                    int(CUDA_R_32F),
                    g.scaled ? g.a_scale_mode : -1,
                    g.scaled ? g.b_scale_mode : -1,
                    align_a,
                    align_b,
                    align_d};
  cublasLtMatmulAlgo_t algo;
  {
    std::lock_guard lock(mutex);
    auto it = algos.find(key);
    if (it == algos.end()) {
      DAEDALUS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&desc.pref));
      const uint64_t workspace = cuda::kCublasLtWorkspaceBytes;
      DAEDALUS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                 &workspace, sizeof(workspace)));
      const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},  // C is D (beta = 0)
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
      for (const auto& [attr, bytes] : alignments)
        DAEDALUS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, attr, &bytes, sizeof(bytes)));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      DAEDALUS_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(state.handle, desc.op, desc.a, desc.b, desc.d, desc.d,
                                                           desc.pref, 1, &result, &found));
      if (found == 0)
        throw Error(
            fmt::format("{}: cuBLASLt has no algorithm for M={} N={} K={} with these types and scale modes "
                        "(A scale mode {}, B scale mode {})",
                        g.what, g.n, g.m, g.k, g.a_scale_mode, g.b_scale_mode));
      it = algos.emplace(key, result.algo).first;
    }
    algo = it->second;
  }
  const float alpha = 1.0f, beta = 0.0f;
  DAEDALUS_CUBLAS_CHECK(cublasLtMatmul(state.handle, desc.op, &alpha, g.a, desc.a, g.b, desc.b, &beta, g.d, desc.d, g.d,
                                       desc.d, &algo, state.workspace, cuda::kCublasLtWorkspaceBytes,
                                       cuda::compute_stream(g.device)));
}

// ---- scale layout conversion --------------------------------------------------------------

// 1x128: src [rows, kb] row-major -> dst [kb, rows] row-major (= [rows, kb] with rows fastest).
__global__ void scales_1x128_kernel(const float* src, float* dst, int64_t rows, int64_t kb) {
  const int64_t n = rows * kb;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i / rows, r = i % rows;  // i indexes dst: coalesced writes
    dst[i] = src[r * kb + j];
  }
}

// 128x128: src [rb, kb] row-major -> dst [rb, kb_padded] row-major, padding filled with 1.
__global__ void scales_128x128_kernel(const float* src, float* dst, int64_t rb, int64_t kb, int64_t kb_padded) {
  const int64_t n = rb * kb_padded;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / kb_padded, j = i % kb_padded;
    dst[i] = j < kb ? src[r * kb + j] : 1.0f;
  }
}

// The operand's scale_inv in the layout its cuBLASLt scale mode reads. `keep` holds a converted
// copy alive until the matmul is queued.
const void* lt_scales(const QuantizedTensor& q, Tensor& keep) {
  const Tensor s = q.scale_inv.contiguous();
  const int64_t rows = q.rows(), kb = ceil_div(q.cols(), 128);
  const cudaStream_t stream = cuda::compute_stream(s.device().index);
  switch (q.granularity) {
    case Granularity::tile_1x128: {
      keep = Tensor::empty({kb, rows}, DType::f32, s.device());
      scales_1x128_kernel<<<cuda::blocks_for(rows * kb), cuda::kThreads, 0, stream>>>(s.data<float>(),
                                                                                      keep.data<float>(), rows, kb);
      DAEDALUS_CUDA_CHECK_LAUNCH();
      return keep.data_ptr();
    }
    case Granularity::block_128x128: {
      const int64_t rb = ceil_div(rows, 128), kb_padded = round_up(kb, 4);
      keep = Tensor::empty({rb, kb_padded}, DType::f32, s.device());
      scales_128x128_kernel<<<cuda::blocks_for(rb * kb_padded), cuda::kThreads, 0, stream>>>(
          s.data<float>(), keep.data<float>(), rb, kb, kb_padded);
      DAEDALUS_CUDA_CHECK_LAUNCH();
      return keep.data_ptr();
    }
    default: keep = s; return keep.data_ptr();  // tensor [1], row [rows]: used as they are
  }
}

int32_t scale_mode(Granularity g) {
  switch (g) {
    case Granularity::tensor: return CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
    case Granularity::row: return CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    case Granularity::tile_1x128: return CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    case Granularity::block_128x128: return CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    default: break;
  }
  DAEDALUS_ASSERT(false);  // granularity checked by supported_pair
  return -1;
}

bool supported_pair(Granularity a, Granularity b) {
  using G = Granularity;
  return (a == G::tensor && b == G::tensor) || (a == G::row && b == G::row) ||
         (a == G::tile_1x128 && b == G::block_128x128) || (a == G::block_128x128 && b == G::tile_1x128) ||
         (a == G::tile_1x128 && b == G::tile_1x128);
}

Shape expected_scale_shape(const QuantizedTensor& q) {
  const int64_t rows = q.rows(), kb = ceil_div(q.cols(), 128);
  switch (q.granularity) {
    case Granularity::tensor: return {1};
    case Granularity::row: return {rows};
    case Granularity::tile_1x128: return {rows, kb};
    default: return {ceil_div(rows, 128), kb};
  }
}

void check_operand(const char* name, const QuantizedTensor& q, Device device) {
  DAEDALUS_CHECK(q.data.dim() == 2, "cuda_scaled_gemm: {} must be 2-d, got {}", name, q.data.describe());
  DAEDALUS_CHECK(is_fp8(q.data.dtype()), "cuda_scaled_gemm: {} must be FP8, got {}", name, q.data.describe());
  DAEDALUS_CHECK(q.data.device() == device && q.scale_inv.device() == device,
                 "cuda_scaled_gemm: {} ({}, scale_inv {}) must be on {}", name, q.data.describe(),
                 q.scale_inv.describe(), device.str());
  DAEDALUS_CHECK(q.data.is_contiguous(), "cuda_scaled_gemm: {} must be contiguous (K-major), got {}", name,
                 q.data.describe());
  DAEDALUS_CHECK(reinterpret_cast<uintptr_t>(q.data.data_ptr()) % 16 == 0,
                 "cuda_scaled_gemm: {} data must be 16-byte aligned (cuBLASLt FP8)", name);
  DAEDALUS_CHECK(q.scale_inv.dtype() == DType::f32 && q.scale_inv.shape() == expected_scale_shape(q),
                 "cuda_scaled_gemm: {} ({}) needs fp32 scale_inv of shape {}, got {}", name,
                 granularity_name(q.granularity), shape_str(expected_scale_shape(q)), q.scale_inv.describe());
}

// Shape rules shared by both GEMMs: a [M, K], b [N, K].
void check_dims(const char* op, int64_t m, int64_t n, int64_t k, int64_t k_align, const char* k_why) {
  DAEDALUS_CHECK(k % k_align == 0, "{}: K = {} must be a multiple of {} ({})", op, k, k_align, k_why);
  DAEDALUS_CHECK(m % 8 == 0, "{}: M = {} (rows of a) must be a multiple of 8 (cuBLASLt tensor-core tiles; pad a)", op,
                 m);
  DAEDALUS_CHECK(n % 8 == 0, "{}: N = {} (rows of b) must be a multiple of 8 (cuBLASLt tensor-core tiles; pad b)", op,
                 n);
}

}  // namespace

namespace {

// The checks of cuda_scaled_gemm (all before any CUDA call); returns the device.
Device check_scaled_gemm(const QuantizedTensor& a, const QuantizedTensor& b) {
  DAEDALUS_CHECK(supported_pair(a.granularity, b.granularity),
                 "cuda_scaled_gemm: scale granularities {} x {} are not a pair cuBLASLt takes on Hopper "
                 "(tensor x tensor, row x row, tile_1x128 x block_128x128, block_128x128 x tile_1x128, "
                 "tile_1x128 x tile_1x128)",
                 granularity_name(a.granularity), granularity_name(b.granularity));
  DAEDALUS_CHECK(!(a.format == Format::e5m2 && b.format == Format::e5m2),
                 "cuda_scaled_gemm: e5m2 x e5m2 is not supported by cuBLASLt FP8 GEMMs (one operand must be e4m3)");
  DAEDALUS_CHECK(a.data.dim() == 2 && b.data.dim() == 2, "cuda_scaled_gemm: a and b must be 2-d, got {} and {}",
                 a.data.describe(), b.data.describe());
  const int64_t m = a.rows(), n = b.rows(), k = a.cols();
  DAEDALUS_CHECK(b.cols() == k, "cuda_scaled_gemm: a [M, K] = {} and b [N, K] = {} disagree on K", a.data.describe(),
                 b.data.describe());
  check_dims("cuda_scaled_gemm", m, n, k, 16, "cuBLASLt FP8 needs 16-byte leading dimensions: lda = ldb = K bytes");
  const bool block_modes = a.granularity == Granularity::tile_1x128 || a.granularity == Granularity::block_128x128;
  DAEDALUS_CHECK(!block_modes || k % 128 == 0,
                 "cuda_scaled_gemm: K = {} must be a multiple of 128 for the {} x {} scale modes (one scale per 128 "
                 "elements of K; pad K)",
                 k, granularity_name(a.granularity), granularity_name(b.granularity));
  const Device device = a.data.device();
  DAEDALUS_CHECK(device.is_cuda(), "cuda_scaled_gemm: operands must be on a CUDA device, got {}", a.data.describe());
  check_operand("a", a, device);
  check_operand("b", b, device);
  return device;
}

// d [M, N] fp32 row-major with leading dimension N (device memory) = a · bᵀ; operands checked.
void scaled_gemm_into(const QuantizedTensor& a, const QuantizedTensor& b, void* d, Device device) {
  const int64_t m = a.rows(), n = b.rows(), k = a.cols();
  Tensor a_scales, b_scales;
  const auto lt_type = [](Format f) { return f == Format::e4m3 ? CUDA_R_8F_E4M3 : CUDA_R_8F_E5M2; };
  LtGemm g;
  g.device = device.index;
  g.m = n;  // yᵀ = b · aᵀ: cuBLASLt's A is b, its B is a
  g.n = m;
  g.k = k;
  g.a_type = lt_type(b.format);
  g.b_type = lt_type(a.format);
  g.a = b.data.data_ptr();
  g.b = a.data.data_ptr();
  g.d = d;
  g.scaled = true;
  g.a_scale_mode = scale_mode(b.granularity);
  g.b_scale_mode = scale_mode(a.granularity);
  g.a_scale = lt_scales(b, b_scales);
  g.b_scale = lt_scales(a, a_scales);
  g.what = "cuda_scaled_gemm";
  run_lt_gemm(g);
}

}  // namespace

Tensor cuda_scaled_gemm(const QuantizedTensor& a, const QuantizedTensor& b) {
  const Device device = check_scaled_gemm(a, b);
  const int64_t m = a.rows(), n = b.rows(), k = a.cols();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  if (m == 0 || n == 0 || k == 0) return Tensor::zeros({m, n}, DType::f32, device);
  Tensor y = Tensor::empty({m, n}, DType::f32, device);
  scaled_gemm_into(a, b, y.data_ptr(), device);
  return y;
}

GroupedGemmBackend parse_grouped_gemm_backend(const char* value) {
  const std::string v = value == nullptr ? "" : value;
  if (v.empty() || v == "cublaslt") return GroupedGemmBackend::cublaslt_per_group;
  if (v == "kernel") return GroupedGemmBackend::kernel;
  DAEDALUS_FAIL(
      "DAEDALUS_FP8_GROUPED_GEMM={}: expected \"cublaslt\" (one cuBLASLt call per group, the default) or "
      "\"kernel\" (the one-launch grouped FP8 kernel, fp8/cuda/grouped_gemm_kernel.h)",
      v);
}

GroupedGemmBackend grouped_gemm_backend() {
  static const GroupedGemmBackend backend = parse_grouped_gemm_backend(std::getenv("DAEDALUS_FP8_GROUPED_GEMM"));
  return backend;
}

Tensor cuda_grouped_scaled_gemm(const std::vector<QuantizedTensor>& a, const std::vector<QuantizedTensor>& b,
                                const std::vector<int64_t>& offsets, GroupedGemmBackend backend) {
  const size_t groups = b.size();
  DAEDALUS_CHECK(groups >= 1 && a.size() == groups && offsets.size() == groups + 1 && offsets.front() == 0,
                 "cuda_grouped_scaled_gemm: {} a operands, {} b operands and {} offsets: expected G, G and G + 1 "
                 "offsets starting at 0",
                 a.size(), groups, offsets.size());
  const int64_t rows = offsets.back(), n = b[0].rows();
  const Device device = b[0].data.device();
  DAEDALUS_CHECK(device.is_cuda(), "cuda_grouped_scaled_gemm: operands must be on a CUDA device, got {}",
                 b[0].data.describe());
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  // The one-launch kernel where it takes the operands; everything else stays on the cuBLASLt loop.
  if (backend == GroupedGemmBackend::kernel && grouped_gemm_1x128_128x128_unsupported(a, b, offsets).empty())
    return grouped_gemm_1x128_128x128(a, b, offsets);
  Tensor y = Tensor::zeros({rows, n}, DType::f32, device);
  for (size_t g = 0; g < groups; ++g) {
    const int64_t begin = offsets[g], end = offsets[g + 1];
    DAEDALUS_CHECK(begin <= end, "cuda_grouped_scaled_gemm: offsets decrease at group {}", g);
    DAEDALUS_CHECK(b[g].rows() == n, "cuda_grouped_scaled_gemm: b[{}] has {} rows, b[0] {}", g, b[g].rows(), n);
    if (begin == end) continue;
    DAEDALUS_CHECK(a[g].data.defined() && a[g].rows() == end - begin,
                   "cuda_grouped_scaled_gemm: a[{}] must have the group's {} rows", g, end - begin);
    if (a[g].cols() == 0) continue;  // K = 0: the rows stay zero
    // One cuBLASLt call per non-empty group (see the header: no grouped FP8 block-scaled GEMM in
    // cuBLASLt 13). Rows of group g start at y + begin * N: aligned for cuBLASLt when N % 8 == 0.
    if ((end - begin) % 8 == 0) {
      check_scaled_gemm(a[g], b[g]);
      scaled_gemm_into(a[g], b[g], static_cast<float*>(y.data_ptr()) + begin * n, device);
    } else {
      const int64_t padded = round_up(end - begin, 8);
      const Tensor yg = cuda_scaled_gemm(pad_quantized(a[g], padded, a[g].cols()), b[g]);
      y.slice(0, begin, end).copy_(yg.slice(0, 0, end - begin));
    }
  }
  return y;
}

Tensor cuda_bf16_gemm_tn(const Tensor& a, const Tensor& b) {
  DAEDALUS_CHECK(a.dim() == 2 && b.dim() == 2, "cuda_bf16_gemm_tn: a and b must be 2-d, got {} and {}", a.describe(),
                 b.describe());
  DAEDALUS_CHECK(a.dtype() == DType::bf16 && b.dtype() == DType::bf16,
                 "cuda_bf16_gemm_tn: a and b must be bf16, got {} and {}", a.describe(), b.describe());
  const Device device = a.device();
  DAEDALUS_CHECK(device.is_cuda() && b.device() == device,
                 "cuda_bf16_gemm_tn: a and b must be on one CUDA device, got {} and {}", a.describe(), b.describe());
  DAEDALUS_CHECK(a.is_contiguous() && b.is_contiguous(), "cuda_bf16_gemm_tn: a and b must be contiguous, got {} and {}",
                 a.describe(), b.describe());
  const int64_t m = a.size(0), n = b.size(0), k = a.size(1);
  DAEDALUS_CHECK(b.size(1) == k, "cuda_bf16_gemm_tn: a [M, K] = {} and b [N, K] = {} disagree on K", a.describe(),
                 b.describe());
  check_dims("cuda_bf16_gemm_tn", m, n, k, 8, "16-byte leading dimensions: lda = ldb = 2K bytes");
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  if (m == 0 || n == 0 || k == 0) return Tensor::zeros({m, n}, DType::f32, device);
  Tensor y = Tensor::empty({m, n}, DType::f32, device);
  LtGemm g;
  g.device = device.index;
  g.m = n;
  g.n = m;
  g.k = k;
  g.a_type = CUDA_R_16BF;
  g.b_type = CUDA_R_16BF;
  g.a = b.data_ptr();
  g.b = a.data_ptr();
  g.d = y.data_ptr();
  g.what = "cuda_bf16_gemm_tn";
  run_lt_gemm(g);
  return y;
}

}  // namespace daedalus::fp8
