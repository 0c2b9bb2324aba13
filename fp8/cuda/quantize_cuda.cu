// CUDA twin of fp8::quantize / quantize_with_scale / QuantizedTensor::dequantize (fp8/quantized.h)
// for every granularity: tile_1x128 (activations, gradients), block_128x128 (weights), row,
// tensor (current or a given delayed-scaling scale) and mx_1x32 (no Hopper GEMM takes it; the
// quantizer exists so that the mxfp8 recipe's operands are the CPU's bits on the device too).
// Results are bit-identical to the CPU quantizer: the amax is an exact maximum, the scale comes
// from compute_scale / compute_mx_scale_inv (fp8/format.h: the __host__ __device__ arithmetic
// behind fp8::scale_from_amax, shared with the CPU quantizer), the cast is the shared codec
// (autograd/dtype_codec.h: on the device the hardware convert, equal to the CPU's integer encoder
// for every float) on a product rounded once (__fmul_rn, no FMA contraction; a NaN input kept
// with its sign, mul_keep_nan), stochastic
// rounding draws the same Philox word per element (stochastic_word_hd), and scale_inv = 1 / scale
// in IEEE float (mx_1x32: the power of two itself).
//
// x [rows, cols] fp32 | bf16 -> q [rows, cols] fp8 (contiguous), scale_inv fp32 row-major:
//   tile_1x128  [rows, ceil(cols/128)]  row-major x (unit column stride, any row stride): one warp
//                                       per 4 tiles, 4 elements per lane and access when cols and
//                                       the row stride are multiples of 4 (else one warp per tile,
//                                       element by element). Transposed x (unit ROW stride: the Wgrad operands
//                                       dYᵀ, Xᵀ as views of row-major dY, X): one 256-thread block
//                                       per 32 rows x 128 cols, staged through shared memory so
//                                       that reads and writes are both coalesced (no transpose copy)
//   mx_1x32     [rows, ceil(cols/32)]   one warp per 1x32 tile, one element per lane
//   block_128x128 [ceil(rows/128), ceil(cols/128)]  one 256-thread block per block: row-major x
//                                       (multiples of 4 as above) read once into registers, 4 per
//                                       access; any other strides element by element (the Dgrad
//                                       operand Wᵀ is read in W's order, coalesced)
//   row         [rows]                  one 256-thread block per row (contiguous copy first)
//   tensor      [1]                     amax kernel (atomicMax), then a cast kernel (4 per access
//                                       when the size is a multiple of 4); or the given
//                                       scale (delayed scaling) and the cast kernel alone
// The amax is taken over |x| as IEEE bit patterns (unsigned max): for finite non-negative floats
// the order is the float order, and a NaN anywhere gives a NaN amax (scale 1), never a hidden one.
#include <cuda_runtime.h>

#include "autograd/check.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"
#include "autograd/cuda/swiglu.cuh"
#include "autograd/kernels/activation.h"
#include "fp8/cuda/scaled_gemm_cuda.h"
#include "fp8/format.h"

namespace daedalus::fp8 {

namespace {

using cuda::kThreads;

// How a block's scale is made: compute_scale from the amax (margin, power of two), or the MX rule.
struct ScaleParams {
  float max_value;
  int margin;
  bool power_of_two;
  bool mx;
};

// Stochastic rounding: element (r, c) draws stochastic_word_hd(seed, r * cols + c) when enabled.
struct Rounding {
  bool stochastic;
  uint64_t seed;
};

__device__ __forceinline__ uint32_t abs_bits(float v) { return codec::float_bits(v) & 0x7FFFFFFFu; }

__device__ __forceinline__ uint32_t warp_max(uint32_t m) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, offset));
  return m;
}

// Max over the block (blockDim.x == kThreads), returned to every thread.
__device__ __forceinline__ uint32_t block_max(uint32_t m) {
  __shared__ uint32_t partial[kThreads / 32];
  m = warp_max(m);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  if (lane == 0) partial[warp] = m;
  __syncthreads();
  m = lane < kThreads / 32 ? partial[lane] : 0u;
  m = warp_max(m);
  __syncthreads();  // partial[] may be reused by the caller's next call
  return m;
}

// A block's scale and the scale_inv stored for it (quantized.cpp's block_scale).
struct BlockScale {
  float scale, scale_inv;
};

__device__ __forceinline__ BlockScale scale_of(uint32_t amax_bits, const ScaleParams& p) {
  const float amax = codec::bits_float(amax_bits);
  if (p.mx) {
    const float scale_inv = compute_mx_scale_inv(amax, p.max_value);
    return {1.0f / scale_inv, scale_inv};  // exact: powers of two within float's range
  }
  const float scale = compute_scale(amax, p.max_value, p.margin, p.power_of_two);
  return {scale, 1.0f / scale};
}

// v * s rounded to float once (no FMA contraction), as on the CPU — and a NaN v kept as it is:
// the GPU's multiply returns the canonical NaN 0x7FFFFFFF (positive) for any NaN input, where the
// CPU's keeps the input NaN and its sign, which the FP8 NaN code carries (0x7F / 0xFF). s is
// finite here (a scale or a scale_inv), so only a NaN v can give a NaN product.
__device__ __forceinline__ float mul_keep_nan(float v, float s) { return isnan(v) ? v : __fmul_rn(v, s); }

// The product is rounded to float once, as on the CPU; `index` = r * cols + c.
template <typename Q>
__device__ __forceinline__ Q quantize_element(float v, float scale, const Rounding& rounding, int64_t index) {
  const float scaled = mul_keep_nan(v, scale);
  if (rounding.stochastic) {
    const uint32_t word = stochastic_word_hd(rounding.seed, uint64_t(index));
    if constexpr (std::is_same_v<Q, fp8e4m3>) {
      return float_to_e4m3_stochastic(scaled, word);
    } else {
      return float_to_e5m2_stochastic(scaled, word);
    }
  }
  return from_float<Q>(scaled);
}

// ---- 4-wide access (the vector kernels) -------------------------------------------------------
// Four consecutive elements in one load (16 bytes of fp32, 8 of bf16) and four FP8 codes in one
// 4-byte store. Callers guarantee the alignment (vector_ok below); `live` false loads zeros.

template <typename S>
__device__ __forceinline__ void load4(const S* p, bool live, float (&v)[4]) {
  if (!live) {
    v[0] = v[1] = v[2] = v[3] = 0.0f;
  } else if constexpr (std::is_same_v<S, float>) {
    const float4 f = *reinterpret_cast<const float4*>(p);
    v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
  } else {
    const uint2 u = *reinterpret_cast<const uint2*>(p);  // four bf16, little-endian
    v[0] = to_float(bf16{uint16_t(u.x & 0xFFFFu)}), v[1] = to_float(bf16{uint16_t(u.x >> 16)});
    v[2] = to_float(bf16{uint16_t(u.y & 0xFFFFu)}), v[3] = to_float(bf16{uint16_t(u.y >> 16)});
  }
}

__device__ __forceinline__ uint32_t max_abs4(const float (&v)[4]) {
  return max(max(abs_bits(v[0]), abs_bits(v[1])), max(abs_bits(v[2]), abs_bits(v[3])));
}

// q[index .. index + 3] = the four values quantized (index is a multiple of 4).
template <typename Q>
__device__ __forceinline__ void quantize_store4(Q* q, int64_t index, const float (&v)[4], float scale,
                                                const Rounding& rounding) {
  uint32_t packed = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) packed |= uint32_t(quantize_element<Q>(v[j], scale, rounding, index + j).bits) << (8 * j);
  *reinterpret_cast<uint32_t*>(q + index) = packed;
}

// Where the 4-wide 1x128 kernel reads its values: Rows4, a row-major fp32/bf16 x; Swiglu4, the
// SwiGLU of row-major gate and up (the fused SwiGLU -> 1x128 quantizer: h is never written), each
// value rounded to S as kernels::swiglu stores it, with the activation kernel's own formula.
template <typename S>
struct Rows4 {
  const S* x;
  int64_t ld;
  __device__ void operator()(int64_t r, int64_t c, bool live, float (&v)[4]) const { load4(x + r * ld + c, live, v); }
};

template <typename S>
struct Swiglu4 {
  const S* gate;
  const S* up;
  int64_t ld;
  __device__ void operator()(int64_t r, int64_t c, bool live, float (&v)[4]) const {
    float g[4], u[4];
    load4(gate + r * ld + c, live, g);
    load4(up + r * ld + c, live, u);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = to_float(from_float<S>(cuda::swiglu_value(g[j], u[j])));
  }
};

// Row-wise 1x128 tiles, vectorized: [rows, cols] values from `load` (cols and the row stride
// multiples of 4, the source 4-element aligned). Lane l holds columns 4l .. 4l+3 of a tile; a warp
// quantizes kTiles consecutive tiles (row-major order: usually one contiguous stretch of a row) and
// issues all of their loads before the first reduction, so that each warp keeps 2 KiB (fp32) in
// flight.
template <int kTiles, typename Load, typename Q>
__global__ void quantize_1x128_vec_kernel(Load load, Q* q, float* scale_inv, int64_t rows, int64_t cols,
                                          int64_t tiles_per_row, ScaleParams p, Rounding rounding) {
  const int64_t total = rows * tiles_per_row;
  const int64_t first = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32 * kTiles;
  const int lane = int(threadIdx.x) % 32;
  if (first >= total) return;  // whole warps leave together
  float v[kTiles][4];
  uint32_t m[kTiles];
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    const int64_t tile = first + i, r = tile / tiles_per_row, c = (tile % tiles_per_row) * 128 + 4 * lane;
    load(r, c, tile < total && c < cols, v[i]);
    m[i] = max_abs4(v[i]);
  }
#pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    const int64_t tile = first + i;
    if (tile >= total) break;  // warp-uniform
    const BlockScale s = scale_of(warp_max(m[i]), p);
    const int64_t r = tile / tiles_per_row, c = (tile % tiles_per_row) * 128 + 4 * lane;
    if (c < cols) quantize_store4(q, r * cols + c, v[i], s.scale, rounding);
    if (lane == 0) scale_inv[tile] = s.scale_inv;
  }
}

constexpr int kVecTiles = 4;  // tiles per warp of quantize_1x128_vec_kernel

// 128x128 blocks of a row-major x (x[r * ld + c], cols and ld multiples of 4, x aligned),
// vectorized: one 256-thread block per block; thread t holds columns 4 (t % 32) .. +3 of rows
// t / 32 + 8 i, i < 16 — 64 values in registers, read once, so the scale's reduction and the
// cast need a single pass over memory.
template <typename S, typename Q>
__global__ void quantize_128x128_vec_kernel(const S* x, int64_t ld, Q* q, float* scale_inv, int64_t rows, int64_t cols,
                                            int64_t tiles_c, ScaleParams p, Rounding rounding) {
  static_assert(kThreads == 256, "8 rows of 32 four-column groups per pass, 16 passes per 128x128 block");
  constexpr int kPasses = 128 / (kThreads / 32);
  const int64_t r0 = (blockIdx.x / tiles_c) * 128, c = (blockIdx.x % tiles_c) * 128 + 4 * (threadIdx.x % 32);
  const int64_t rt = r0 + int(threadIdx.x) / 32;
  float v[kPasses][4];
  uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int64_t r = rt + 8 * i;
    load4(x + r * ld + c, r < rows && c < cols, v[i]);
    m = max(m, max_abs4(v[i]));
  }
  const BlockScale s = scale_of(block_max(m), p);
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int64_t r = rt + 8 * i;
    if (r < rows && c < cols) quantize_store4(q, r * cols + c, v[i], s.scale, rounding);
  }
  if (threadIdx.x == 0) scale_inv[blockIdx.x] = s.scale_inv;
}

// x [rows, cols] with element (r, c) at x[r * ld + c]; q [rows, cols] contiguous; scale_inv
// [rows, tiles_per_row]. Tiles of kWidth (128 or 32) columns; warp w quantizes tile
// (w / tiles_per_row, w % tiles_per_row); lane l holds columns l, l+32, ... of it (coalesced).
template <int kWidth, typename S, typename Q>
__global__ void quantize_rowwise_tiles_kernel(const S* x, int64_t ld, Q* q, float* scale_inv, int64_t rows,
                                              int64_t cols, int64_t tiles_per_row, ScaleParams p, Rounding rounding) {
  static_assert(kWidth % 32 == 0, "a tile is a whole number of warp-wide column groups");
  constexpr int kPerLane = kWidth / 32;
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = int(threadIdx.x) % 32;
  if (warp >= rows * tiles_per_row) return;  // whole warps leave together
  const int64_t r = warp / tiles_per_row, c0 = (warp % tiles_per_row) * kWidth;
  const int64_t width = min(int64_t(kWidth), cols - c0);
  float v[kPerLane];
  uint32_t m = 0;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int c = lane + 32 * j;
    v[j] = c < width ? to_float(x[r * ld + c0 + c]) : 0.0f;
    m = max(m, abs_bits(v[j]));
  }
  const BlockScale s = scale_of(warp_max(m), p);
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int c = lane + 32 * j;
    const int64_t index = r * cols + c0 + c;
    if (c < width) q[index] = quantize_element<Q>(v[j], s.scale, rounding, index);
  }
  if (lane == 0) scale_inv[warp] = s.scale_inv;
}

// The transposed 1x128 quantizer ("1x128 becomes 128x1" for Wgrad): the [rows, cols] operand is
// the transpose of a row-major [cols, rows] source, element (r, c) = source(c, r) at c * ld + r.
// One block covers rows [r0, r0 + 32) x the 128 columns of tile t: it reads the 128 x 32 patch of
// the source row by row (lanes along r: coalesced) into shared memory, then each warp quantizes 4
// of the 32 tiles (lanes along c: coalesced writes of q). The source is a Source functor: a plain
// fp32/bf16 tensor, or FP8 codes with their 1x128 scales dequantized on the fly.
template <typename S>
struct PlainSource {
  const S* x;
  int64_t ld;
  __device__ float operator()(int64_t c, int64_t r) const { return to_float(x[c * ld + r]); }
};

// q(X) [cols, rows] with 1x128 tiles along rows, scale_inv [cols, nbc]: the value is
// dequantize()'s single float product q * scale_inv (quantized.cpp, cuda_dequantize_kernel).
template <typename Q>
struct Dequantized1x128Source {
  const Q* q;
  const float* scale_inv;
  int64_t ld, nbc;
  __device__ float operator()(int64_t c, int64_t r) const {
    return mul_keep_nan(to_float(q[c * ld + r]), scale_inv[c * nbc + r / 128]);
  }
};

constexpr int kTransposeRows = 32;
template <typename Source, typename Q>
__global__ void quantize_1x128_transposed_kernel(Source source, Q* q, float* scale_inv, int64_t rows, int64_t cols,
                                                 int64_t tiles_per_row, ScaleParams p, Rounding rounding) {
  static_assert(kThreads == 256, "8 warps: 16 source rows per warp to load, 4 tiles per warp to quantize");
  __shared__ float patch[128][kTransposeRows + 1];  // [c - c0][r - r0], padded: conflict-free both ways
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t t = blockIdx.x % tiles_per_row, r0 = (blockIdx.x / tiles_per_row) * int64_t(kTransposeRows);
  const int64_t c0 = t * 128;
  const int64_t r = r0 + lane;
#pragma unroll 4
  for (int i = warp; i < 128; i += kThreads / 32) {
    const int64_t c = c0 + i;
    patch[i][lane] = (r < rows && c < cols) ? source(c, r) : 0.0f;
  }
  __syncthreads();
  const int64_t width = min(int64_t(128), cols - c0);
#pragma unroll
  for (int k = 0; k < kTransposeRows / (kThreads / 32); ++k) {
    const int local = warp * (kTransposeRows / (kThreads / 32)) + k;
    const int64_t row = r0 + local;
    if (row >= rows) break;  // warp-uniform
    float v[4];
    uint32_t m = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      v[j] = patch[lane + 32 * j][local];  // zero beyond width (loaded as 0)
      m = max(m, abs_bits(v[j]));
    }
    const BlockScale s = scale_of(warp_max(m), p);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = lane + 32 * j;
      const int64_t index = row * cols + c0 + c;
      if (c < width) q[index] = quantize_element<Q>(v[j], s.scale, rounding, index);
    }
    if (lane == 0) scale_inv[row * tiles_per_row + t] = s.scale_inv;
  }
}

// One block per (tile_rows x tile_cols) tile of x [rows, cols] (element (r, c) at x[r * rs + c * cs]);
// scale_inv [tiles_r, tiles_c] row-major. block_128x128: 128 x 128; row: 1 x cols. With
// `rows_fastest` (a transposed view, rs == 1) the threads walk the tile down its rows so that the
// reads stay coalesced.
template <typename S, typename Q>
__global__ void quantize_tile_kernel(const S* x, int64_t rs, int64_t cs, bool rows_fastest, Q* q, float* scale_inv,
                                     int64_t rows, int64_t cols, int64_t tile_rows, int64_t tile_cols, int64_t tiles_c,
                                     ScaleParams p, Rounding rounding) {
  const int64_t tile = blockIdx.x;
  const int64_t r0 = (tile / tiles_c) * tile_rows, c0 = (tile % tiles_c) * tile_cols;
  const int64_t h = min(tile_rows, rows - r0), w = min(tile_cols, cols - c0), n = h * w;
  const auto at = [&](int64_t i, int64_t& r, int64_t& c) {
    r = r0 + (rows_fastest ? i % h : i / w);
    c = c0 + (rows_fastest ? i / h : i % w);
  };
  uint32_t m = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    int64_t r, c;
    at(i, r, c);
    m = max(m, abs_bits(to_float(x[r * rs + c * cs])));
  }
  const BlockScale s = scale_of(block_max(m), p);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    int64_t r, c;
    at(i, r, c);
    const int64_t index = r * cols + c;
    q[index] = quantize_element<Q>(to_float(x[r * rs + c * cs]), s.scale, rounding, index);
  }
  if (threadIdx.x == 0) scale_inv[tile] = s.scale_inv;
}

// Per-tensor amax: grid-stride max of |x| bits, one atomicMax per block into *amax_bits (zeroed).
template <typename S>
__global__ void amax_kernel(const S* x, int64_t n, uint32_t* amax_bits) {
  uint32_t m = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    m = max(m, abs_bits(to_float(x[i])));
  m = block_max(m);
  if (threadIdx.x == 0) atomicMax(amax_bits, m);
}

// The same two kernels, 4 elements per load and store (n a multiple of 4, x aligned).
template <typename S>
__global__ void amax_vec_kernel(const S* x, int64_t n, uint32_t* amax_bits) {
  uint32_t m = 0;
  for (int64_t i = 4 * (blockIdx.x * int64_t(blockDim.x) + threadIdx.x); i < n;
       i += 4 * int64_t(gridDim.x) * blockDim.x) {
    float v[4];
    load4(x + i, true, v);
    m = max(m, max_abs4(v));
  }
  m = block_max(m);
  if (threadIdx.x == 0) atomicMax(amax_bits, m);
}

template <typename S, typename Q>
__global__ void quantize_tensor_vec_kernel(const S* x, Q* q, float* scale_inv, int64_t n, const uint32_t* amax_bits,
                                           float given_scale, ScaleParams p, Rounding rounding) {
  const float scale = amax_bits != nullptr ? scale_of(*amax_bits, p).scale : given_scale;
  for (int64_t i = 4 * (blockIdx.x * int64_t(blockDim.x) + threadIdx.x); i < n;
       i += 4 * int64_t(gridDim.x) * blockDim.x) {
    float v[4];
    load4(x + i, true, v);
    quantize_store4(q, i, v, scale, rounding);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale_inv = 1.0f / scale;
}

// x, q [n] contiguous. The scale comes from *amax_bits (current scaling) or, when amax_bits is
// null, is `given_scale` (delayed scaling: quantize_with_scale stores 1 / scale as scale_inv).
template <typename S, typename Q>
__global__ void quantize_tensor_kernel(const S* x, Q* q, float* scale_inv, int64_t n, const uint32_t* amax_bits,
                                       float given_scale, ScaleParams p, Rounding rounding) {
  const float scale = amax_bits != nullptr ? scale_of(*amax_bits, p).scale : given_scale;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    q[i] = quantize_element<Q>(to_float(x[i]), scale, rounding, i);
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale_inv = 1.0f / scale;
}

// y [rows, cols] fp32 = q [rows, cols] * scale_inv of its block: block (r / br, c / bc) at
// s[(r / br) * nbc + c / bc] (quantized.cpp's dequantize, the same single float product).
template <typename Q>
__global__ void dequantize_kernel(const Q* q, const float* s, float* y, int64_t rows, int64_t cols, int64_t br,
                                  int64_t bc, int64_t nbc) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    y[i] = mul_keep_nan(to_float(q[i]), s[(r / br) * nbc + c / bc]);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether the 4-wide kernels may read x (row stride `ld` in elements; cols per row) and write q.
template <typename S>
bool vector_ok(const S* x, int64_t ld, int64_t cols) {
  return cols % 4 == 0 && ld % 4 == 0 && reinterpret_cast<uintptr_t>(x) % (4 * sizeof(S)) == 0;
}

unsigned grid_of(int64_t blocks, const char* what) {
  DAEDALUS_CHECK(blocks < (int64_t(1) << 31), "cuda_quantize: {} needs {} blocks, more than a grid holds", what,
                 blocks);
  return unsigned(blocks);
}

unsigned vec_1x128_grid(int64_t rows, int64_t tiles_per_row) {
  return grid_of(ceil_div(rows * tiles_per_row, kVecTiles * kThreads / 32), "tile_1x128");
}

// Calls fn.template operator()<Q>() with Q the storage type of `format`.
template <typename Fn>
void dispatch_format(Format format, Fn&& fn) {
  if (format == Format::e4m3) {
    fn.template operator()<fp8e4m3>();
  } else {
    fn.template operator()<fp8e5m2>();
  }
}

// Calls fn.template operator()<S, Q>() for x's dtype and the format.
template <typename Fn>
void dispatch_source_and_format(const char* op, DType source, Format format, Fn&& fn) {
  dispatch_float(op, source,
                 [&]<typename S>() { dispatch_format(format, [&]<typename Q>() { fn.template operator()<S, Q>(); }); });
}

void check_input(const Tensor& x, const char* op) {
  DAEDALUS_CHECK(x.dim() == 2, "{}: x must be 2-d [rows, cols], got {}", op, x.describe());
  DAEDALUS_CHECK(x.device().is_cuda(), "{}: x must be on a CUDA device, got {}", op, x.describe());
  DAEDALUS_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16, "{}: x must be fp32 or bf16, got {}", op,
                 x.describe());
}

// The output of a quantizer of x [rows, cols]: codes and scale_inv (its shape per granularity,
// fp8/quantized.h) allocated on `device`, unwritten.
QuantizedTensor empty_quantized(int64_t rows, int64_t cols, Granularity granularity, Format format, Device device) {
  QuantizedTensor out;
  out.granularity = granularity;
  out.format = format;
  out.data = Tensor::empty({rows, cols}, dtype_of(format), device);
  const int64_t tiles_c = ceil_div(cols, 128), tiles_r = ceil_div(rows, 128);
  switch (granularity) {
    case Granularity::tensor: out.scale_inv = Tensor::empty({1}, DType::f32, device); break;
    case Granularity::row: out.scale_inv = Tensor::empty({rows}, DType::f32, device); break;
    case Granularity::tile_1x128: out.scale_inv = Tensor::empty({rows, tiles_c}, DType::f32, device); break;
    case Granularity::mx_1x32: out.scale_inv = Tensor::empty({rows, ceil_div(cols, 32)}, DType::f32, device); break;
    case Granularity::block_128x128: out.scale_inv = Tensor::empty({tiles_r, tiles_c}, DType::f32, device); break;
  }
  return out;
}

}  // namespace

QuantizedTensor cuda_quantize(const Tensor& x_in, Granularity granularity, Format format, const ScaleOptions& options) {
  check_input(x_in, "cuda_quantize");
  const int64_t rows = x_in.size(0), cols = x_in.size(1);
  const Device device = x_in.device();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = cuda::compute_stream(device.index);

  QuantizedTensor out = empty_quantized(rows, cols, granularity, format, device);
  const int64_t tiles_c = ceil_div(cols, 128), tiles_r = ceil_div(rows, 128);
  const int64_t n = rows * cols;
  if (n == 0) {
    out.scale_inv.fill_(1.0);  // an empty operand keeps scale 1 (as on the CPU)
    return out;
  }
  const ScaleParams p{float(max_finite(format)), options.margin, options.power_of_two,
                      granularity == Granularity::mx_1x32};
  const Rounding rounding{options.stochastic_rounding, options.seed};
  float* scale_inv = out.scale_inv.data<float>();

  // Which layout the kernels read: row-major with unit column stride (any row stride), a transposed
  // view (unit row stride), or anything else, copied to contiguous first.
  const bool unit_cols = x_in.stride(1) == 1 || cols == 1;
  const bool unit_rows = !unit_cols && (x_in.stride(0) == 1 || rows == 1);
  const bool strided_ok = granularity == Granularity::tile_1x128 || granularity == Granularity::block_128x128 ||
                          granularity == Granularity::mx_1x32;
  const Tensor x =
      (strided_ok && (unit_cols || (unit_rows && granularity != Granularity::mx_1x32))) ? x_in : x_in.contiguous();
  const bool transposed = x.stride(1) != 1 && cols != 1;  // then x.stride(0) == 1
  const int64_t rs = rows == 1 ? cols : x.stride(0), cs = cols == 1 ? 1 : x.stride(1);
  Tensor amax;  // tensor granularity: the amax as IEEE bits, alive until the cast kernel is queued
  if (granularity == Granularity::tensor) amax = Tensor::zeros({1}, DType::i32, device);

  dispatch_source_and_format("cuda_quantize", x.dtype(), format, [&]<typename S, typename Q>() {
    const S* src = static_cast<const S*>(x.data_ptr());
    Q* dst = static_cast<Q*>(out.data.data_ptr());
    switch (granularity) {
      case Granularity::tile_1x128:
        if (transposed) {
          quantize_1x128_transposed_kernel<PlainSource<S>, Q>
              <<<grid_of(ceil_div(rows, kTransposeRows) * tiles_c, "tile_1x128 (transposed)"), kThreads, 0, stream>>>(
                  PlainSource<S>{src, cs}, dst, scale_inv, rows, cols, tiles_c, p, rounding);
        } else if (vector_ok(src, rs, cols)) {
          quantize_1x128_vec_kernel<kVecTiles><<<vec_1x128_grid(rows, tiles_c), kThreads, 0, stream>>>(
              Rows4<S>{src, rs}, dst, scale_inv, rows, cols, tiles_c, p, rounding);
        } else {
          quantize_rowwise_tiles_kernel<128, S, Q>
              <<<grid_of(ceil_div(rows * tiles_c, kThreads / 32), "tile_1x128"), kThreads, 0, stream>>>(
                  src, rs, dst, scale_inv, rows, cols, tiles_c, p, rounding);
        }
        break;
      case Granularity::mx_1x32: {
        const int64_t tiles = ceil_div(cols, 32);
        quantize_rowwise_tiles_kernel<32, S, Q>
            <<<grid_of(ceil_div(rows * tiles, kThreads / 32), "mx_1x32"), kThreads, 0, stream>>>(
                src, rs, dst, scale_inv, rows, cols, tiles, p, rounding);
        break;
      }
      case Granularity::block_128x128:
        if (!transposed && vector_ok(src, rs, cols)) {
          quantize_128x128_vec_kernel<S, Q><<<grid_of(tiles_r * tiles_c, "block_128x128"), kThreads, 0, stream>>>(
              src, rs, dst, scale_inv, rows, cols, tiles_c, p, rounding);
        } else {
          quantize_tile_kernel<S, Q><<<grid_of(tiles_r * tiles_c, "block_128x128"), kThreads, 0, stream>>>(
              src, rs, cs, transposed, dst, scale_inv, rows, cols, 128, 128, tiles_c, p, rounding);
        }
        break;
      case Granularity::row:
        quantize_tile_kernel<S, Q><<<grid_of(rows, "row"), kThreads, 0, stream>>>(
            src, cols, 1, /*rows_fastest=*/false, dst, scale_inv, rows, cols, 1, cols, 1, p, rounding);
        break;
      case Granularity::tensor: {
        auto* amax_bits = static_cast<uint32_t*>(amax.data_ptr());
        if (vector_ok(src, n, n)) {
          amax_vec_kernel<S><<<cuda::blocks_for(n / 4), kThreads, 0, stream>>>(src, n, amax_bits);
          DAEDALUS_CUDA_CHECK_LAUNCH();
          quantize_tensor_vec_kernel<S, Q>
              <<<cuda::blocks_for(n / 4), kThreads, 0, stream>>>(src, dst, scale_inv, n, amax_bits, 1.0f, p, rounding);
        } else {
          amax_kernel<S><<<cuda::blocks_for(n), kThreads, 0, stream>>>(src, n, amax_bits);
          DAEDALUS_CUDA_CHECK_LAUNCH();
          quantize_tensor_kernel<S, Q>
              <<<cuda::blocks_for(n), kThreads, 0, stream>>>(src, dst, scale_inv, n, amax_bits, 1.0f, p, rounding);
        }
        break;
      }
    }
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
  return out;
}

QuantizedTensor cuda_quantize_with_scale(const Tensor& x_in, float scale, Format format) {
  check_input(x_in, "cuda_quantize_with_scale");
  const Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), cols = x.size(1), n = rows * cols;
  const Device device = x.device();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = cuda::compute_stream(device.index);
  QuantizedTensor out = empty_quantized(rows, cols, Granularity::tensor, format, device);
  out.scale_inv.fill_(double(1.0f / scale));  // exact: 1/scale is a float
  if (n == 0) return out;
  const ScaleParams p{float(max_finite(format)), 0, false, false};
  dispatch_source_and_format("cuda_quantize_with_scale", x.dtype(), format, [&]<typename S, typename Q>() {
    const S* src = static_cast<const S*>(x.data_ptr());
    Q* dst = static_cast<Q*>(out.data.data_ptr());
    if (vector_ok(src, n, n)) {
      quantize_tensor_vec_kernel<S, Q><<<cuda::blocks_for(n / 4), kThreads, 0, stream>>>(
          src, dst, out.scale_inv.data<float>(), n, nullptr, scale, p, Rounding{false, 0});
    } else {
      quantize_tensor_kernel<S, Q><<<cuda::blocks_for(n), kThreads, 0, stream>>>(
          src, dst, out.scale_inv.data<float>(), n, nullptr, scale, p, Rounding{false, 0});
    }
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
  return out;
}

QuantizedTensor cuda_swiglu_quantize(const Tensor& gate, const Tensor& up, Format format, const ScaleOptions& options) {
  check_input(gate, "cuda_swiglu_quantize");
  DAEDALUS_CHECK(up.shape() == gate.shape() && up.dtype() == gate.dtype() && up.device() == gate.device(),
                 "cuda_swiglu_quantize: gate {} and up {} must match", gate.describe(), up.describe());
  const int64_t rows = gate.size(0), cols = gate.size(1);
  const bool row_major = (gate.stride(1) == 1 || cols == 1) && (up.stride(1) == 1 || cols == 1) &&
                         (rows == 1 || gate.stride(0) == up.stride(0));
  const int64_t ld = rows == 1 ? cols : gate.stride(0);
  bool fused = row_major && rows * cols > 0;
  dispatch_float("cuda_swiglu_quantize", gate.dtype(), [&]<typename S>() {
    fused = fused && vector_ok(static_cast<const S*>(gate.data_ptr()), ld, cols) &&
            vector_ok(static_cast<const S*>(up.data_ptr()), ld, cols);
  });
  if (!fused) return cuda_quantize(kernels::swiglu(gate, up), Granularity::tile_1x128, format, options);
  const Device device = gate.device();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = cuda::compute_stream(device.index);
  const int64_t tiles_c = ceil_div(cols, 128);
  QuantizedTensor out = empty_quantized(rows, cols, Granularity::tile_1x128, format, device);
  const ScaleParams p{float(max_finite(format)), options.margin, options.power_of_two, false};
  const Rounding rounding{options.stochastic_rounding, options.seed};
  dispatch_source_and_format("cuda_swiglu_quantize", gate.dtype(), format, [&]<typename S, typename Q>() {
    quantize_1x128_vec_kernel<kVecTiles><<<vec_1x128_grid(rows, tiles_c), kThreads, 0, stream>>>(
        Swiglu4<S>{static_cast<const S*>(gate.data_ptr()), static_cast<const S*>(up.data_ptr()), ld},
        static_cast<Q*>(out.data.data_ptr()), out.scale_inv.data<float>(), rows, cols, tiles_c, p, rounding);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
  return out;
}

QuantizedTensor cuda_requantize_transposed(const QuantizedTensor& q, Format format, const ScaleOptions& options) {
  DAEDALUS_CHECK(q.granularity == Granularity::tile_1x128 && q.data.device().is_cuda(),
                 "cuda_requantize_transposed: needs 1x128 tiles on a CUDA device, got {} on {}",
                 granularity_name(q.granularity), q.data.device().str());
  const Tensor data = q.data.contiguous(), s = q.scale_inv.contiguous();
  const int64_t rows = data.size(1), cols = data.size(0);  // of the transpose
  const int64_t tiles_c = ceil_div(cols, 128);
  const Device device = data.device();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = cuda::compute_stream(device.index);
  QuantizedTensor out = empty_quantized(rows, cols, Granularity::tile_1x128, format, device);
  if (rows * cols == 0) {
    out.scale_inv.fill_(1.0);
    return out;
  }
  const ScaleParams p{float(max_finite(format)), options.margin, options.power_of_two, false};
  const Rounding rounding{options.stochastic_rounding, options.seed};
  const auto launch = [&]<typename QS>() {
    const Dequantized1x128Source<QS> source{static_cast<const QS*>(data.data_ptr()), s.data<float>(), rows,
                                            ceil_div(rows, 128)};
    const unsigned grid = grid_of(ceil_div(rows, kTransposeRows) * tiles_c, "requantize (transposed)");
    dispatch_format(format, [&]<typename Q>() {
      quantize_1x128_transposed_kernel<<<grid, kThreads, 0, stream>>>(
          source, static_cast<Q*>(out.data.data_ptr()), out.scale_inv.data<float>(), rows, cols, tiles_c, p, rounding);
    });
    DAEDALUS_CUDA_CHECK_LAUNCH();
  };
  dispatch_format(q.format, launch);
  return out;
}

Tensor cuda_dequantize(const QuantizedTensor& q, int64_t block_rows, int64_t block_cols, int64_t blocks_per_row) {
  const Tensor data = q.data.contiguous(), s = q.scale_inv.contiguous();
  const int64_t rows = data.size(0), cols = data.size(1);
  DAEDALUS_CUDA_CHECK(cudaSetDevice(data.device().index));
  const cudaStream_t stream = cuda::compute_stream(data.device().index);
  Tensor y = Tensor::empty({rows, cols}, DType::f32, data.device());
  if (rows * cols == 0) return y;
  const auto launch = [&]<typename Q>() {
    dequantize_kernel<Q><<<cuda::blocks_for(rows * cols), kThreads, 0, stream>>>(
        static_cast<const Q*>(data.data_ptr()), s.data<float>(), y.data<float>(), rows, cols, block_rows, block_cols,
        blocks_per_row);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  };
  dispatch_format(q.format, launch);
  return y;
}

}  // namespace daedalus::fp8
