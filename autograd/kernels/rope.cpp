// Rotary position embedding: dispatcher, cos/sin table (and its per-device cache) and CPU kernel.
#include "autograd/kernels/rope.h"

#include <cmath>
#include <cstring>
#include <list>
#include <mutex>
#include <vector>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

// x, y contiguous [B, T, H, D] of one dtype; cos_sin: [T, D/2] cos then [T, D/2] sin (float).
void rope(const Tensor& y, const Tensor& x, const std::vector<float>& cos_sin, int64_t seq, int64_t heads, int64_t dim,
          kernels::RopeLayout layout, bool inverse) {
  const int64_t half = dim / 2;
  const int64_t rows = dim == 0 ? 0 : x.numel() / dim;
  const float* cos_table = cos_sin.data();
  const float* sin_table = cos_sin.data() + seq * half;
  // Pair j is (x[j * step], x[j * step + second]).
  const int64_t step = layout == kernels::RopeLayout::interleaved ? 2 : 1;
  const int64_t second = layout == kernels::RopeLayout::interleaved ? 1 : half;
  const float sign = inverse ? -1.0f : 1.0f;
  dispatch_float("rope", x.dtype(), [&]<typename T>() {
    const T* in = static_cast<const T*>(x.data_ptr());
    T* out = static_cast<T*>(y.data_ptr());
    parallel_rows(rows, dim, [&](int64_t r) {
      const int64_t t = (r / heads) % seq;
      const float* c = cos_table + t * half;
      const float* s = sin_table + t * half;
      const T* xr = in + r * dim;
      T* yr = out + r * dim;
      for (int64_t j = 0; j < half; ++j) {
        const int64_t i0 = j * step, i1 = i0 + second;
        const float a = to_float(xr[i0]), b = to_float(xr[i1]);
        const float sn = sign * s[j];
        yr[i0] = from_float<T>(a * c[j] - b * sn);
        yr[i1] = from_float<T>(a * sn + b * c[j]);
      }
    });
  });
}

}  // namespace cpu

namespace kernels {

namespace {

// m * cos then m * sin of angle(t, j) = positions[t] * inv_freq[j], [T, D/2] each, in double then float.
std::vector<float> rope_table(const std::vector<double>& pos, const RopeFrequencies& freqs) {
  const int64_t half = int64_t(freqs.inv_freq.size());
  const int64_t seq = int64_t(pos.size());
  const double m = freqs.attention_factor;
  std::vector<float> table(static_cast<size_t>(2 * seq * half));
  for (int64_t t = 0; t < seq; ++t) {
    for (int64_t j = 0; j < half; ++j) {
      const double angle = pos[size_t(t)] * freqs.inv_freq[size_t(j)];
      table[size_t(t * half + j)] = float(m * std::cos(angle));
      table[size_t((seq + t) * half + j)] = float(m * std::sin(angle));
    }
  }
  return table;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }

// The CPU's table, uploaded to a device once per (device, positions, frequencies) and kept: the
// table depends on nothing else. A few entries (a training run uses one or two: the model's
// sequence length, and generation's); the least recently used is dropped beyond kCachedTables.
// Leaked on purpose: device tensors must not be freed during static destruction.
class DeviceRopeTables {
 public:
  static constexpr size_t kCachedTables = 8;

  Tensor get(Device device, const std::vector<double>& pos, const RopeFrequencies& freqs) {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      // Frequencies compared by their bits: a table is reused only for exactly the same inputs.
      if (it->device == device && same_bits(it->freqs.attention_factor, freqs.attention_factor) &&
          it->freqs.inv_freq.size() == freqs.inv_freq.size() &&
          std::memcmp(it->freqs.inv_freq.data(), freqs.inv_freq.data(), freqs.inv_freq.size() * sizeof(double)) ==
              0 &&
          it->positions == pos) {
        entries_.splice(entries_.begin(), entries_, it);  // most recently used first
        return entries_.front().table;
      }
    }
    const int64_t half = int64_t(freqs.inv_freq.size());
    Tensor table = Tensor::from_vector(rope_table(pos, freqs), {2 * int64_t(pos.size()) * half}, device);
    entries_.push_front(Entry{device, freqs, pos, table});
    if (entries_.size() > kCachedTables) entries_.pop_back();
    return table;
  }

 private:
  struct Entry {
    Device device;
    RopeFrequencies freqs;
    std::vector<double> positions;
    Tensor table;  // fp32 [2 * T * dim/2] on `device`: cos table, then sin table
  };
  std::mutex mutex_;
  std::list<Entry> entries_;
};

[[maybe_unused]] DeviceRopeTables& device_rope_tables() {  // unused in a build without CUDA
  static auto* tables = new DeviceRopeTables();
  return *tables;
}

}  // namespace

RopeFrequencies RopeFrequencies::standard(double theta, int64_t dim) {
  DAEDALUS_CHECK(theta > 0.0 && std::isfinite(theta), "rope: theta must be finite and > 0, got {}", theta);
  DAEDALUS_CHECK(dim >= 0 && dim % 2 == 0, "rope: the head dim must be even and >= 0, got {}", dim);
  RopeFrequencies f;
  f.inv_freq.resize(size_t(dim / 2));
  for (int64_t j = 0; j < dim / 2; ++j) f.inv_freq[size_t(j)] = std::pow(theta, -2.0 * double(j) / double(dim));
  return f;
}

Tensor rope(const Tensor& x, const Tensor& positions, double theta, RopeLayout layout, bool inverse) {
  DAEDALUS_CHECK(theta > 0.0 && std::isfinite(theta), "rope: theta must be finite and > 0, got {}", theta);
  check_dim("rope", x, "x [B, T, H, D]", 4);
  DAEDALUS_CHECK(x.size(3) % 2 == 0, "rope: the head dim D of x {} must be even", shape_str(x.shape()));
  return rope(x, positions, RopeFrequencies::standard(theta, x.size(3)), layout, inverse);
}

Tensor rope(const Tensor& x, const Tensor& positions, const RopeFrequencies& freqs, RopeLayout layout, bool inverse) {
  // positions may live on the host for any x: the table is built from their values on the host.
  const Device device = positions.defined() && positions.device().is_cpu() && x.defined()
                            ? x.device()
                            : common_device("rope", {&x, &positions});
  DAEDALUS_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16, "rope: x must be fp32 or bf16, got {}",
                 x.describe());
  DAEDALUS_CHECK(positions.dtype() == DType::i32 || positions.dtype() == DType::i64,
                 "rope: positions must be int32 or int64, got {}", positions.describe());
  check_dim("rope", x, "x [B, T, H, D]", 4);
  check_dim("rope", positions, "positions [T]", 1);
  DAEDALUS_CHECK(positions.size(0) == x.size(1), "rope: positions {} do not match the T dimension of x {}",
                 shape_str(positions.shape()), shape_str(x.shape()));
  DAEDALUS_CHECK(x.size(3) % 2 == 0, "rope: the head dim D of x {} must be even", shape_str(x.shape()));
  DAEDALUS_CHECK(int64_t(freqs.inv_freq.size()) * 2 == x.size(3),
                 "rope: {} frequencies for the head dim D of x {} (expected D/2)", freqs.inv_freq.size(),
                 shape_str(x.shape()));
  for (double f : freqs.inv_freq)
    DAEDALUS_CHECK(std::isfinite(f) && f >= 0, "rope: frequency {} is not finite and >= 0", f);
  DAEDALUS_CHECK(std::isfinite(freqs.attention_factor), "rope: attention factor {} is not finite",
                 freqs.attention_factor);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), device);
  // Host positions are read in place; CUDA positions are copied to the host (one small copy).
  const std::vector<double> pos = positions.to_doubles();  // int64 positions are exact below 2^53
  switch (device.type) {
    case DeviceType::cpu:
      cpu::rope(y, x.contiguous(), rope_table(pos, freqs), x.size(1), x.size(2), x.size(3), layout, inverse);
      break;
    case DeviceType::cuda:
      // The CPU's table, uploaded once and cached: [2 * T * D/2] floats.
      DAEDALUS_CUDA_KERNEL("rope", rope(y, x.contiguous(), device_rope_tables().get(device, pos, freqs),
                                        x.size(1), x.size(2), x.size(3), layout, inverse));
      break;
  }
  return y;
}

}  // namespace kernels

}  // namespace daedalus
