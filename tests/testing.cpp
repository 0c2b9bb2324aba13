#include "tests/testing.h"

#include <cmath>

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

}  // namespace daedalus::testing
