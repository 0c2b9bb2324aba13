// Copies, casts and fills between strided tensors of any dtype on one device.
#pragma once

#include "autograd/tensor.h"

namespace daedalus::kernels {

// dst[i] = convert(src[i]); dst and src: same shape, same device, any strides and dtypes.
// Float -> narrower float rounds to nearest even; -> FP8 per `overflow`; float -> int truncates.
void copy(const Tensor& dst, const Tensor& src, Fp8Overflow overflow = Fp8Overflow::saturate);

// dst[i] = value converted to dst's dtype.
void fill(const Tensor& dst, double value);

// A new contiguous tensor of `dtype` holding x's values.
Tensor cast(const Tensor& x, DType dtype, Fp8Overflow overflow = Fp8Overflow::saturate);

// fp32 -> bf16 -> fp32: x rounded to the nearest bf16 value, kept in fp32 (mixed-precision emulation).
Tensor round_to_bf16(const Tensor& x);

}  // namespace daedalus::kernels
