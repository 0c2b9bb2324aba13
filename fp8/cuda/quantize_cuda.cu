// CUDA twin of fp8::quantize / quantize_with_scale / QuantizedTensor::dequantize (fp8/quantized.h)
// for every granularity: tile_1x128 (activations, gradients), block_128x128 (weights), row,
// tensor (current or a given delayed-scaling scale) and mx_1x32 (no Hopper GEMM takes it; the
// quantizer exists so that the mxfp8 recipe's operands are the CPU's bits on the device too).
// Results are bit-identical to the CPU quantizer: the amax is an exact maximum, the scale comes
// from compute_scale / compute_mx_scale_inv (fp8/format.h: the __host__ __device__ arithmetic
// behind fp8::scale_from_amax, shared with the CPU quantizer), the cast is the shared codec
// (autograd/dtype_codec.h) on a product rounded once (__fmul_rn, no FMA contraction), stochastic
// rounding draws the same Philox word per element (stochastic_word_hd), and scale_inv = 1 / scale
// in IEEE float (mx_1x32: the power of two itself).
//
// x [rows, cols] fp32 | bf16 -> q [rows, cols] fp8 (contiguous), scale_inv fp32 row-major:
//   tile_1x128  [rows, ceil(cols/128)]  row-major x (unit column stride, any row stride): one warp
//                                       per tile. Transposed x (unit ROW stride: the Wgrad operands
//                                       dYᵀ, Xᵀ as views of row-major dY, X): one 256-thread block
//                                       per 32 rows x 128 cols, staged through shared memory so
//                                       that reads and writes are both coalesced (no transpose copy)
//   mx_1x32     [rows, ceil(cols/32)]   one warp per 1x32 tile, one element per lane
//   block_128x128 [ceil(rows/128), ceil(cols/128)]  one 256-thread block per block, any strides
//                                       (the Dgrad operand Wᵀ is read in W's order, coalesced)
//   row         [rows]                  one 256-thread block per row (contiguous copy first)
//   tensor      [1]                     amax kernel (atomicMax), then a cast kernel; or the given
//                                       scale (delayed scaling) and the cast kernel alone
// The amax is taken over |x| as IEEE bit patterns (unsigned max): for finite non-negative floats
// the order is the float order, and a NaN anywhere gives a NaN amax (scale 1), never a hidden one.
#include <cuda_runtime.h>

#include "autograd/check.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"
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

// The product is rounded to float once (no FMA contraction), as on the CPU; `index` = r * cols + c.
template <typename Q>
__device__ __forceinline__ Q quantize_element(float v, float scale, const Rounding& rounding, int64_t index) {
  const float scaled = __fmul_rn(v, scale);
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

// The transposed 1x128 quantizer ("1x128 becomes 128x1" for Wgrad): x is a [rows, cols] view with
// unit row stride, element (r, c) at x[c * ld + r] — the transpose of a row-major [cols, rows]
// tensor with leading dimension ld. One block covers rows [r0, r0 + 32) x the 128 columns of tile
// t: it reads the 128 x 32 patch of the source row by row (lanes along r: coalesced) into shared
// memory, then each warp quantizes 4 of the 32 tiles (lanes along c: coalesced writes of q).
constexpr int kTransposeRows = 32;
template <typename S, typename Q>
__global__ void quantize_1x128_transposed_kernel(const S* x, int64_t ld, Q* q, float* scale_inv, int64_t rows,
                                                 int64_t cols, int64_t tiles_per_row, ScaleParams p,
                                                 Rounding rounding) {
  static_assert(kThreads == 256, "8 warps: 16 source rows per warp to load, 4 tiles per warp to quantize");
  __shared__ float patch[128][kTransposeRows + 1];  // [c - c0][r - r0], padded: conflict-free both ways
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t t = blockIdx.x % tiles_per_row, r0 = (blockIdx.x / tiles_per_row) * int64_t(kTransposeRows);
  const int64_t c0 = t * 128;
  const int64_t r = r0 + lane;
#pragma unroll 4
  for (int i = warp; i < 128; i += kThreads / 32) {
    const int64_t c = c0 + i;
    patch[i][lane] = (r < rows && c < cols) ? to_float(x[c * ld + r]) : 0.0f;
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
    y[i] = __fmul_rn(to_float(q[i]), s[(r / br) * nbc + c / bc]);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned grid_of(int64_t blocks, const char* what) {
  DAEDALUS_CHECK(blocks < (int64_t(1) << 31), "cuda_quantize: {} needs {} blocks, more than a grid holds", what,
                 blocks);
  return unsigned(blocks);
}

// Calls fn.template operator()<S, Q>() for x's dtype and the format.
template <typename Fn>
void dispatch_source_and_format(const char* op, DType source, Format format, Fn&& fn) {
  dispatch_float(op, source, [&]<typename S>() {
    if (format == Format::e4m3) {
      fn.template operator()<S, fp8e4m3>();
    } else {
      fn.template operator()<S, fp8e5m2>();
    }
  });
}

void check_input(const Tensor& x, const char* op) {
  DAEDALUS_CHECK(x.dim() == 2, "{}: x must be 2-d [rows, cols], got {}", op, x.describe());
  DAEDALUS_CHECK(x.device().is_cuda(), "{}: x must be on a CUDA device, got {}", op, x.describe());
  DAEDALUS_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16, "{}: x must be fp32 or bf16, got {}", op,
                 x.describe());
}

}  // namespace

QuantizedTensor cuda_quantize(const Tensor& x_in, Granularity granularity, Format format, const ScaleOptions& options) {
  check_input(x_in, "cuda_quantize");
  const int64_t rows = x_in.size(0), cols = x_in.size(1);
  const Device device = x_in.device();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const cudaStream_t stream = cuda::compute_stream(device.index);

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
          quantize_1x128_transposed_kernel<S, Q>
              <<<grid_of(ceil_div(rows, kTransposeRows) * tiles_c, "tile_1x128 (transposed)"), kThreads, 0, stream>>>(
                  src, cs, dst, scale_inv, rows, cols, tiles_c, p, rounding);
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
        quantize_tile_kernel<S, Q><<<grid_of(tiles_r * tiles_c, "block_128x128"), kThreads, 0, stream>>>(
            src, rs, cs, transposed, dst, scale_inv, rows, cols, 128, 128, tiles_c, p, rounding);
        break;
      case Granularity::row:
        quantize_tile_kernel<S, Q><<<grid_of(rows, "row"), kThreads, 0, stream>>>(
            src, cols, 1, /*rows_fastest=*/false, dst, scale_inv, rows, cols, 1, cols, 1, p, rounding);
        break;
      case Granularity::tensor: {
        auto* amax_bits = static_cast<uint32_t*>(amax.data_ptr());
        amax_kernel<S><<<cuda::blocks_for(n), kThreads, 0, stream>>>(src, n, amax_bits);
        DAEDALUS_CUDA_CHECK_LAUNCH();
        quantize_tensor_kernel<S, Q>
            <<<cuda::blocks_for(n), kThreads, 0, stream>>>(src, dst, scale_inv, n, amax_bits, 1.0f, p, rounding);
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
  QuantizedTensor out;
  out.granularity = Granularity::tensor;
  out.format = format;
  out.data = Tensor::empty({rows, cols}, dtype_of(format), device);
  out.scale_inv = Tensor::full({1}, double(1.0f / scale), DType::f32, device);  // exact: 1/scale is a float
  if (n == 0) return out;
  const ScaleParams p{float(max_finite(format)), 0, false, false};
  dispatch_source_and_format("cuda_quantize_with_scale", x.dtype(), format, [&]<typename S, typename Q>() {
    quantize_tensor_kernel<S, Q><<<cuda::blocks_for(n), kThreads, 0, stream>>>(
        static_cast<const S*>(x.data_ptr()), static_cast<Q*>(out.data.data_ptr()), out.scale_inv.data<float>(), n,
        nullptr, scale, p, Rounding{false, 0});
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
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
  if (q.format == Format::e4m3) {
    launch.template operator()<fp8e4m3>();
  } else {
    launch.template operator()<fp8e5m2>();
  }
  return y;
}

}  // namespace daedalus::fp8
