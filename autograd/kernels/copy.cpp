// Copy, cast and fill: dispatcher and CPU kernels.
#include "autograd/kernels/copy.h"

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

namespace {

constexpr int64_t kTile = 64;

// dst[b..., r, c] = src[b..., r, c] when src's last two dims are swapped in memory (a transposed
// view: src.stride(-2) == 1) and dst's rows are contiguous. Copying 64x64 tiles keeps both the
// strided reads and the contiguous writes in cache; the element-wise walk misses on every read.
template <typename D, typename S>
void copy_transposed(const Tensor& dst, const Tensor& src, Fp8Overflow overflow) {
  const int nd = dst.dim();
  const int64_t rows = dst.size(-2), cols = dst.size(-1);
  const int64_t batch = dst.numel() / std::max<int64_t>(rows * cols, 1);
  const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
  const int64_t ds = dst.stride(-2), ss = src.stride(-1);
  D* out = static_cast<D*>(dst.data_ptr());
  const S* in = static_cast<const S*>(src.data_ptr());
#pragma omp parallel for schedule(static) if (dst.numel() >= kParallelThreshold)
  for (int64_t task = 0; task < batch * row_tiles * col_tiles; ++task) {
    int64_t b = task / (row_tiles * col_tiles);
    const int64_t r0 = (task / col_tiles) % row_tiles * kTile, c0 = task % col_tiles * kTile;
    int64_t doff = 0, soff = 0;
    for (int d = nd - 3; d >= 0; --d) {
      const int64_t i = b % dst.size(d);
      b /= dst.size(d);
      doff += i * dst.stride(d);
      soff += i * src.stride(d);
    }
    const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c) out[doff + r * ds + c] = convert_element<D>(in[soff + r + c * ss], overflow);
  }
}

}  // namespace

void copy(const Tensor& dst, const Tensor& src, Fp8Overflow overflow) {
  dispatch_all("copy", dst.dtype(), [&]<typename D>() {
    dispatch_all("copy", src.dtype(), [&]<typename S>() {
      if (dst.dim() >= 2 && dst.stride(-1) == 1 && src.stride(-2) == 1 && src.size(-2) > 1 && src.size(-1) > 1) {
        copy_transposed<D, S>(dst, src, overflow);
        return;
      }
      D* out = static_cast<D*>(dst.data_ptr());
      const S* in = static_cast<const S*>(src.data_ptr());
      for_each_strided<2>(dst.shape(), {dst.strides(), src.strides()}, [&](auto off, int64_t n, auto st) {
        D* o = out + off[0];
        const S* i = in + off[1];
        if (st[0] == 1 && st[1] == 1) {
          for (int64_t k = 0; k < n; ++k) o[k] = convert_element<D>(i[k], overflow);
        } else {
          for (int64_t k = 0; k < n; ++k) o[k * st[0]] = convert_element<D>(i[k * st[1]], overflow);
        }
      });
    });
  });
}

void fill(const Tensor& dst, double value) {
  dispatch_all("fill", dst.dtype(), [&]<typename T>() {
    const T v = element_from_double<T>(value);
    T* out = static_cast<T*>(dst.data_ptr());
    for_each_strided<1>(dst.shape(), {dst.strides()}, [&](auto off, int64_t n, auto st) {
      for (int64_t k = 0; k < n; ++k) out[off[0] + k * st[0]] = v;
    });
  });
}

}  // namespace cpu

namespace kernels {

void copy(const Tensor& dst, const Tensor& src, Fp8Overflow overflow) {
  const Device device = common_device("copy", {&dst, &src});
  check_same_shape("copy", dst, src);
  switch (device.type) {
    case DeviceType::cpu: cpu::copy(dst, src, overflow); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("copy", copy(dst, src, overflow)); break;
  }
}

void fill(const Tensor& dst, double value) {
  const Device device = common_device("fill", {&dst});
  switch (device.type) {
    case DeviceType::cpu: cpu::fill(dst, value); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("fill", fill(dst, value)); break;
  }
}

Tensor cast(const Tensor& x, DType dtype, Fp8Overflow overflow) {
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  copy(out, x, overflow);
  return out;
}

Tensor round_to_bf16(const Tensor& x) {
  check_dtype("round_to_bf16", x, "x", DType::f32);
  return cast(cast(x, DType::bf16), DType::f32);
}

}  // namespace kernels

}  // namespace daedalus
