#include "tests/gradcheck.h"

#include <algorithm>
#include <cmath>

namespace daedalus::testing {

namespace {

// The same values as t, stored transposed (last two dims swapped in memory): a non-contiguous view.
Tensor as_transposed_view(const Tensor& t) {
  if (t.dim() < 2) return t;
  return t.transpose(-1, -2).contiguous().transpose(-1, -2);
}

double weighted_loss(const Tensor& y, const std::vector<double>& w) {
  const std::vector<double> v = y.to_doubles();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += w[i] * v[i];
  return s;
}

}  // namespace

::testing::AssertionResult gradcheck(const OpFn& op, const std::vector<Tensor>& inputs,
                                     const GradcheckOptions& options) {
  auto build = [&](const std::vector<Tensor>& values, bool with_grad) {
    std::vector<Var> vars;
    for (size_t i = 0; i < values.size(); ++i) {
      const bool wants = is_floating(values[i].dtype()) && (options.requires_grad.empty() || options.requires_grad[i]);
      vars.emplace_back(options.transposed ? as_transposed_view(values[i]) : values[i], with_grad && wants);
    }
    return vars;
  };

  // Analytic gradients through the tape.
  std::vector<Var> vars = build(inputs, true);
  const Var out = op(vars);
  if (!out.requires_grad()) return ::testing::AssertionFailure() << "the op's output does not require a gradient";
  Generator gen(options.seed);
  const Tensor w = Tensor::randn(out.shape(), gen, out.dtype());
  const std::vector<double> wd = w.to_doubles();
  current_tape().backward(out, w);

  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!vars[i].requires_grad()) continue;
    if (!vars[i].grad().defined()) return ::testing::AssertionFailure() << "input " << i << " received no gradient";
    const std::vector<double> analytic = vars[i].grad().to_doubles();
    std::vector<double> x = inputs[i].to_doubles();
    std::vector<double> fd(x.size());
    for (size_t j = 0; j < x.size(); ++j) {
      const double xj = x[j], h = options.step * std::max(1.0, std::fabs(xj));
      std::vector<Tensor> perturbed = inputs;
      double plus = 0, minus = 0;
      for (int sign : {1, -1}) {
        x[j] = xj + sign * h;
        perturbed[i] = Tensor::from_values(x, inputs[i].shape(), inputs[i].dtype());
        NoGradGuard no_grad;
        const double l = weighted_loss(op(build(perturbed, false)).value(), wd);
        (sign > 0 ? plus : minus) = l;
      }
      x[j] = xj;
      // The step actually taken (x ± h rounded to the input dtype).
      const double step = double(float(xj + h)) - double(float(xj - h));
      fd[j] = (plus - minus) / step;
    }
    double scale = 1.0;
    for (double v : fd) scale = std::max(scale, std::fabs(v));
    for (size_t j = 0; j < fd.size(); ++j) {
      const double err = std::fabs(analytic[j] - fd[j]);
      if (!(err <= options.atol * scale + options.rtol * std::fabs(fd[j])))
        return ::testing::AssertionFailure()
               << "input " << i << " " << inputs[i].describe() << " element " << j << ": tape gradient " << analytic[j]
               << ", finite differences " << fd[j] << " (|err| " << err << ", allowed "
               << options.atol * scale + options.rtol * std::fabs(fd[j]) << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

void expect_gradcheck(const OpFn& op, const std::vector<Tensor>& inputs, GradcheckOptions options) {
  options.transposed = false;
  EXPECT_TRUE(gradcheck(op, inputs, options)) << "contiguous inputs";
  if (std::none_of(inputs.begin(), inputs.end(), [](const Tensor& t) { return t.dim() >= 2; })) return;
  options.transposed = true;
  EXPECT_TRUE(gradcheck(op, inputs, options)) << "transposed inputs";
}

::testing::AssertionResult same(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << "dtypes differ: " << a.describe() << " vs " << b.describe();
  return all_close(a, b, 0, 0);
}

}  // namespace daedalus::testing
