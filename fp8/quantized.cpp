// CPU quantizer for every granularity (fp8/quantized.h), plus the scale functions and the amax
// history. One pass per block: amax in float, the scale from it (scale_from_amax, the MX rules, or
// NVFP4's two levels after one pass for the tensor's amax), then q = cast(float(x) * scale) with the
// codecs of autograd/dtype_codec.h (saturating).
#include "fp8/quantized.h"

#if DAEDALUS_WITH_CUDA
#include "fp8/cuda/scaled_gemm_cuda.h"
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>

#include "autograd/kernels/activation.h"
#include "autograd/kernels/cpu_clones.h"
#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"
#include "fp8/format.h"

namespace daedalus::fp8 {

DType dtype_of(Format f) {
  switch (f) {
    case Format::e4m3: return DType::f8e4m3;
    case Format::e5m2: return DType::f8e5m2;
    case Format::e2m1: return DType::f4e2m1;
  }
  return DType::f8e4m3;
}
double max_finite(Format f) {
  switch (f) {
    case Format::e4m3: return 448.0;
    case Format::e5m2: return 57344.0;
    case Format::e2m1: return 6.0;
  }
  return 448.0;
}
std::string_view format_name(Format f) {
  switch (f) {
    case Format::e4m3: return "e4m3";
    case Format::e5m2: return "e5m2";
    case Format::e2m1: return "e2m1";
  }
  return "?";
}
bool is_nvfp4(Granularity g) { return g == Granularity::nv_1x16 || g == Granularity::nv_16x16; }

std::string_view granularity_name(Granularity g) {
  switch (g) {
    case Granularity::tensor: return "tensor";
    case Granularity::row: return "row";
    case Granularity::tile_1x128: return "tile_1x128";
    case Granularity::block_128x128: return "block_128x128";
    case Granularity::mx_1x32: return "mx_1x32";
    case Granularity::nv_1x16: return "nv_1x16";
    case Granularity::nv_16x16: return "nv_16x16";
  }
  return "?";
}

int64_t block_rows(Granularity g, int64_t rows) {
  switch (g) {
    case Granularity::tensor: return rows;
    case Granularity::block_128x128: return 128;
    case Granularity::nv_16x16: return 16;
    default: return 1;
  }
}

int64_t block_cols(Granularity g, int64_t cols) {
  switch (g) {
    case Granularity::tensor:
    case Granularity::row: return cols;
    case Granularity::tile_1x128:
    case Granularity::block_128x128: return 128;
    case Granularity::mx_1x32: return 32;
    case Granularity::nv_1x16:
    case Granularity::nv_16x16: return 16;
  }
  return cols;
}

float scale_from_amax(float amax, Format format, const ScaleOptions& options) {
  return compute_scale(amax, float(max_finite(format)), options.margin, options.power_of_two);
}

float mx_scale_inv_from_amax(float amax, Format format) {
  if (format == Format::e2m1) return compute_mx_scale_inv_floor(amax, /*emax_elem=*/2);
  return compute_mx_scale_inv(amax, float(max_finite(format)));
}

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The scale_inv grid: block size and block counts along rows and cols; scale_inv is [nbr, nbc]
// row-major, viewed with the shape quantized.h documents.
struct Grid {
  int64_t br, bc, nbr, nbc;
  Shape shape;
};

Grid grid_of(Granularity g, int64_t rows, int64_t cols) {
  const int64_t br = std::max<int64_t>(1, block_rows(g, rows)), bc = std::max<int64_t>(1, block_cols(g, cols));
  Grid grid{br, bc, ceil_div(rows, br), ceil_div(cols, bc), {}};
  switch (g) {
    case Granularity::tensor:
      grid.nbr = grid.nbc = 1;
      grid.shape = {1};
      break;
    case Granularity::row:
      grid.nbc = 1;
      grid.shape = {rows};
      break;
    default: grid.shape = {grid.nbr, grid.nbc};
  }
  return grid;
}

// A strided [rows, cols] operand: element (r, c) at p[r * rs + c * cs].
template <typename T>
struct Operand {
  const T* p;
  int64_t rs, cs;
};

// The hot loops of every quantizer on contiguous fp32 rows (the amax scan below and the encode) are
// DAEDALUS_CPU_CLONES: the branch-free codec vectorizes on the AVX clones (x86-64-v4: 1.5x the
// encode rate of plain avx512f). Integer codec and max only, no additions: no FMA contraction can
// make a clone's bits differ.

// The amax scan works on bit patterns: for floats that are not NaN, |x|'s bits (the sign bit
// cleared) order like |x| itself, and every NaN's lie above infinity's (0x7F800000). So one
// unsigned max over the patterns is max |x|, exactly, or says that a NaN was seen — an integer
// max, which vectorizes (the float compare-and-select with its NaN bookkeeping did not).
inline constexpr uint32_t kAbsMask = 0x7FFFFFFFu, kInfBits = 0x7F800000u;

template <typename T>
uint32_t abs_bits(T x) {
  return std::bit_cast<uint32_t>(to_float(x)) & kAbsMask;
}

// max(top, the |x| patterns of n contiguous elements). Sixteen running maxima so that the scan
// vectorizes. Always inlined, so that span_abs_max_f32's clones compile it for their own
// instruction sets (a call would run the baseline code from every clone).
template <typename T>
[[gnu::always_inline]] inline uint32_t span_abs_max(const T* p, int64_t n, uint32_t top) {
  constexpr int kLanes = 16;
  uint32_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] = std::max(lane[j], abs_bits(p[i + j]));
  for (; i < n; ++i) top = std::max(top, abs_bits(p[i]));
  for (int j = 0; j < kLanes; ++j) top = std::max(top, lane[j]);
  return top;
}
DAEDALUS_CPU_CLONES uint32_t span_abs_max_f32(const float* p, int64_t n, uint32_t top) {
  return span_abs_max(p, n, top);
}

// max |x| over rows [r0, r1) x cols [c0, c1) in float; NaN if any element is NaN.
template <typename T>
float block_amax(const Operand<T>& x, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  uint32_t top = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x.p + r * x.rs;
    if (x.cs == 1) {
      if constexpr (std::is_same_v<T, float>) {
        top = span_abs_max_f32(row + c0, c1 - c0, top);
      } else {
        top = span_abs_max(row + c0, c1 - c0, top);
      }
    } else {
      for (int64_t c = c0; c < c1; ++c) top = std::max(top, abs_bits(row[c * x.cs]));
    }
  }
  return top > kInfBits ? std::numeric_limits<float>::quiet_NaN() : std::bit_cast<float>(top);
}

// The value of every FP8 code (the codec's to_float), for table-driven decoding.
template <typename Q>
const std::array<float, 256>& decode_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (uint32_t c = 0; c < 256; ++c) t[c] = to_float(Q{uint8_t(c)});
    return t;
  }();
  return table;
}

template <typename Q>
Q round_stochastic(float v, uint32_t word) {
  if constexpr (std::is_same_v<Q, fp8e4m3>) {
    return float_to_e4m3_stochastic(v, word);
  } else if constexpr (std::is_same_v<Q, fp4e2m1>) {
    return float_to_e2m1_stochastic(v, word);
  } else {
    return float_to_e5m2_stochastic(v, word);
  }
}

// dst[i] = encode(src[i] * scale), saturating, nearest even.
DAEDALUS_CPU_CLONES void scale_encode(const float* src, float scale, fp8e4m3* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = codec::float_to_e4m3(src[i] * scale);
}
DAEDALUS_CPU_CLONES void scale_encode(const float* src, float scale, fp8e5m2* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = codec::float_to_e5m2(src[i] * scale);
}
DAEDALUS_CPU_CLONES void scale_encode(const float* src, float scale, fp4e2m1* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = codec::float_to_e2m1(src[i] * scale);
}

// out[r * cols + c] = cast(float(x(r, c)) * scale) over the block.
template <typename T, typename Q>
void quantize_block(const Operand<T>& x, int64_t r0, int64_t r1, int64_t c0, int64_t c1, float scale, Q* out,
                    int64_t cols, const ScaleOptions& options) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x.p + r * x.rs;
    Q* dst = out + r * cols;
    if (options.stochastic_rounding) {
      for (int64_t c = c0; c < c1; ++c) {
        const uint32_t word = stochastic_word(options.seed, uint64_t(r * cols + c));
        dst[c] = round_stochastic<Q>(to_float(row[c * x.cs]) * scale, word);
      }
    } else if (x.cs == 1) {
      if constexpr (std::is_same_v<T, float>) {
        scale_encode(row + c0, scale, dst + c0, c1 - c0);
      } else {
        for (int64_t c = c0; c < c1; ++c) dst[c] = from_float<Q>(to_float(row[c]) * scale);
      }
    } else {
      for (int64_t c = c0; c < c1; ++c) dst[c] = from_float<Q>(to_float(row[c * x.cs]) * scale);
    }
  }
}

// The scale of a block and its stored inverse.
struct BlockScale {
  float scale, scale_inv;
};

// `tensor_scale`: NVFP4's encode scale S of the whole tensor (format.h); unused otherwise.
BlockScale block_scale(float amax, Granularity g, Format f, const ScaleOptions& options, float tensor_scale = 1.0f) {
  if (g == Granularity::mx_1x32) {
    const float scale_inv = mx_scale_inv_from_amax(amax, f);
    return {1.0f / scale_inv, scale_inv};  // exact: powers of two within float's range (NaN stays NaN)
  }
  if (is_nvfp4(g)) {
    const float decode = codec::e4m3_to_float(nvfp4_block_scale(amax, tensor_scale));
    return {nvfp4_encode_scale(decode, tensor_scale), decode};
  }
  const float scale = scale_from_amax(amax, f, options);
  return {scale, 1.0f / scale};
}

template <typename T, typename Q>
void cpu_quantize(const Tensor& x, Granularity g, Format f, const ScaleOptions& options, const float* given_scale,
                  QuantizedTensor& out) {
  const int64_t rows = x.size(0), cols = x.size(1);
  const Operand<T> in{x.data<T>(), x.stride(0), x.stride(1)};
  Q* q = out.data.data<Q>();
  float* scale_inv = out.scale_inv.data<float>();
  const Grid grid = grid_of(g, rows, cols);
  const bool parallel = rows * cols >= cpu::kParallelThreshold;

  // max |x| over the whole operand (NaN if any element is NaN).
  const auto tensor_amax = [&] {
    std::vector<float> row_amax(static_cast<size_t>(rows), 0.0f);
    cpu::parallel_rows(rows, cols, [&](int64_t r) { row_amax[size_t(r)] = block_amax(in, r, r + 1, 0, cols); });
    float amax = 0.0f;
    for (float a : row_amax) amax = (a > amax || a != a) ? a : amax;  // NaN sticks
    return amax;
  };
  if (g == Granularity::tensor) {
    const float scale = given_scale ? *given_scale : block_scale(tensor_amax(), g, f, options).scale;
    scale_inv[0] = 1.0f / scale;
    cpu::parallel_rows(rows, cols, [&](int64_t r) { quantize_block(in, r, r + 1, 0, cols, scale, q, cols, options); });
    return;
  }

  // NVFP4's first level: the tensor's encode scale S, its inverse kept for the GEMM.
  const float tensor_scale = is_nvfp4(g) ? nvfp4_tensor_scale(tensor_amax()) : 1.0f;
  if (is_nvfp4(g)) out.tensor_scale_inv = 1.0f / tensor_scale;
  const int64_t tasks = grid.nbr * grid.nbc;
#pragma omp parallel for schedule(static) if (parallel && tasks > 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t bi = task / grid.nbc, bj = task % grid.nbc;
    const int64_t r0 = bi * grid.br, r1 = std::min(rows, r0 + grid.br);
    const int64_t c0 = bj * grid.bc, c1 = std::min(cols, c0 + grid.bc);
    const BlockScale s = block_scale(block_amax(in, r0, r1, c0, c1), g, f, options, tensor_scale);
    scale_inv[task] = s.scale_inv;
    quantize_block(in, r0, r1, c0, c1, s.scale, q, cols, options);
  }
}

// quantize(q.dequantize().t(), tile_1x128, ...) for a 1x128 q [M, K], without the two fp32 copies
// (dequantized, then transposed to row-major). Per 128 x 128 block of q, each output tile (one
// column of the block: 128 values of X along M) is gathered into a row of floats, dequantize()'s
// table value times its scale_inv, and quantized with cpu_quantize's own amax scan, scale and
// encode — the same floats through the same functions, so the same bits. The block's 128 source
// rows (8 KiB) stay in L1 while its columns are gathered. Round to nearest only (stochastic words
// follow the output index; the caller runs the composition for them).
template <typename Qin, typename Qout>
void cpu_requantize_transposed(const QuantizedTensor& q, Format f, const ScaleOptions& options, QuantizedTensor& out) {
  const int64_t m = q.rows(), k = q.cols(), nbk = ceil_div(k, 128), nbm = ceil_div(m, 128);
  const Tensor data = q.data.contiguous(), scales = q.scale_inv.contiguous();
  const Qin* src = data.data<Qin>();
  const float* s = scales.data<float>();
  Qout* dst = out.data.data<Qout>();
  float* dst_scale_inv = out.scale_inv.data<float>();
  const std::array<float, 256>& value = decode_table<Qin>();
  const int64_t tasks = nbm * nbk;
#pragma omp parallel for schedule(static) if (m * k >= cpu::kParallelThreshold && tasks > 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t t = task / nbk, kb = task % nbk;
    const int64_t m0 = t * 128, w = std::min<int64_t>(128, m - m0), k0 = kb * 128, h = std::min<int64_t>(128, k - k0);
    float scale_inv[128], tile[128];
    for (int64_t i = 0; i < w; ++i) scale_inv[i] = s[(m0 + i) * nbk + kb];
    const Operand<float> row{tile, 128, 1};
    for (int64_t j = 0; j < h; ++j) {
      const Qin* column = src + m0 * k + k0 + j;
      for (int64_t i = 0; i < w; ++i) tile[i] = value[column[i * k].bits] * scale_inv[i];
      const BlockScale bs = block_scale(block_amax(row, 0, 1, 0, w), Granularity::tile_1x128, f, options);
      dst_scale_inv[(k0 + j) * nbm + t] = bs.scale_inv;
      scale_encode(tile, bs.scale, dst + (k0 + j) * m + m0, w);
    }
  }
}

QuantizedTensor quantize_impl(const Tensor& x, Granularity g, Format f, const ScaleOptions& options,
                              const float* given_scale) {
  constexpr std::string_view op = "quantize";
  DAEDALUS_CHECK(x.defined(), "{}: undefined input", op);
  kernels::check_dim(op, x, "x", 2);
  kernels::check_float(op, x, "x");
  DAEDALUS_CHECK(g != Granularity::mx_1x32 || options.margin == 0,
                 "{}: mx_1x32 scales follow the E8M0 rule (rounded up, no margin); got margin {}", op, options.margin);
  DAEDALUS_CHECK((f == Format::e2m1) == (is_nvfp4(g) || (f == Format::e2m1 && g == Granularity::mx_1x32)),
                 "{}: {} with {} scales: FP4 (e2m1) goes with mx_1x32, nv_1x16 or nv_16x16, and nv_* only with e2m1",
                 op, format_name(f), granularity_name(g));
  DAEDALUS_CHECK(f != Format::e2m1 || options.margin == 0, "{}: FP4 scales take no margin; got margin {}", op,
                 options.margin);
  DAEDALUS_CHECK(std::abs(options.margin) <= 64, "{}: margin {} is outside [-64, 64]", op, options.margin);
  const int64_t rows = x.size(0), cols = x.size(1);
  QuantizedTensor out;
  out.granularity = g;
  out.format = f;
  switch (x.device().type) {
    case DeviceType::cpu: {
      out.data = Tensor::empty({rows, cols}, dtype_of(f));
      out.scale_inv = Tensor::empty(grid_of(g, rows, cols).shape, DType::f32);
      out.scale_inv.fill_(1.0);  // an empty operand keeps scale 1
      // A transposed view (the Wgrad operands) is copied to row-major first: the blocked transpose
      // and the vectorized encode beat encoding element by element along strides.
      const Tensor xr = x.stride(1) == 1 || options.stochastic_rounding ? x : x.contiguous();
      dispatch_float(op, x.dtype(), [&]<typename T>() {
        switch (f) {
          case Format::e4m3: cpu_quantize<T, fp8e4m3>(xr, g, f, options, given_scale, out); break;
          case Format::e5m2: cpu_quantize<T, fp8e5m2>(xr, g, f, options, given_scale, out); break;
          case Format::e2m1: cpu_quantize<T, fp4e2m1>(xr, g, f, options, given_scale, out); break;
        }
      });
      break;
    }
    case DeviceType::cuda:
      // The CUDA twin (fp8/cuda/quantize_cuda.cu) produces the same bits for every FP8 granularity.
      // FP4 has no CUDA quantizer (docs/gpu.md: the FP4 recipes run on the CPU).
      DAEDALUS_CHECK(f != Format::e2m1, "{}: FP4 (e2m1) quantization runs on the CPU only (docs/gpu.md)", op);
#if DAEDALUS_WITH_CUDA
      return given_scale != nullptr ? cuda_quantize_with_scale(x, *given_scale, f) : cuda_quantize(x, g, f, options);
#else
      kernels::throw_built_without_cuda(op);
#endif
  }
  return out;
}

}  // namespace

QuantizedTensor quantize(const Tensor& x, Granularity granularity, Format format, const ScaleOptions& options) {
  return quantize_impl(x, granularity, format, options, nullptr);
}

QuantizedTensor quantize_with_scale(const Tensor& x, float scale, Format format) {
  DAEDALUS_CHECK(scale > 0.0f && std::isfinite(scale) && std::isfinite(1.0f / scale),
                 "quantize_with_scale: scale must be positive and finite with a finite inverse, got {}", scale);
  return quantize_impl(x, Granularity::tensor, format, {}, &scale);
}

Tensor QuantizedTensor::dequantize() const {
  constexpr std::string_view op = "dequantize";
  DAEDALUS_CHECK(data.defined() && scale_inv.defined(), "{}: undefined quantized tensor", op);
  kernels::check_dim(op, data, "data", 2);
  kernels::check_dtype(op, data, "data", dtype_of(format));
  kernels::check_dtype(op, scale_inv, "scale_inv", DType::f32);
  const int64_t rows_ = rows(), cols_ = cols();
  const Grid grid = grid_of(granularity, rows_, cols_);
  DAEDALUS_CHECK(scale_inv.shape() == grid.shape, "{}: {} scale_inv of a {} operand must be {}, got {}", op,
                 granularity_name(granularity), shape_str(data.shape()), shape_str(grid.shape),
                 shape_str(scale_inv.shape()));
  kernels::common_device(op, {&data, &scale_inv});
  if (data.device().is_cuda()) {
#if DAEDALUS_WITH_CUDA
    return cuda_dequantize(*this, grid.br, grid.bc, grid.nbc);
#else
    kernels::throw_built_without_cuda(op);
#endif
  }

  const Tensor q_c = data.contiguous(), s_c = scale_inv.contiguous();
  Tensor out = Tensor::empty({rows_, cols_}, DType::f32);
  float* y = out.data<float>();
  const float* s = s_c.data<float>();
  dispatch_storage_float(op, q_c.dtype(), [&]<typename Q>() {
    if constexpr (std::is_same_v<Q, fp8e4m3> || std::is_same_v<Q, fp8e5m2> || std::is_same_v<Q, fp4e2m1>) {
      const Q* q = q_c.data<Q>();
      const std::array<float, 256>& value = decode_table<Q>();
      cpu::parallel_rows(rows_, cols_, [&](int64_t r) {
        const float* srow = s + (r / grid.br) * grid.nbc;
        for (int64_t j = 0; j < grid.nbc; ++j) {  // one scale block of the row at a time
          const int64_t c0 = j * grid.bc, c1 = std::min(cols_, c0 + grid.bc);
          const float si = srow[j];
          for (int64_t c = c0; c < c1; ++c) y[r * cols_ + c] = value[q[r * cols_ + c].bits] * si;
        }
      });
    }
  });
  if (is_nvfp4(granularity) && tensor_scale_inv != 1.0f) {  // NVFP4's second level, rounded once
    const float t = tensor_scale_inv;
    cpu::parallel_rows(rows_, cols_, [&](int64_t r) {
      for (int64_t c = 0; c < cols_; ++c) y[r * cols_ + c] *= t;
    });
  }
  return out;
}

QuantizedTensor pad_quantized(const QuantizedTensor& q, int64_t rows, int64_t cols) {
  constexpr std::string_view op = "pad_quantized";
  DAEDALUS_CHECK(q.data.defined() && q.scale_inv.defined(), "{}: undefined quantized tensor", op);
  kernels::check_dim(op, q.data, "data", 2);
  const int64_t r = q.rows(), c = q.cols();
  DAEDALUS_CHECK(rows >= r && cols >= c, "{}: cannot pad [{}, {}] to the smaller [{}, {}]", op, r, c, rows, cols);
  if (rows == r && cols == c) return q;
  const Grid old_grid = grid_of(q.granularity, r, c), new_grid = grid_of(q.granularity, rows, cols);
  DAEDALUS_CHECK(q.scale_inv.shape() == old_grid.shape, "{}: {} scale_inv of a {} operand must be {}, got {}", op,
                 granularity_name(q.granularity), shape_str(q.data.shape()), shape_str(old_grid.shape),
                 shape_str(q.scale_inv.shape()));
  QuantizedTensor out;
  out.granularity = q.granularity;
  out.format = q.format;
  out.tensor_scale_inv = q.tensor_scale_inv;
  out.data = Tensor::zeros({rows, cols}, q.data.dtype(), q.data.device());
  out.data.slice(0, 0, r).slice(1, 0, c).copy_(q.data);
  switch (q.granularity) {
    case Granularity::tensor: out.scale_inv = q.scale_inv.clone(); break;
    case Granularity::row:
      out.scale_inv = Tensor::ones({rows}, DType::f32, q.scale_inv.device());
      out.scale_inv.slice(0, 0, r).copy_(q.scale_inv);
      break;
    default:
      out.scale_inv = Tensor::ones(new_grid.shape, DType::f32, q.scale_inv.device());
      out.scale_inv.slice(0, 0, old_grid.nbr).slice(1, 0, old_grid.nbc).copy_(q.scale_inv);
  }
  return out;
}

bool transposes_exactly(Granularity g) {
  return g == Granularity::tensor || g == Granularity::block_128x128 || g == Granularity::nv_16x16;
}

QuantizedTensor transpose_quantized(const QuantizedTensor& q) {
  constexpr std::string_view op = "transpose_quantized";
  DAEDALUS_CHECK(q.data.defined() && q.scale_inv.defined(), "{}: undefined quantized tensor", op);
  kernels::check_dim(op, q.data, "data", 2);
  DAEDALUS_CHECK(transposes_exactly(q.granularity),
                 "{}: {} scales run along the rows, so the transpose must be quantized anew (only tensor, "
                 "block_128x128 and nv_16x16 scales transpose with the data)",
                 op, granularity_name(q.granularity));
  QuantizedTensor out = q;
  out.data = q.data.t().contiguous();  // a byte transpose of the codes
  if (q.granularity != Granularity::tensor) out.scale_inv = q.scale_inv.t().contiguous();
  return out;
}

QuantizedTensor requantize_transposed(const QuantizedTensor& q, Granularity granularity, Format format,
                                      const ScaleOptions& options) {
  constexpr std::string_view op = "requantize_transposed";
  const bool fused = q.data.defined() && q.scale_inv.defined() && q.data.dim() == 2 &&
                     q.data.dtype() == dtype_of(q.format) && q.scale_inv.dtype() == DType::f32 &&
                     q.granularity == Granularity::tile_1x128 && granularity == Granularity::tile_1x128 &&
                     q.scale_inv.shape() == grid_of(q.granularity, q.rows(), q.cols()).shape &&
                     q.data.device() == q.scale_inv.device();
  if (!fused) return quantize(q.dequantize().t(), granularity, format, options);  // checks and names the input
  if (q.data.device().is_cuda()) {
#if DAEDALUS_WITH_CUDA
    return cuda_requantize_transposed(q, format, options);
#else
    kernels::throw_built_without_cuda(op);
#endif
  }
  if (options.stochastic_rounding) return quantize(q.dequantize().t(), granularity, format, options);
  DAEDALUS_CHECK(std::abs(options.margin) <= 64, "{}: margin {} is outside [-64, 64]", op, options.margin);
  const int64_t rows = q.cols(), cols = q.rows();  // of the transpose
  QuantizedTensor out;
  out.granularity = Granularity::tile_1x128;
  out.format = format;
  out.data = Tensor::empty({rows, cols}, dtype_of(format));
  out.scale_inv = Tensor::empty(grid_of(Granularity::tile_1x128, rows, cols).shape, DType::f32);
  out.scale_inv.fill_(1.0);  // an empty operand keeps scale 1
  const auto run = [&]<typename Qin>() {
    if (format == Format::e4m3) {
      cpu_requantize_transposed<Qin, fp8e4m3>(q, format, options, out);
    } else {
      cpu_requantize_transposed<Qin, fp8e5m2>(q, format, options, out);
    }
  };
  if (q.format == Format::e4m3) {
    run.template operator()<fp8e4m3>();
  } else {
    run.template operator()<fp8e5m2>();
  }
  return out;
}

QuantizedTensor swiglu_quantize(const Tensor& gate, const Tensor& up, Format format, const ScaleOptions& options) {
  if (gate.defined() && up.defined() && gate.device().is_cuda() && up.device() == gate.device()) {
#if DAEDALUS_WITH_CUDA
    return cuda_swiglu_quantize(gate, up, format, options);
#else
    kernels::throw_built_without_cuda("swiglu_quantize");
#endif
  }
  return quantize(kernels::swiglu(gate, up), Granularity::tile_1x128, format, options);
}

void AmaxHistory::push(float amax) {
  DAEDALUS_CHECK(length_ >= 1, "AmaxHistory: length must be at least 1, got {}", length_);
  values_.push_back(amax);
  while (int64_t(values_.size()) > length_) values_.pop_front();
}

float AmaxHistory::amax() const {
  float m = 0.0f;
  for (float a : values_) m = (a > m || a != a) ? a : m;  // a NaN in the window stays visible
  return m;
}

}  // namespace daedalus::fp8
