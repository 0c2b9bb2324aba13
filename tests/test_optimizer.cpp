// AdamW against a double-precision re-implementation of PyTorch's AdamW (fp32 and bf16 moments),
// weight decay per parameter, global-norm clipping, the sharded-norm hook, state access, config checks.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <map>

#include "autograd/kernels/adamw.h"
#include "tests/testing.h"
#include "train/optimizer.h"

namespace daedalus::train {
namespace {

using testing::all_close;
using testing::expect_error;
using testing::kU32;

// ---- the reference --------------------------------------------------------------------------------

// x rounded to bf16 (8 significant bits), nearest even, computed independently of the library's
// codecs: x = f·2^e with f in [0.5, 1), so f·2^8 in [128, 256) rounds to an integer with
// nearbyint (ties to even in the default rounding mode). Exact in double for normal values,
// which is all the moments here are.
double round_bf16(double x) {
  if (x == 0) return x;
  int e = 0;
  const double f = std::frexp(x, &e);
  return std::ldexp(std::nearbyint(std::ldexp(f, 8)), e - 8);
}

// torch.optim.AdamW for one tensor, in double. `round_state` models the moment storage.
struct RefAdamW {
  std::vector<double> p, m, v;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, wd = 0.1;
  double (*round_state)(double) = [](double x) { return x; };

  void step(const std::vector<double>& g, double lr, int t, bool decay) {
    const double bc1 = 1 - std::pow(beta1, t), bc2 = 1 - std::pow(beta2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      if (decay) p[i] *= 1 - lr * wd;
      m[i] = round_state(beta1 * m[i] + (1 - beta1) * g[i]);
      v[i] = round_state(beta2 * v[i] + (1 - beta2) * g[i] * g[i]);
      p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
    }
  }
};

// ---- helpers ----------------------------------------------------------------------------------------

Param param(const std::string& name, const std::vector<double>& values, bool decay = true, bool sharded = false) {
  return Param{name, Var(Tensor::from_values(values, {int64_t(values.size())}), /*requires_grad=*/true), decay,
               sharded};
}

void set_grad(Param& p, const std::vector<double>& g) {
  p.var.zero_grad();
  p.var.slot()->accumulate("test", Tensor::from_values(g, {int64_t(g.size())}));
}

// Gradients exactly representable in fp32, so the reference sees the same values.
std::vector<double> grads_at(int step, size_t n) {
  std::vector<double> g(n);
  for (size_t i = 0; i < n; ++i) g[i] = std::ldexp(double(int(i * 37 + step * 11) % 23 - 11), -3);
  return g;
}

// Three steps with changing gradients and learning rates, for both moment dtypes.
//
// Tolerances (fp32 unit roundoff u = 2^-24; the library computes in double and rounds what it stores):
//  - parameters: each step rounds p to fp32 (≤ u·|p|), 3 steps → rtol 3u. With fp32 moments the
//    library reads m and v rounded (≤ t·u relative after t steps, the reference does not round), which
//    moves the update lr·m̂/√v̂ by ≤ 1.5·t·u·lr·|m̂/√v̂|, and |m̂/√v̂| ≤ 1.002 here (Cauchy–Schwarz over
//    the bias-corrected weights for t ≤ 3). Summed over 3 steps: ≤ 9u·lr_max → atol 13.5u·lr_max.
//  - fp32 moments: one rounding per step of a value ≤ max|g| (m) or ≤ max g² (v): atol 3u·max.
//  - bf16 moments: the reference computes the same double expression from the same stored values and
//    rounds it to bf16 independently, so they must be equal exactly at every step.
void check_three_steps(DType state_dtype) {
  OptimizerConfig cfg;
  cfg.state_dtype = state_dtype;
  cfg.grad_clip = 0;  // clipping is tested on its own
  std::vector<Param> params{param("w", {1.0, -2.0, 0.5, 3.0, -0.25, 0.0, 1.5}),
                            param("norm", {1.0, 1.0, 0.75}, /*decay=*/false)};
  std::vector<RefAdamW> ref(2);
  for (size_t k = 0; k < 2; ++k) {
    ref[k].p = params[k].var.value().to_doubles();
    ref[k].m.assign(ref[k].p.size(), 0.0);
    ref[k].v.assign(ref[k].p.size(), 0.0);
    if (state_dtype == DType::bf16) ref[k].round_state = round_bf16;
  }
  AdamW opt(params, cfg);
  const double lrs[] = {0.1, 0.05, 0.08};
  for (int t = 1; t <= 3; ++t) {
    for (size_t k = 0; k < 2; ++k) {
      Param& p = params[k];
      const std::vector<double> g = grads_at(t + int(k), size_t(p.var.value().numel()));
      set_grad(p, g);
      ref[k].step(g, lrs[t - 1], t, p.weight_decay);
    }
    opt.clip_and_step(lrs[t - 1], opt.grad_norm());
    EXPECT_EQ(opt.step_count(), t);
    for (size_t k = 0; k < 2; ++k) {
      const std::string& name = params[k].name;
      EXPECT_TRUE(all_close(params[k].var.value(), ref[k].p, 3 * kU32, 13.5 * kU32 * 0.1)) << name << " step " << t;
      const Tensor& m = opt.exp_avg(name);
      const Tensor& v = opt.exp_avg_sq(name);
      ASSERT_EQ(m.dtype(), state_dtype);
      if (state_dtype == DType::bf16) {
        EXPECT_EQ(m.to_doubles(), ref[k].m) << name << " exp_avg, step " << t;
        EXPECT_EQ(v.to_doubles(), ref[k].v) << name << " exp_avg_sq, step " << t;
      } else {
        const double gmax = 11.0 / 8;  // |g| ≤ 11·2^-3
        EXPECT_TRUE(all_close(m, ref[k].m, 0, 3 * kU32 * gmax)) << name << " exp_avg, step " << t;
        EXPECT_TRUE(all_close(v, ref[k].v, 0, 3 * kU32 * gmax * gmax)) << name << " exp_avg_sq, step " << t;
      }
    }
  }
}

TEST(AdamW, MatchesDoubleReferenceFp32State) { check_three_steps(DType::f32); }
TEST(AdamW, MatchesDoubleReferenceBf16StateRoundedEachStep) { check_three_steps(DType::bf16); }

TEST(AdamW, FirstStepByHand) {
  // t = 1: m̂ = g, v̂ = g², so p -= lr · g / (|g| + eps). p = 1, g = 0.5, lr = 0.1, no decay: 0.9 up
  // to the fp32 rounding of the stored moments (m = 0.05f, v = 0.0125f give p ≈ 0.8999999993), which
  // rounds to 0.9f (the neighbouring floats are 2.4e-8 below and 3.6e-8 above).
  OptimizerConfig cfg;
  cfg.weight_decay = 0;
  std::vector<Param> params{param("w", {1.0})};
  AdamW opt(params, cfg);
  set_grad(params[0], {0.5});
  opt.clip_and_step(0.1, opt.grad_norm());
  EXPECT_EQ(params[0].var.value().item(), double(0.9f));
  EXPECT_EQ(opt.exp_avg("w").item(), double(0.05f));       // 0.1 · 0.5
  EXPECT_EQ(opt.exp_avg_sq("w").item(), double(0.0125f));  // 0.05 · 0.25
}

TEST(AdamW, WeightDecayOnlyWhereAsked) {
  // A zero gradient leaves m = v = 0 and the Adam term 0 / (0 + eps) = 0: only the decay moves p.
  // p = 2, lr = 0.1, wd = 0.1: 2 · (1 - 0.01) = 1.98 (rounded to fp32); without decay p stays 2.
  OptimizerConfig cfg;
  std::vector<Param> params{param("w", {2.0}), param("bias", {2.0}, /*decay=*/false)};
  AdamW opt(params, cfg);
  set_grad(params[0], {0.0});
  set_grad(params[1], {0.0});
  opt.clip_and_step(0.1, opt.grad_norm());
  EXPECT_EQ(params[0].var.value().item(), double(1.98f));
  EXPECT_EQ(params[1].var.value().item(), 2.0);
}

TEST(AdamW, ParamsWithoutGradientAreSkipped) {
  OptimizerConfig cfg;
  std::vector<Param> params{param("a", {1.0, 2.0}), param("b", {3.0, 4.0})};
  AdamW opt(params, cfg);
  set_grad(params[0], {0.5, -0.5});
  opt.clip_and_step(0.1, opt.grad_norm());
  EXPECT_EQ(params[1].var.value().to_doubles(), (std::vector<double>{3.0, 4.0}));  // no decay either
  EXPECT_EQ(opt.exp_avg("b").to_doubles(), (std::vector<double>{0.0, 0.0}));
  EXPECT_EQ(opt.exp_avg_sq("b").to_doubles(), (std::vector<double>{0.0, 0.0}));
  EXPECT_NE(params[0].var.value().to_doubles(), (std::vector<double>{1.0, 2.0}));
}

TEST(AdamW, GradNormAndShardedHook) {
  // Replicated grads [3, 4] (sum of squares 25), sharded [12] (144): norm sqrt(169) = 13. A hook
  // standing in for the EP all-reduce sees exactly the sharded 144 and doubles it (a second rank
  // with the same shard): sqrt(25 + 288).
  std::vector<Param> params{param("dense", {0.0, 0.0}), param("experts", {0.0}, true, /*sharded=*/true)};
  set_grad(params[0], {3.0, 4.0});
  set_grad(params[1], {12.0});
  AdamW opt(params, OptimizerConfig{});
  EXPECT_EQ(opt.grad_norm(), 13.0);
  std::vector<double> seen;
  const double norm = opt.grad_norm([&](double s) {
    seen.push_back(s);
    return 2 * s;
  });
  EXPECT_EQ(seen, (std::vector<double>{144.0}));
  EXPECT_EQ(norm, std::sqrt(313.0));

  // With no sharded parameter the hook is still called once (it is a collective), with 0.
  std::vector<Param> dense{param("dense", {0.0})};
  set_grad(dense[0], {2.0});
  AdamW dense_opt(dense, OptimizerConfig{});
  seen.clear();
  EXPECT_EQ(dense_opt.grad_norm([&](double s) {
    seen.push_back(s);
    return s;
  }),
            2.0);
  EXPECT_EQ(seen, (std::vector<double>{0.0}));
}

TEST(AdamW, ClippingScalesGradientsLikeTorch) {
  // norm 13 > grad_clip 1: gradients × 1 / (13 + 1e-6), in place, before the update.
  OptimizerConfig cfg;
  cfg.grad_clip = 1.0;
  std::vector<Param> params{param("dense", {0.0, 0.0}), param("experts", {0.0}, true, true)};
  set_grad(params[0], {3.0, 4.0});
  set_grad(params[1], {12.0});
  AdamW opt(params, cfg);
  const double norm = opt.grad_norm();
  const double scale = 1.0 / (13.0 + 1e-6);
  EXPECT_DOUBLE_EQ(opt.clip_scale(norm), scale);
  opt.clip_and_step(0.1, norm);
  // Each gradient element is rounded to fp32 once after scaling: rtol u.
  EXPECT_TRUE(all_close(params[0].var.grad(), {3 * scale, 4 * scale}, kU32, 0));
  EXPECT_TRUE(all_close(params[1].var.grad(), {12 * scale}, kU32, 0));
  EXPECT_NEAR(opt.grad_norm(), 13.0 * scale, 1e-6);  // the clipped norm is grad_clip (up to the 1e-6)

  // Below the limit, and with clipping off, gradients are left bit-for-bit alone.
  cfg.grad_clip = 100.0;
  std::vector<Param> small{param("w", {0.0, 0.0})};
  set_grad(small[0], {3.0, 4.0});
  AdamW opt2(small, cfg);
  EXPECT_EQ(opt2.clip_scale(5.0), 1.0);
  opt2.clip_and_step(0.1, opt2.grad_norm());
  EXPECT_EQ(small[0].var.grad().to_doubles(), (std::vector<double>{3.0, 4.0}));
  cfg.grad_clip = 0;
  EXPECT_EQ(AdamW(small, cfg).clip_scale(1e30), 1.0);
}

TEST(AdamW, NonFiniteGradientsGiveNonFiniteNorm) {
  std::vector<Param> params{param("w", {0.0, 0.0})};
  AdamW opt(params, OptimizerConfig{});
  set_grad(params[0], {1.0, NAN});
  EXPECT_TRUE(std::isnan(opt.grad_norm()));
  set_grad(params[0], {1.0, INFINITY});
  EXPECT_TRUE(std::isinf(opt.grad_norm()));
  expect_error([&] { opt.clip_and_step(0.1, opt.grad_norm()); }, {"gradient norm is inf", "skipped"});
  EXPECT_EQ(opt.step_count(), 0);
}

TEST(AdamW, GradNormIsTheSameAtAnyThreadCount) {
  // 100003 elements span 13 blocks of the blocked sum; the result must not depend on threads, and
  // matches a plain double sum: the squares are exact in double, and a sum of n non-negative terms in
  // any order is within (n - 1)·2^-53 relative of the exact one, so the norms agree to n·2^-53.
  const Tensor g = testing::random_tensor({100003}, 7);
  std::vector<Param> params{Param{"w", Var(Tensor::zeros({100003}), true), true, false}};
  params[0].var.slot()->accumulate("test", g);
  AdamW opt(params, OptimizerConfig{});
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = opt.grad_norm();
  omp_set_num_threads(std::max(2, threads));
  const double many = opt.grad_norm();
  omp_set_num_threads(threads);
  EXPECT_EQ(one, many);
  double s = 0;
  for (double x : g.to_doubles()) s += x * x;
  EXPECT_NEAR(one, std::sqrt(s), 100003 * 0x1p-53 * std::sqrt(s));
}

TEST(AdamW, LargeTensorUsesTheParallelPathCorrectly) {
  // 40000 elements (above the single-thread cutoff), one step against the reference; the tolerance
  // is the one-step version of check_three_steps's.
  const int64_t n = 40000;
  const Tensor w0 = testing::random_tensor({n}, 11);
  const Tensor g = testing::random_tensor({n}, 12);
  std::vector<Param> params{Param{"w", Var(w0.clone(), true), true, false}};
  params[0].var.slot()->accumulate("test", g);
  OptimizerConfig cfg;
  cfg.grad_clip = 0;
  AdamW opt(params, cfg);
  opt.clip_and_step(0.01, opt.grad_norm());
  RefAdamW ref;
  ref.p = w0.to_doubles();
  ref.m.assign(size_t(n), 0.0);
  ref.v.assign(size_t(n), 0.0);
  ref.step(g.to_doubles(), 0.01, 1, true);
  EXPECT_TRUE(all_close(params[0].var.value(), ref.p, kU32, 4.5 * kU32 * 0.01));
}

TEST(AdamW, KernelGivesTheScalarRuleBitForBit) {
  // The fp32-moment kernel runs vectorized (AVX-512/AVX2 clones, spans in parallel); every lane must
  // give exactly the bits of adamw.h's rule evaluated one element at a time in double with each
  // operation rounded separately (this file: no FMA contraction): with and without clipping, with
  // decay, on a ragged count (vector tails, spans, the parallel path), at 1 and 2 threads.
  const int64_t n = 40000 + 19;
  const Tensor w0 = testing::random_tensor({n}, 31), g0 = testing::random_tensor({n}, 32);
  const Tensor m0 = testing::random_tensor({n}, 33);
  std::vector<double> vs = testing::random_tensor({n}, 34).to_doubles();
  for (double& x : vs) x = x * x * 1e-3;  // second moments are non-negative
  const Tensor v0 = Tensor::from_values(vs, {n});
  kernels::AdamwConstants c;
  c.beta2 = 0.95;
  c.step_size = 1e-3 / (1 - 0.9 * 0.9);
  c.bc2_sqrt = std::sqrt(1 - 0.95 * 0.95);
  c.decay = 1e-3 * 0.1;
  const int before = omp_get_max_threads();
  for (double grad_scale : {1.0, 0.37}) {
    c.grad_scale = grad_scale;
    const size_t count = size_t(n);
    std::vector<float> wr(count), gr(count), mr(count), vr(count);
    for (int64_t i = 0; i < n; ++i) {
      float g = g0.data<float>()[i];
      if (grad_scale != 1.0) g = static_cast<float>(double(g) * grad_scale);
      const double gi = g;
      const float m = static_cast<float>(c.beta1 * double(m0.data<float>()[i]) + (1.0 - c.beta1) * gi);
      const float v = static_cast<float>(c.beta2 * double(v0.data<float>()[i]) + (1.0 - c.beta2) * gi * gi);
      const double denom = std::sqrt(double(v)) / c.bc2_sqrt + c.eps;
      const double p = double(w0.data<float>()[i]) * (1.0 - c.decay);
      wr[size_t(i)] = static_cast<float>(p - c.step_size * double(m) / denom);
      gr[size_t(i)] = g;
      mr[size_t(i)] = m;
      vr[size_t(i)] = v;
    }
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      const Tensor w = w0.clone(), g = g0.clone(), m = m0.clone(), v = v0.clone();
      kernels::adamw_step(w, g, m, v, c);
      const auto same = [&](const Tensor& t, const std::vector<float>& want) {
        return std::memcmp(t.data<float>(), want.data(), want.size() * sizeof(float)) == 0;
      };
      EXPECT_TRUE(same(w, wr)) << "w, grad_scale " << grad_scale << ", threads " << threads;
      EXPECT_TRUE(same(g, gr)) << "g, grad_scale " << grad_scale << ", threads " << threads;
      EXPECT_TRUE(same(m, mr)) << "m, grad_scale " << grad_scale << ", threads " << threads;
      EXPECT_TRUE(same(v, vr)) << "v, grad_scale " << grad_scale << ", threads " << threads;
    }
  }
  omp_set_num_threads(before);
}

TEST(AdamW, StateRoundTripsThroughCheckpointAccessors) {
  // Copying step count and moments into a fresh optimizer (as a checkpoint load does) continues
  // bit-identically.
  auto make = [] { return std::vector<Param>{param("w", {1.0, -1.0, 0.5}), param("b", {0.1}, false)}; };
  OptimizerConfig cfg;
  cfg.state_dtype = DType::bf16;
  std::vector<Param> a = make(), b = make();
  AdamW opt_a(a, cfg);
  for (int t = 1; t <= 2; ++t) {
    set_grad(a[0], grads_at(t, 3));
    set_grad(a[1], grads_at(t, 1));
    opt_a.clip_and_step(0.05, opt_a.grad_norm());
  }
  AdamW opt_b(b, cfg);
  for (size_t k = 0; k < 2; ++k) {
    Tensor w = b[k].var.value();
    w.copy_(a[k].var.value());
    opt_b.exp_avg(a[k].name).copy_(opt_a.exp_avg(a[k].name));
    opt_b.exp_avg_sq(a[k].name).copy_(opt_a.exp_avg_sq(a[k].name));
  }
  opt_b.set_step_count(opt_a.step_count());
  for (auto* ps : {&a, &b}) {
    set_grad((*ps)[0], grads_at(3, 3));
    set_grad((*ps)[1], grads_at(3, 1));
  }
  opt_a.clip_and_step(0.05, opt_a.grad_norm());
  opt_b.clip_and_step(0.05, opt_b.grad_norm());
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(testing::bytes(a[k].var.value()), testing::bytes(b[k].var.value()));
    EXPECT_EQ(testing::bytes(opt_a.exp_avg(a[k].name)), testing::bytes(opt_b.exp_avg(a[k].name)));
  }
  expect_error([&] { opt_a.exp_avg("nope"); }, {"no parameter named \"nope\""});
  expect_error([&] { opt_a.set_step_count(-1); }, {"step count", "-1"});
}

TEST(AdamW, RejectsBadParams) {
  expect_error([] { AdamW({param("w", {1.0}), param("w", {2.0})}, OptimizerConfig{}); }, {"\"w\"", "twice"});
  expect_error(
      [] {
        AdamW({Param{"frozen", Var(Tensor::zeros({2}), false), true, false}}, OptimizerConfig{});
      },
      {"frozen", "does not require a gradient"});
  expect_error(
      [] {
        AdamW({Param{"half", Var(Tensor::zeros({2}, DType::bf16), true), true, false}}, OptimizerConfig{});
      },
      {"half", "fp32"});
}

TEST(OptimizerConfig, ValidateNamesTheKey) {
  auto with = [](auto edit) {
    OptimizerConfig c;
    edit(c);
    return [c] { c.validate(); };
  };
  EXPECT_NO_THROW(OptimizerConfig{}.validate());
  expect_error(with([](OptimizerConfig& c) { c.lr = -1e-3; }), {"optimizer.lr", "-0.001"});
  expect_error(with([](OptimizerConfig& c) { c.lr = INFINITY; }), {"optimizer.lr", "inf"});
  expect_error(with([](OptimizerConfig& c) { c.betas = {0.9, 1.0}; }), {"optimizer.betas", "beta2", "[0, 1)"});
  expect_error(with([](OptimizerConfig& c) { c.betas = {-0.1, 0.9}; }), {"optimizer.betas", "beta1"});
  expect_error(with([](OptimizerConfig& c) { c.eps = 0; }), {"optimizer.eps", "> 0"});
  expect_error(with([](OptimizerConfig& c) { c.weight_decay = -0.1; }), {"optimizer.weight_decay", "-0.1"});
  expect_error(with([](OptimizerConfig& c) { c.grad_clip = -1; }), {"optimizer.grad_clip", "0 = off"});
  expect_error(with([](OptimizerConfig& c) { c.state_dtype = DType::f8e4m3; }),
               {"optimizer.state_dtype", "fp32 or bf16", "fp8e4m3"});
}

}  // namespace
}  // namespace daedalus::train
