// The gradient-check harness every differentiable op goes through.
//
// gradcheck(op, inputs) builds Vars from the inputs, runs the op, seeds its output with fixed
// random weights w (so L = Σ w · op(x)) and compares the tape's gradient of every floating input
// with central differences of L, evaluated in fp32 with L accumulated in double:
//   fd_j = (L(x + h e_j) - L(x - h e_j)) / 2h,  h = 1e-2 · max(1, |x_j|).
// Error budget: truncation h²·|L'''|/6 ~ 1e-5 for smooth ops on O(1) inputs; fp32 rounding of the
// outputs, 2^-24 · Σ|w · y| ≈ 1e-5 for a few hundred outputs, divided by 2h: ~1e-3. So the check
// passes when |analytic - fd| <= atol + rtol · |fd| with atol = 2e-3 · max(1, max|fd|) and
// rtol = 1e-2 (options can loosen both for ops with long internal reductions). Inputs may be
// passed as non-contiguous views (options.transposed): the same values, transposed storage.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "tests/testing.h"

namespace daedalus::testing {

struct GradcheckOptions {
  double atol = 2e-3;  // relative to max(1, max |fd|)
  double rtol = 1e-2;
  double step = 1e-2;               // h relative to max(1, |x_j|)
  bool transposed = false;          // pass 2-d+ inputs as transposed views of transposed storage
  std::vector<bool> requires_grad;  // per input; default: every floating input
  uint64_t seed = 99;
};

using OpFn = std::function<Var(const std::vector<Var>&)>;

::testing::AssertionResult gradcheck(const OpFn& op, const std::vector<Tensor>& inputs,
                                     const GradcheckOptions& options = {});

// gradcheck with contiguous inputs, and again with the 2-d+ inputs as transposed views.
void expect_gradcheck(const OpFn& op, const std::vector<Tensor>& inputs, GradcheckOptions options = {});

// Exact equality of dtype, shape and bits (an op must return exactly what its kernel returns).
::testing::AssertionResult same(const Tensor& a, const Tensor& b);

}  // namespace daedalus::testing
