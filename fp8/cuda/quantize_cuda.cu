// CUDA twin of fp8::quantize (fp8/quantized.h) for the granularities the GPU recipes quantize on
// the fly: tile_1x128 (activations, gradients), block_128x128 (weights), row and tensor.
// Results are bit-identical to the CPU quantizer: the amax is an exact maximum, the scale comes
// from compute_scale (fp8/format.h: the __host__ __device__ arithmetic behind fp8::scale_from_amax,
// shared with the CPU quantizer), the cast
// is the shared codec (autograd/dtype_codec.h), and scale_inv = 1 / scale in IEEE float.
//
// x [rows, cols] fp32 | bf16 (contiguous) -> q [rows, cols] fp8, scale_inv fp32 row-major:
//   tile_1x128     [rows, ceil(cols/128)]               one warp per 1x128 tile
//   block_128x128  [ceil(rows/128), ceil(cols/128)]     one 256-thread block per 128x128 block
//   row            [rows]                               one 256-thread block per row
//   tensor         [1]                                  amax kernel (atomicMax), then a cast kernel
// The amax is taken over |x| as IEEE bit patterns (unsigned max): for finite non-negative floats
// the order is the float order, and a NaN anywhere gives a NaN amax (scale 1), never a hidden one.
#include <cuda_runtime.h>

#include "autograd/check.h"
#include "autograd/cuda/strided.cuh"
#include "fp8/cuda/scaled_gemm_cuda.h"
#include "fp8/format.h"

namespace daedalus::fp8 {

namespace {

using cuda::kThreads;

struct ScaleParams {
  float max_value;
  int margin;
  bool power_of_two;
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

__device__ __forceinline__ float scale_of(uint32_t amax_bits, const ScaleParams& p) {
  return compute_scale(codec::bits_float(amax_bits), p.max_value, p.margin, p.power_of_two);
}

// The product is rounded to float once (no FMA contraction), as on the CPU.
template <typename Q>
__device__ __forceinline__ Q quantize_element(float v, float scale) {
  return from_float<Q>(__fmul_rn(v, scale));
}

// x, q [rows, cols]; scale_inv [rows, tiles_per_row]. Warp w quantizes tile (w / tiles_per_row,
// w % tiles_per_row); lane l holds columns l, l+32, l+64, l+96 of it (coalesced).
template <typename S, typename Q>
__global__ void quantize_1x128_kernel(const S* x, Q* q, float* scale_inv, int64_t rows, int64_t cols,
                                      int64_t tiles_per_row, ScaleParams p) {
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = int(threadIdx.x) % 32;
  if (warp >= rows * tiles_per_row) return;  // whole warps leave together
  const int64_t r = warp / tiles_per_row, t = warp % tiles_per_row;
  const int64_t base = r * cols + t * 128;
  const int64_t width = min(int64_t(128), cols - t * 128);
  float v[4];
  uint32_t m = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int c = lane + 32 * j;
    v[j] = c < width ? to_float(x[base + c]) : 0.0f;
    m = max(m, abs_bits(v[j]));
  }
  const float scale = scale_of(warp_max(m), p);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int c = lane + 32 * j;
    if (c < width) q[base + c] = quantize_element<Q>(v[j], scale);
  }
  if (lane == 0) scale_inv[warp] = 1.0f / scale;
}

// One block per (tile_rows x tile_cols) tile of x [rows, cols]; scale_inv [tiles_r, tiles_c]
// row-major. block_128x128: 128 x 128; row: 1 x cols.
template <typename S, typename Q>
__global__ void quantize_tile_kernel(const S* x, Q* q, float* scale_inv, int64_t rows, int64_t cols, int64_t tile_rows,
                                     int64_t tile_cols, int64_t tiles_c, ScaleParams p) {
  const int64_t tile = blockIdx.x;
  const int64_t r0 = (tile / tiles_c) * tile_rows, c0 = (tile % tiles_c) * tile_cols;
  const int64_t h = min(tile_rows, rows - r0), w = min(tile_cols, cols - c0), n = h * w;
  uint32_t m = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    m = max(m, abs_bits(to_float(x[(r0 + i / w) * cols + c0 + i % w])));
  const float scale = scale_of(block_max(m), p);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t off = (r0 + i / w) * cols + c0 + i % w;
    q[off] = quantize_element<Q>(to_float(x[off]), scale);
  }
  if (threadIdx.x == 0) scale_inv[tile] = 1.0f / scale;
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

template <typename S, typename Q>
__global__ void quantize_tensor_kernel(const S* x, Q* q, float* scale_inv, int64_t n, const uint32_t* amax_bits,
                                       ScaleParams p) {
  const float scale = scale_of(*amax_bits, p);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    q[i] = quantize_element<Q>(to_float(x[i]), scale);
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale_inv = 1.0f / scale;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

unsigned grid_of(int64_t blocks, const char* what) {
  DAEDALUS_CHECK(blocks < (int64_t(1) << 31), "cuda_quantize: {} needs {} blocks, more than a grid holds", what,
                 blocks);
  return unsigned(blocks);
}

}  // namespace

QuantizedTensor cuda_quantize(const Tensor& x_in, Granularity granularity, Format format, const ScaleOptions& options) {
  DAEDALUS_CHECK(x_in.dim() == 2, "cuda_quantize: x must be 2-d [rows, cols], got {}", x_in.describe());
  DAEDALUS_CHECK(x_in.device().is_cuda(), "cuda_quantize: x must be on a CUDA device, got {}", x_in.describe());
  DAEDALUS_CHECK(x_in.dtype() == DType::f32 || x_in.dtype() == DType::bf16,
                 "cuda_quantize: x must be fp32 or bf16, got {}", x_in.describe());
  DAEDALUS_CHECK(granularity == Granularity::tensor || granularity == Granularity::row ||
                     granularity == Granularity::tile_1x128 || granularity == Granularity::block_128x128,
                 "cuda_quantize: granularity {} has no CUDA quantizer (tensor, row, tile_1x128, block_128x128)",
                 granularity_name(granularity));
  const Tensor x = x_in.contiguous();
  const int64_t rows = x.size(0), cols = x.size(1);
  const Device device = x.device();
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));

  QuantizedTensor out;
  out.granularity = granularity;
  out.format = format;
  out.data = Tensor::empty({rows, cols}, dtype_of(format), device);
  const int64_t tiles_c = ceil_div(cols, 128), tiles_r = ceil_div(rows, 128);
  switch (granularity) {
    case Granularity::tensor: out.scale_inv = Tensor::empty({1}, DType::f32, device); break;
    case Granularity::row: out.scale_inv = Tensor::empty({rows}, DType::f32, device); break;
    case Granularity::tile_1x128: out.scale_inv = Tensor::empty({rows, tiles_c}, DType::f32, device); break;
    default: out.scale_inv = Tensor::empty({tiles_r, tiles_c}, DType::f32, device); break;
  }
  const int64_t n = rows * cols;
  if (n == 0) {
    if (granularity == Granularity::tensor) out.scale_inv.fill_(1.0);
    return out;
  }
  const ScaleParams p{float(max_finite(format)), options.margin, options.power_of_two};
  float* scale_inv = out.scale_inv.data<float>();
  Tensor amax;  // tensor granularity: the amax as IEEE bits, alive until the cast kernel is queued
  if (granularity == Granularity::tensor) amax = Tensor::zeros({1}, DType::i32, device);

  dispatch_float("cuda_quantize", x.dtype(), [&]<typename S>() {
    const S* src = static_cast<const S*>(x.data_ptr());
    auto launch = [&]<typename Q>() {
      Q* dst = static_cast<Q*>(out.data.data_ptr());
      switch (granularity) {
        case Granularity::tile_1x128: {
          const int64_t warps = rows * tiles_c;
          quantize_1x128_kernel<S, Q><<<grid_of(ceil_div(warps, kThreads / 32), "tile_1x128"), kThreads>>>(
              src, dst, scale_inv, rows, cols, tiles_c, p);
          break;
        }
        case Granularity::block_128x128:
          quantize_tile_kernel<S, Q><<<grid_of(tiles_r * tiles_c, "block_128x128"), kThreads>>>(
              src, dst, scale_inv, rows, cols, 128, 128, tiles_c, p);
          break;
        case Granularity::row:
          quantize_tile_kernel<S, Q>
              <<<grid_of(rows, "row"), kThreads>>>(src, dst, scale_inv, rows, cols, 1, cols, 1, p);
          break;
        default: {
          auto* amax_bits = static_cast<uint32_t*>(amax.data_ptr());
          amax_kernel<S><<<cuda::blocks_for(n), kThreads>>>(src, n, amax_bits);
          DAEDALUS_CUDA_CHECK_LAUNCH();
          quantize_tensor_kernel<S, Q><<<cuda::blocks_for(n), kThreads>>>(src, dst, scale_inv, n, amax_bits, p);
          break;
        }
      }
      DAEDALUS_CUDA_CHECK_LAUNCH();
    };
    if (format == Format::e4m3) {
      launch.template operator()<fp8e4m3>();
    } else {
      launch.template operator()<fp8e5m2>();
    }
  });
  return out;
}

}  // namespace daedalus::fp8
