// Model test helpers.
#include "tests/model_testing.h"

#include <cmath>

#include "autograd/generator.h"
#include "autograd/tape.h"

namespace daedalus::testing {

model::ModelConfig small_model_config() {
  model::ModelConfig c;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.moe_intermediate_size = 8;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
  c.num_attention_heads = 2;
  c.q_lora_rank = 12;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 6;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 5;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 3;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 1.5;
  c.max_position_embeddings = 64;
  c.initializer_range = 0.2;
  c.num_nextn_predict_layers = 1;
  return c;
}

model::ModelConfig small_yarn_config() {
  model::ModelConfig c = small_model_config();
  c.qk_rope_head_dim = 8;
  model::RopeScaling y;
  y.factor = 4;
  y.original_max_position_embeddings = 16;
  y.beta_fast = 8;
  y.beta_slow = 2;
  y.mscale = 0.9;
  y.mscale_all_dim = 0.6;
  c.rope_scaling = y;
  return c;
}

RopeReference rope_reference(const model::ModelConfig& c) {
  const double d = double(c.qk_rope_head_dim), base = c.rope_theta;
  RopeReference r;
  r.softmax_scale = std::pow(double(c.qk_nope_head_dim + c.qk_rope_head_dim), -0.5);
  for (int64_t j = 0; 2 * j < c.qk_rope_head_dim; ++j) r.inv_freq.push_back(1.0 / std::pow(base, 2.0 * double(j) / d));
  if (!c.rope_scaling) return r;
  const model::RopeScaling& y = *c.rope_scaling;
  const auto get_mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
  // find_correction_dim(num_rotations): the dim whose wavelength fits num_rotations times into L.
  const auto correction = [&](double rotations) {
    const double two_pi = 2 * std::acos(-1.0);
    return d * std::log(double(y.original_max_position_embeddings) / (rotations * two_pi)) / (2 * std::log(base));
  };
  double low = correction(y.beta_fast == 0 ? 32 : y.beta_fast), high = correction(y.beta_slow == 0 ? 1 : y.beta_slow);
  if (y.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = low < 0 ? 0 : low;
  high = high > d - 1 ? d - 1 : high;
  if (low == high) high += 0.001;
  for (size_t j = 0; j < r.inv_freq.size(); ++j) {
    const double linear = (double(j) - low) / (high - low);
    const double ramp = linear < 0 ? 0 : (linear > 1 ? 1 : linear);
    const double extrapolation_factor = 1 - ramp;
    const double pos_freq = std::pow(base, 2.0 * double(j) / d);
    r.inv_freq[j] = 1.0 / (y.factor * pos_freq) * (1 - extrapolation_factor) + 1.0 / pos_freq * extrapolation_factor;
  }
  if (y.attention_factor) {
    r.amplitude = *y.attention_factor;
  } else if (y.mscale != 0 && y.mscale_all_dim != 0) {
    r.amplitude = get_mscale(y.factor, y.mscale) / get_mscale(y.factor, y.mscale_all_dim);
  } else {
    r.amplitude = get_mscale(y.factor, 1);
  }
  if (y.mscale_all_dim != 0) r.softmax_scale *= get_mscale(y.factor, y.mscale_all_dim) * get_mscale(y.factor, y.mscale_all_dim);
  return r;
}

fp8::RecipeTable recipes_of(const std::string& name) {
  fp8::Recipe r;
  r.kind = fp8::parse_recipe(name);
  return fp8::RecipeTable(r);
}

::testing::AssertionResult param_gradcheck(const std::function<Var()>& loss,
                                           const std::vector<model::Parameter>& params,
                                           const ParamGradcheckOptions& o) {
  for (model::Parameter p : params) p.var.zero_grad();  // a copy of the Var shares its gradient slot
  backward(loss());
  Generator gen(o.seed);
  int checked = 0;
  for (const model::Parameter& p : params) {
    if (!p.trainable) continue;
    const Tensor& value = p.var.value();
    const Tensor grad = p.var.grad().defined() ? p.var.grad() : Tensor::zeros(value.shape());
    const std::vector<double> g = grad.to_doubles();
    float* data = value.data<float>();  // parameters are contiguous fp32 on the CPU
    for (int s = 0; s < o.samples; ++s) {
      const int64_t j = int64_t(gen.next_u64() % uint64_t(value.numel()));
      const float saved = data[j];
      const double h = o.step * std::max(1.0, std::fabs(double(saved)));
      double f[2];
      for (int side = 0; side < 2; ++side) {
        data[j] = float(double(saved) + (side == 0 ? h : -h));
        NoGradGuard no_grad;
        f[side] = loss().value().item();
      }
      data[j] = saved;
      const double fd = (f[0] - f[1]) / (2 * h);
      const double analytic = g[size_t(j)];
      if (std::fabs(analytic - fd) > o.atol + o.rtol * std::fabs(fd))
        return ::testing::AssertionFailure() << p.name << "[" << j << "]: tape " << analytic << " vs finite difference "
                                             << fd << " (|diff| " << std::fabs(analytic - fd) << ")";
      ++checked;
    }
  }
  return ::testing::AssertionSuccess() << checked << " coordinates";
}

LinearRun run_linear(const Tensor& x, const Tensor& w, const Tensor& g, const fp8::Recipe& recipe,
                     fp8::LinearState* state) {
  Var xv(x, true), wv(w, true);
  const Var y = fp8::linear(xv, wv, recipe, state);
  current_tape().backward(y, g);
  return {y.value(), xv.grad(), wv.grad()};
}

}  // namespace daedalus::testing
