// The tape: accumulation, micro-batches, no-grad, release, saved-tensor hooks, recomputation, errors.
#include <gtest/gtest.h>

#include "autograd/ops/arithmetic.h"
#include "autograd/ops/linear.h"
#include "autograd/ops/shape.h"
#include "autograd/tape.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::all_close;
using testing::random_tensor;

TEST(Tape, TensorUsedTwiceAccumulatesBothPaths) {
  // y = x * x + 3x  ->  dy/dx = 2x + 3
  Var x(Tensor::from_values({1.0, -2.0, 0.5}, {3}), true);
  const Var y = ops::add(ops::mul(x, x), ops::affine(x, 3.0));
  backward(ops::sum_all(y));
  EXPECT_TRUE(all_close(x.grad(), {5.0, -1.0, 4.0}, 1e-6, 0));
  EXPECT_EQ(current_tape().size(), 0u);
}

TEST(Tape, ParameterGradientsAccumulateAcrossMicroBatches) {
  Var w(Tensor::from_values({2.0, -1.0}, {2}), true);
  const Tensor x1 = Tensor::from_values({1.0, 3.0}, {2}), x2 = Tensor::from_values({-4.0, 0.5}, {2});
  backward(ops::sum_all(ops::mul(w, Var(x1))));
  EXPECT_TRUE(all_close(w.grad(), {1.0, 3.0}, 0, 0));
  backward(ops::sum_all(ops::mul(w, Var(x2))));
  EXPECT_TRUE(all_close(w.grad(), {-3.0, 3.5}, 0, 0));  // x1 + x2
  w.zero_grad();
  EXPECT_FALSE(w.grad().defined());
  backward(ops::sum_all(ops::mul(w, Var(x2))));
  EXPECT_TRUE(all_close(w.grad(), {-4.0, 0.5}, 0, 0));
}

TEST(Tape, LeafGradientIsNotAliasedWithOtherLeaves) {
  // add's backward hands the same tensor to both inputs; each leaf must own its gradient, so an
  // in-place update of one (clipping) cannot change the other.
  Var a(Tensor::ones({4}), true), b(Tensor::ones({4}), true);
  backward(ops::sum_all(ops::add(a, b)));
  EXPECT_FALSE(a.grad().shares_storage(b.grad()));
}

TEST(Tape, NoGradRecordsNothing) {
  Var w(random_tensor({3, 4}, 1), true);
  const Var x(random_tensor({2, 4}, 2));
  {
    NoGradGuard no_grad;
    const Var y = ops::linear(x, w);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(current_tape().size(), 0u);
    EXPECT_THROW(backward(ops::sum_all(y)), InputError);
  }
  EXPECT_TRUE(grad_enabled());
  const Var y = ops::linear(x, w);
  EXPECT_EQ(current_tape().size(), 1u);
  current_tape().clear();
}

TEST(Tape, OnlyOpsWithAGradientRequiringInputAreRecorded) {
  const Var a(random_tensor({3}, 1)), b(random_tensor({3}, 2));
  const Var c = ops::mul(a, b);
  EXPECT_FALSE(c.requires_grad());
  EXPECT_EQ(current_tape().size(), 0u);
}

TEST(Tape, ReleasedAfterBackwardAndSecondBackwardIsAClearError) {
  Var w(random_tensor({5}, 3), true);
  const Var loss = ops::sum_all(ops::mul(w, w));
  backward(loss);
  EXPECT_EQ(current_tape().size(), 0u);
  const std::string msg = testing::error_of([&] { backward(loss); });
  EXPECT_TRUE(testing::mentions(msg, {"backward", "released", "run the forward again"}));
}

TEST(Tape, NonScalarRootNeedsASeed) {
  Var w(random_tensor({2, 3}, 4), true);
  const Var y = ops::affine(w, 2.0);
  EXPECT_TRUE(testing::mentions(testing::error_of([&] { backward(y); }), {"backward", "[2, 3]", "seed"}));
  current_tape().clear();
  const Var y2 = ops::affine(w, 2.0);
  backward(y2, Tensor::full({2, 3}, 0.5));
  EXPECT_TRUE(all_close(w.grad(), std::vector<double>(6, 1.0), 0, 0));
}

TEST(Tape, ShapeMismatchedGradientNamesTheOp) {
  Var x(random_tensor({2, 3}, 5), true);
  const Var y = record1("broken_op", {x}, x.value().clone(), [](const BackwardContext&) {
    return std::vector<Tensor>{Tensor::zeros({3, 2})};
  });
  const std::string msg = testing::error_of([&] { backward(y, Tensor::ones({2, 3})); });
  EXPECT_TRUE(testing::mentions(msg, {"broken_op backward", "[3, 2]", "[2, 3]"}));
  EXPECT_EQ(current_tape().size(), 0u);  // a failed backward releases the tape
  const Var z =
      record1("wrong_count", {x}, x.value().clone(), [](const BackwardContext&) { return std::vector<Tensor>{}; });
  EXPECT_TRUE(testing::mentions(testing::error_of([&] {
                                  backward(z, Tensor::ones({2, 3}));
                                }),
                                {"wrong_count backward", "0 gradients for 1 inputs"}));
}

TEST(Tape, SavedTensorHookPacksAndUnpacks) {
  // A hook that stores a bf16 copy (what an FP8/BF16 activation cache does) and counts its use.
  int packed = 0, unpacked = 0;
  Var w(random_tensor({4, 8}, 6), true);
  const Var x(random_tensor({3, 8}, 7));
  Var y;
  {
    SavedTensorHook hook([&](const Tensor& t) {
      ++packed;
      Tensor compact = t.to(DType::bf16);
      return std::function<Tensor()>([&unpacked, compact] {
        ++unpacked;
        return compact.to(DType::f32);
      });
    });
    y = ops::linear(x, w);
  }
  EXPECT_EQ(packed, 1);  // linear saved x (w needs no saving: x does not require a gradient)
  backward(ops::sum_all(y));
  EXPECT_EQ(unpacked, 1);
  // dW = Σ rows of x, computed from the bf16 copy: equal to the bf16-rounded x summed.
  std::vector<double> want(32, 0.0);
  const std::vector<double> xb = x.value().to(DType::bf16).to_doubles();
  for (int r = 0; r < 3; ++r)
    for (int o = 0; o < 4; ++o)
      for (int k = 0; k < 8; ++k) want[size_t(o * 8 + k)] += xb[size_t(r * 8 + k)];
  EXPECT_TRUE(all_close(w.grad(), want, 1e-6, 1e-6));
}

TEST(Tape, RecomputeGivesTheSameGradientsAndKeepsOnlyInputs) {
  Var w1(random_tensor({16, 8}, 8, DType::f32, 0.3), true), w2(random_tensor({8, 16}, 9, DType::f32, 0.3), true);
  const Tensor x = random_tensor({5, 8}, 10);
  auto block = [&](const std::vector<Var>& in) {
    return std::vector<Var>{ops::linear(ops::mul(ops::linear(in[0], w1), ops::linear(in[0], w1)), w2)};
  };
  Var xa(x, true);
  backward(ops::sum_all(block({xa})[0]));
  const Tensor gw1 = w1.grad().clone(), gw2 = w2.grad().clone(), gx = xa.grad().clone();
  w1.zero_grad();
  w2.zero_grad();
  Var xb(x, true);
  const Var y = recompute("block", block, {xb})[0];
  EXPECT_EQ(current_tape().size(), 1u);  // one node for the whole block
  backward(ops::sum_all(y));
  // The same ops on the same values in the same order: bit-identical gradients.
  EXPECT_TRUE(all_close(w1.grad(), gw1, 0, 0));
  EXPECT_TRUE(all_close(w2.grad(), gw2, 0, 0));
  EXPECT_TRUE(all_close(xb.grad(), gx, 0, 0));
}

TEST(Tape, MemoryIsReleasedAfterBackwardAndPeakGrowsLinearlyWithDepth) {
  // N stacked layers h = (h Wᵀ) * (h Wᵀ); peak memory of forward + backward minus the
  // parameters must grow by the same amount for every added layer (activations kept: linear in N).
  Allocator& cpu = allocator_for(Device::cpu());
  const int64_t width = 256, tokens = 512;
  std::vector<int64_t> peaks;
  for (int layers : {1, 2, 3, 4, 5}) {
    std::vector<Var> weights;
    for (int l = 0; l < layers; ++l)
      weights.emplace_back(random_tensor({width, width}, uint64_t(l), DType::f32, 0.05), true);
    const Tensor x = random_tensor({tokens, width}, 77);
    cpu.empty_cache();
    const int64_t base = cpu.stats().current_bytes;
    cpu.reset_peak();
    {
      Var h(x);
      for (const Var& w : weights) h = ops::mul(ops::linear(h, w), ops::linear(h, w));
      backward(ops::sum_all(h));
    }
    peaks.push_back(cpu.stats().peak_bytes - base);
    EXPECT_EQ(current_tape().size(), 0u);
    // After backward only the parameter gradients remain (layers x width x width fp32).
    EXPECT_EQ(cpu.stats().current_bytes - base, int64_t(layers) * width * width * 4);
  }
  const int64_t step = peaks[1] - peaks[0];
  EXPECT_GT(step, 0);
  for (size_t i = 2; i < peaks.size(); ++i) {
    const int64_t d = peaks[i] - peaks[i - 1];
    EXPECT_NEAR(double(d), double(step), 0.05 * double(step))
        << "peaks " << peaks[0] << " " << peaks[1] << " " << peaks[i];
  }
}

}  // namespace
}  // namespace daedalus
