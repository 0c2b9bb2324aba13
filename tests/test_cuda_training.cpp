// A whole training step on the GPU against the CPU (the numerical reference): the AdamW kernels bit
// for bit, then one forward + backward + clipped AdamW step of the small test model per recipe.
// Skips with a reason on machines without a CUDA device; scripts/gpu-check runs it on one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/generator.h"
#include "autograd/kernels/adamw.h"
#include "autograd/kernels/elementwise.h"
#include "model/causal_lm.h"
#include "tests/model_testing.h"
#include "tests/testing.h"
#include "train/optimizer.h"

namespace daedalus {
namespace {

using testing::all_close;
using testing::random_tensor;

class CudaTraining : public testing::CudaTest {};

// ---- the AdamW kernels ---------------------------------------------------------------------------

// Both devices evaluate the same double expression with separately rounded operations and round
// each stored value once (round-to-odd for bf16 on both), so the results are bit-identical: 0 tolerance.
TEST_F(CudaTraining, AdamwStepIsBitIdenticalToCpu) {
  for (DType state : {DType::f32, DType::bf16}) {
    for (int64_t n : {int64_t(1), int64_t(993), int64_t(100003)}) {
      Tensor w = random_tensor({n}, 1), g = random_tensor({n}, 2, DType::f32, 1e-3);
      Tensor m = random_tensor({n}, 3, DType::f32, 1e-4).to(state);
      const Tensor r = random_tensor({n}, 4, DType::f32, 1e-3);
      Tensor v = kernels::mul(r, r).to(state);  // second moments are non-negative
      Tensor wg = w.to(gpu), gg = g.to(gpu), mg = m.to(gpu), vg = v.to(gpu);
      kernels::AdamwConstants c;
      c.beta1 = 0.9;
      c.beta2 = 0.95;
      c.eps = 1e-8;
      for (int step = 1; step <= 3; ++step) {
        c.step_size = 1e-3 / (1.0 - std::pow(c.beta1, step));
        c.bc2_sqrt = std::sqrt(1.0 - std::pow(c.beta2, step));
        c.grad_scale = step == 2 ? 0.37 : 1.0;  // clipping on one step: g is scaled in place
        c.decay = 1e-3 * 0.1;
        kernels::adamw_step(w, g, m, v, c);
        kernels::adamw_step(wg, gg, mg, vg, c);
      }
      const std::string what = fmt::format("{} state, n = {}", dtype_name(state), n);
      EXPECT_TRUE(all_close(wg.to(Device::cpu()), w, 0, 0)) << what;
      EXPECT_TRUE(all_close(gg.to(Device::cpu()), g, 0, 0)) << what;
      EXPECT_TRUE(all_close(mg.to(Device::cpu()), m, 0, 0)) << what;
      EXPECT_TRUE(all_close(vg.to(Device::cpu()), v, 0, 0)) << what;
    }
  }
}

// Only the order of the double additions inside each 8192-element block differs: relative 1e-13
// is a thousand times the worst case of n * 2^-53 for these sizes.
TEST_F(CudaTraining, SumSquaresMatchesCpu) {
  std::vector<Tensor> xs, xg;
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(8191), int64_t(8192), int64_t(8193), int64_t(300007)}) {
    xs.push_back(random_tensor({n}, uint64_t(n) + 11));
    xg.push_back(xs.back().to(gpu));
  }
  const std::vector<double> cpu = kernels::sum_squares(xs), dev = kernels::sum_squares(xg);
  ASSERT_EQ(cpu.size(), dev.size());
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(dev[i], cpu[i], 1e-13 * cpu[i]) << "tensor " << i;
  // Run to run: the same bits (fixed trees, no atomics).
  EXPECT_EQ(kernels::sum_squares(xg), dev);
}

// The optimizer class on GPU parameters against CPU ones, with clipping active: the gradient norms
// agree to double rounding, so the clip factor may differ in its last bit and a scaled gradient by
// one fp32 ulp; the parameters then agree to a few fp32 ulps (rtol 1e-6).
TEST_F(CudaTraining, AdamwOptimizerMatchesCpu) {
  for (DType state : {DType::f32, DType::bf16}) {
    const Shape shapes[] = {{65, 129}, {993}, {7, 3, 5}};
    std::vector<train::Param> cpu_params, gpu_params;
    for (size_t i = 0; i < std::size(shapes); ++i) {
      const Tensor w = random_tensor(shapes[i], 20 + i);
      cpu_params.push_back({fmt::format("p{}", i), Var(w.clone(), true), i != 1, false});
      gpu_params.push_back({fmt::format("p{}", i), Var(w.to(gpu), true), i != 1, false});
    }
    train::OptimizerConfig oc;
    oc.state_dtype = state;
    oc.grad_clip = 0.5;  // the random gradients' norm is far above: clipping scales every step
    train::AdamW cpu(cpu_params, oc), dev(gpu_params, oc);
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0; i < cpu_params.size(); ++i) {
        const Tensor g = random_tensor(shapes[i], 100 + 10 * step + i);
        cpu_params[i].var.slot()->accumulate("test", g.clone());
        gpu_params[i].var.slot()->accumulate("test", g.to(gpu));
      }
      const double norm_cpu = cpu.grad_norm(), norm_gpu = dev.grad_norm();
      EXPECT_NEAR(norm_gpu, norm_cpu, 1e-13 * norm_cpu);
      cpu.clip_and_step(1e-3, norm_cpu);
      dev.clip_and_step(1e-3, norm_gpu);
      cpu.zero_grad();
      dev.zero_grad();
    }
    for (size_t i = 0; i < cpu_params.size(); ++i) {
      EXPECT_TRUE(all_close(gpu_params[i].var.value().to(Device::cpu()), cpu_params[i].var.value(), 1e-6, 1e-9))
          << cpu_params[i].name << ", " << dtype_name(state) << " state";
      EXPECT_TRUE(all_close(dev.exp_avg(cpu_params[i].name).to(Device::cpu()).to(DType::f32),
                            cpu.exp_avg(cpu_params[i].name).to(DType::f32), state == DType::bf16 ? 0x1p-7 : 1e-6,
                            1e-12))
          << cpu_params[i].name;
    }
  }
}

// ---- one training step of the small model ----------------------------------------------------------

struct StepResult {
  double loss = 0, grad_norm = 0;
  std::vector<std::string> names;
  std::vector<Tensor> grads, before, after;  // host copies, per trainable parameter
};

StepResult one_step(const std::string& recipe, Device device, const Tensor& inputs, const Tensor& targets) {
  model::LmOptions mo;
  mo.config = testing::small_model_config();
  mo.recipes = testing::recipes_of(recipe);
  mo.seed = 7;
  mo.device = device;
  model::CausalLM lm(mo);
  std::vector<train::Param> params;
  StepResult r;
  for (const model::Parameter& p : lm.parameters().all()) {
    if (!p.trainable) continue;
    params.push_back({p.name, p.var, p.weight_decay, false});
    r.names.push_back(p.name);
    r.before.push_back(p.var.value().to(Device::cpu()));
  }
  train::OptimizerConfig oc;
  oc.lr = 1e-3;
  oc.grad_clip = 1.0;
  train::AdamW opt(params, oc);
  const model::LmOutput out = lm.forward(inputs.to(device), targets.to(device));
  backward(out.loss);
  r.loss = out.loss.value().item();
  r.grad_norm = opt.grad_norm();
  for (const train::Param& p : params)
    r.grads.push_back(p.var.grad().defined() ? p.var.grad().to(Device::cpu()) : Tensor::zeros(p.var.shape()));
  lm.update_router_biases();
  opt.clip_and_step(oc.lr, r.grad_norm);
  for (const train::Param& p : params) r.after.push_back(p.var.value().to(Device::cpu()));
  return r;
}

// Tolerances per recipe, relative to the scale of each quantity:
//   fp32: the devices differ in GEMM and attention summation order only (~1e-6 relative);
//   bf16: the same, but a GEMM output that lands near a bf16 rounding boundary can round one bf16
//         ulp (2^-8) apart and carry through the layers;
//   fp8_block: as bf16, plus an amax that differs in its last bit moves a block's scale.
struct Tolerance {
  double loss;  // absolute, nats
  double grad;  // per parameter: max |g_gpu - g_cpu| <= grad * max |g_cpu|
};

void expect_step_matches(const std::string& recipe, const Tolerance& tol) {
  const model::ModelConfig c = testing::small_model_config();
  Generator gen(3);
  std::vector<int64_t> tokens(2 * 17);
  for (int64_t& t : tokens) t = int64_t(gen.next_u64() % uint64_t(c.vocab_size));
  const Tensor all = Tensor::from_vector(tokens, {2, 17});
  const Tensor inputs = all.slice(1, 0, 16).contiguous(), targets = all.slice(1, 1, 17).contiguous();

  const StepResult cpu = one_step(recipe, Device::cpu(), inputs, targets);
  const StepResult gpu = one_step(recipe, Device::cuda(0), inputs, targets);
  ASSERT_EQ(cpu.names, gpu.names);
  // Initialization happens on the host and is copied: the same bits on both devices.
  for (size_t i = 0; i < cpu.names.size(); ++i)
    ASSERT_TRUE(all_close(gpu.before[i], cpu.before[i], 0, 0)) << cpu.names[i];

  EXPECT_NEAR(gpu.loss, cpu.loss, tol.loss) << recipe;
  EXPECT_NEAR(gpu.grad_norm, cpu.grad_norm, tol.grad * cpu.grad_norm) << recipe;
  for (size_t i = 0; i < cpu.names.size(); ++i) {
    const std::vector<double> gc = cpu.grads[i].to_doubles(), gg = gpu.grads[i].to_doubles();
    double gmax = 0;
    for (double v : gc) gmax = std::max(gmax, std::fabs(v));
    const double gtol = tol.grad * gmax + 1e-12;
    EXPECT_TRUE(all_close(gpu.grads[i], cpu.grads[i], 0, gtol)) << recipe << ": gradient of " << cpu.names[i];
    // The first AdamW step moves each weight by lr * g / (|g| + eps) (bias-corrected), about
    // lr * sign(g): where |g| is well above the gradient tolerance both devices take the same
    // step (to fp32 rounding of the weight); where it is not, the signs may differ (at most 2 lr).
    const std::vector<double> wc = cpu.after[i].to_doubles(), wg = gpu.after[i].to_doubles();
    const double lr = 1e-3;
    int64_t bad = 0;
    for (size_t j = 0; j < wc.size(); ++j) {
      const bool clear = std::fabs(gc[j]) > 10 * gtol;
      const double allowed = clear ? 1e-6 * (1 + std::fabs(wc[j])) + 1e-3 * lr : 2 * lr + 1e-6;
      if (std::fabs(wg[j] - wc[j]) > allowed) ++bad;
    }
    EXPECT_EQ(bad, 0) << recipe << ": updated " << cpu.names[i] << " differs beyond tolerance in " << bad << " of "
                      << wc.size() << " elements";
  }
}

TEST_F(CudaTraining, OneStepFp32MatchesCpu) { expect_step_matches("fp32", {2e-5, 1e-4}); }

TEST_F(CudaTraining, OneStepBf16MatchesCpu) { expect_step_matches("bf16", {5e-3, 3e-2}); }

TEST_F(CudaTraining, OneStepFp8BlockMatchesCpu) { expect_step_matches("fp8_block", {1e-2, 6e-2}); }

}  // namespace
}  // namespace daedalus
