#include "tests/testing.h"

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

namespace daedalus::testing {

::testing::AssertionResult all_close(const Tensor& actual, const std::vector<double>& expected, double rtol,
                                     double atol) {
  const std::vector<double> got = actual.to_doubles();
  if (got.size() != expected.size())
    return ::testing::AssertionFailure() << "size mismatch: tensor " << actual.describe() << " has " << got.size()
                                         << " elements, reference " << expected.size();
  double worst_excess = 0, max_abs = 0;
  int64_t worst = -1, failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double a = got[i], e = expected[i];
    if (std::isnan(a) || std::isnan(e)) {
      if (std::isnan(a) != std::isnan(e)) {
        ++failures;
        worst = int64_t(i);
        worst_excess = INFINITY;
      }
      continue;
    }
    if (std::isinf(a) || std::isinf(e)) {
      if (a != e) {
        ++failures;
        worst = int64_t(i);
        worst_excess = INFINITY;
      }
      continue;
    }
    const double err = std::fabs(a - e);
    max_abs = std::max(max_abs, err);
    const double excess = err - (atol + rtol * std::fabs(e));
    if (excess > 0) {
      ++failures;
      if (excess > worst_excess || worst < 0) {
        worst_excess = excess;
        worst = int64_t(i);
      }
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << got.size() << " elements of " << actual.describe()
                                       << " outside atol=" << atol << " rtol=" << rtol << "; worst at flat index "
                                       << worst << ": got " << got[size_t(worst)] << ", expected "
                                       << expected[size_t(worst)] << " (max abs error " << max_abs << ")";
}

::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, double rtol, double atol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << "shape mismatch: " << actual.describe() << " vs " << expected.describe();
  return all_close(actual, expected.to_doubles(), rtol, atol);
}

::testing::AssertionResult gemm_sums_close(const Tensor& actual, const Tensor& reference, const Tensor& abs_product,
                                           double k, double rel) {
  if (actual.shape() != reference.shape() || abs_product.shape() != reference.shape())
    return ::testing::AssertionFailure() << "shapes " << actual.describe() << ", reference " << reference.describe()
                                         << ", S " << abs_product.describe();
  const std::vector<double> got = actual.to(Device::cpu()).to_doubles(),
                            want = reference.to(Device::cpu()).to_doubles();
  const std::vector<double> s = abs_product.to(Device::cpu()).to_doubles();
  int64_t failures = 0, first = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = (2.0 * k + 4.0) * kU32 * s[i] * 1.001 + rel * std::fabs(want[i]);
    if (!(std::fabs(got[i] - want[i]) <= tol)) {
      if (failures++ == 0) first = int64_t(i);
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  const size_t f = size_t(first);
  return ::testing::AssertionFailure() << failures << " of " << got.size() << " elements out of bounds; first ["
                                       << first << "] = " << got[f] << ", reference " << want[f] << ", S " << s[f]
                                       << ", k " << k << ", rel " << rel;
}

double unit_roundoff(DType dtype) {
  switch (dtype) {
    case DType::f32: return std::ldexp(1.0, -24);
    case DType::bf16: return std::ldexp(1.0, -8);
    case DType::f8e4m3: return std::ldexp(1.0, -4);
    case DType::f8e5m2: return std::ldexp(1.0, -3);
    default: return 0.0;
  }
}

Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype, double std) {
  Generator gen(seed);
  return Tensor::randn(shape, gen, dtype, Device::cpu(), 0.0, std);
}

std::vector<double> finite_differences(const std::function<double(const std::vector<double>&)>& loss,
                                       std::vector<double> x, double h) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    x[i] = xi + h;
    const double plus = loss(x);
    x[i] = xi - h;
    const double minus = loss(x);
    x[i] = xi;
    g[i] = (plus - minus) / (2 * h);
  }
  return g;
}

double weighted_sum(const std::vector<double>& w, const std::vector<double>& y) {
  double s = 0.0;
  for (size_t i = 0; i < w.size(); ++i) s += w[i] * y[i];
  return s;
}

Tensor random_view(int64_t rows, int64_t cols, uint64_t seed, DType dtype, int layout, double std) {
  switch (layout) {
    case 1: return random_tensor({cols, rows}, seed, dtype, std).t();
    case 2: return random_tensor({rows, cols + 3}, seed, dtype, std).slice(1, 2, cols + 2);
    default: return random_tensor({rows, cols}, seed, dtype, std);
  }
}

Tensor cancelling_sources(int64_t m, int64_t d, int64_t first, uint64_t seed, DType dtype) {
  std::vector<double> v = random_tensor({m, d}, seed).to_doubles();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < d; ++j) {
      if (i < first) v[size_t(i * d + j)] = std::ldexp(1.0, 60);
      if (i >= m - first) v[size_t(i * d + j)] = -std::ldexp(1.0, 60);
    }
  return Tensor::from_values(v, {m, d}, dtype);
}

ScatterOrderProbe scatter_order_probe(int64_t n, int64_t m, uint64_t seed) {
  std::vector<int64_t> rows(static_cast<size_t>(m)), position(static_cast<size_t>(m));
  std::vector<int64_t> count(static_cast<size_t>(n), 0);
  Generator gen(seed);
  for (int64_t i = 0; i < m; ++i) {
    rows[size_t(i)] = int64_t(gen.next_u64() % uint64_t(n));
    position[size_t(i)] = count[size_t(rows[size_t(i)])]++;
  }
  const int64_t period = std::max<int64_t>(1, *std::max_element(count.begin(), count.end()) - 1), d = period + 3;
  std::vector<double> v = random_tensor({m, d}, seed + 1).to_doubles();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < d; ++j) {
      const int64_t p = position[size_t(i)];
      if (p == j % period) v[size_t(i * d + j)] = std::ldexp(1.0, 60);
      if (p == j % period + 1) v[size_t(i * d + j)] = -std::ldexp(1.0, 60);
    }
  return {Tensor::from_vector(rows, {m}), Tensor::from_values(v, {m, d}, DType::f32)};
}

Tensor cyclic_index(int64_t m, int64_t k, DType dtype) {
  std::vector<double> v(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) v[size_t(i)] = double(i % k);
  return Tensor::from_values(v, {m}, dtype);
}

std::vector<uint8_t> bytes(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).contiguous();
  std::vector<uint8_t> out(t.nbytes());
  if (!out.empty()) std::memcpy(out.data(), c.data_ptr(), out.size());
  return out;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  return "<no InputError>";
}

::testing::AssertionResult mentions(const std::string& msg, std::initializer_list<std::string_view> parts) {
  for (std::string_view p : parts)
    if (msg.find(p) == std::string::npos) return ::testing::AssertionFailure() << "'" << p << "' not in: " << msg;
  return ::testing::AssertionSuccess();
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  const std::string msg = error_of(fn);
  for (const std::string& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
}

Tensor scaled_normal(int64_t rows, int64_t cols, uint64_t seed, DType dtype) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int e = int(r % 5) - 2 + int((c / 128) % 3) + int((r / 128) % 2) * 3;
      v[static_cast<size_t>(r * cols + c)] = r == 3 ? 0.0f : std::ldexp(normal(rng), e);
    }
  return Tensor::from_vector(v, {rows, cols}).to(dtype);
}

::testing::AssertionResult bit_identical(const Tensor& actual, const Tensor& expected) {
  if (actual.dtype() != expected.dtype() || actual.shape() != expected.shape())
    return ::testing::AssertionFailure() << actual.describe() << " vs " << expected.describe();
  const std::vector<uint8_t> a = bytes(actual.to(Device::cpu())), e = bytes(expected.to(Device::cpu()));
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != e[i])
      return ::testing::AssertionFailure()
             << "byte " << i << " (element " << i / actual.element_size() << ") differs: 0x" << std::hex << int(a[i])
             << " vs 0x" << int(e[i]) << std::dec << " in " << actual.describe();
  return ::testing::AssertionSuccess();
}

std::string process_temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / (name + "-" + std::to_string(::getpid()))).string();
}

TempDir::TempDir(const std::string& tag) {
  std::string name = "/tmp/daedalus_" + tag + "_XXXXXX";
  const char* dir = ::mkdtemp(name.data());
  EXPECT_NE(dir, nullptr) << name;
  path_ = dir != nullptr ? dir : "/tmp";
}

std::string TempDir::operator/(const std::string& name) const {
  std::string out = path_;
  out += '/';
  out += name;
  return out;
}

TempDir::~TempDir() {
  if (path_ != "/tmp") std::filesystem::remove_all(path_);
}

}  // namespace daedalus::testing
