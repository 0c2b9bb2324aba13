// The 16x16 random Hadamard transform (fp8/hadamard.h).
#include "fp8/hadamard.h"

#include <algorithm>

#include "autograd/kernels/copy.h"
#include "autograd/kernels/strided.h"
#include "fp8/format.h"

namespace daedalus::fp8 {

namespace {

// v <- Had16 v in place: four butterfly stages (Sylvester ordering).
void walsh_hadamard_16(float* v) {
  for (int h = 1; h < 16; h *= 2)
    for (int i = 0; i < 16; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
}

Tensor as_f32_cpu(const Tensor& x, const char* op) {
  DAEDALUS_CHECK(
      x.defined() && x.dim() == 2 && x.device().is_cpu() && (x.dtype() == DType::f32 || x.dtype() == DType::bf16),
      "{}: expected a 2-d fp32 or bf16 CPU tensor, got {}", op,
      x.defined() ? x.describe() : std::string("an undefined tensor"));
  return (x.dtype() == DType::f32 ? x : kernels::cast(x, DType::f32)).contiguous();
}

}  // namespace

std::array<float, 16> hadamard_signs(uint64_t seed) {
  std::array<float, 16> s{};
  for (uint64_t i = 0; i < 16; ++i) s[i] = (stochastic_word(seed, i) >> 31) != 0 ? -1.0f : 1.0f;
  return s;
}

Tensor random_hadamard_16(const Tensor& x, uint64_t seed) {
  const Tensor xc = as_f32_cpu(x, "random_hadamard_16");
  const int64_t rows = xc.size(0), cols = xc.size(1), padded = (cols + 15) / 16 * 16;
  const std::array<float, 16> s = hadamard_signs(seed);
  Tensor y = Tensor::empty({rows, padded}, DType::f32);
  const float* in = xc.data<float>();
  float* out = y.data<float>();
  cpu::parallel_rows(rows, padded, [&](int64_t r) {
    for (int64_t c0 = 0; c0 < padded; c0 += 16) {
      float v[16];
      for (int64_t j = 0; j < 16; ++j) v[j] = c0 + j < cols ? in[r * cols + c0 + j] * s[size_t(j)] : 0.0f;
      walsh_hadamard_16(v);
      for (int64_t i = 0; i < 16; ++i) out[r * padded + c0 + i] = v[i] * 0.25f;
    }
  });
  return y;
}

Tensor inverse_random_hadamard_16(const Tensor& y, uint64_t seed, int64_t cols) {
  const Tensor yc = as_f32_cpu(y, "inverse_random_hadamard_16");
  const int64_t rows = yc.size(0), padded = yc.size(1);
  DAEDALUS_CHECK(padded % 16 == 0 && cols >= 0 && cols <= padded,
                 "inverse_random_hadamard_16: {} columns are not whole 16-chunks holding {} columns", padded, cols);
  const std::array<float, 16> s = hadamard_signs(seed);
  Tensor x = Tensor::empty({rows, cols}, DType::f32);
  const float* in = yc.data<float>();
  float* out = x.data<float>();
  cpu::parallel_rows(rows, padded, [&](int64_t r) {
    for (int64_t c0 = 0; c0 < padded; c0 += 16) {
      float v[16];
      for (int64_t i = 0; i < 16; ++i) v[i] = in[r * padded + c0 + i];
      walsh_hadamard_16(v);  // Hᵀ y = diag(s) Had16 y / 4 (Had16 is symmetric)
      for (int64_t j = 0; j < 16 && c0 + j < cols; ++j) out[r * cols + c0 + j] = v[j] * s[size_t(j)] * 0.25f;
    }
  });
  return x;
}

}  // namespace daedalus::fp8
