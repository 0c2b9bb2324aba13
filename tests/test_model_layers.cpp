// MLA and DeepSeekMoE layers against naive double-precision references written from the
// DeepSeek-V3 equations, and their gradients against finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/ops/arithmetic.h"
#include "model/mla.h"
#include "model/moe.h"
#include "tests/model_testing.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using model::ModelConfig;
using Mat = std::vector<double>;  // row-major

struct Layers {
  model::ParameterStore store;
  fp8::RecipeTable recipes;
  explicit Layers(const std::string& recipe = "fp32", double init = 0.2)
      : store(7, init), recipes(testing::recipes_of(recipe)) {}
  model::BuildContext ctx() { return {&store, &recipes}; }
  Mat param(const std::string& name) const { return store.get(name).var.value().to_doubles(); }
};

// y[r] = W [out, in] · x[r] for rows of x [rows, in].
Mat matvec_rows(const Mat& x, int64_t rows, int64_t in, const Mat& w, int64_t out, int64_t w_offset = 0) {
  Mat y(size_t(rows * out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += w[size_t(w_offset + o * in + i)] * x[size_t(r * in + i)];
      y[size_t(r * out + o)] = s;
    }
  return y;
}

Mat rms_rows(const Mat& x, int64_t rows, int64_t d, const Mat& g, double eps) {
  Mat y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += x[size_t(r * d + i)] * x[size_t(r * d + i)];
    const double inv = 1.0 / std::sqrt(ss / double(d) + eps);
    for (int64_t i = 0; i < d; ++i) y[size_t(r * d + i)] = x[size_t(r * d + i)] * inv * g[size_t(i)];
  }
  return y;
}

// Interleaved RoPE of v[0..n) at position pos (frequencies and amplitude of testing::rope_reference).
void rope_interleaved(double* v, int64_t n, int64_t pos, const testing::RopeReference& r) {
  for (int64_t j = 0; j < n / 2; ++j) {
    const double angle = double(pos) * r.inv_freq[size_t(j)];
    const double a = v[2 * j], b = v[2 * j + 1];
    v[2 * j] = r.amplitude * (a * std::cos(angle) - b * std::sin(angle));
    v[2 * j + 1] = r.amplitude * (a * std::sin(angle) + b * std::cos(angle));
  }
}

// MLA forward in double, straight from the equations in model/mla.h.
Mat mla_reference(const Layers& l, const ModelConfig& c, const std::string& m, const Mat& x, int64_t b, int64_t t) {
  const int64_t d = c.hidden_size, h = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim,
                vd = c.v_head_dim, qk = nope + rope, n = b * t;
  Mat q;
  if (c.q_lora_rank) {
    const int64_t r = *c.q_lora_rank;
    const Mat qa = rms_rows(matvec_rows(x, n, d, l.param(m + ".q_a_proj.weight"), r), n, r,
                            l.param(m + ".q_a_layernorm.weight"), 1e-6);
    q = matvec_rows(qa, n, r, l.param(m + ".q_b_proj.weight"), h * qk);
  } else {
    q = matvec_rows(x, n, d, l.param(m + ".q_proj.weight"), h * qk);
  }
  const int64_t kva_dim = c.kv_lora_rank + rope;
  const testing::RopeReference rr = testing::rope_reference(c);
  const Mat kva = matvec_rows(x, n, d, l.param(m + ".kv_a_proj_with_mqa.weight"), kva_dim);
  Mat ckv(size_t(n * c.kv_lora_rank)), kpe(size_t(n * rope));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < c.kv_lora_rank; ++i) ckv[size_t(r * c.kv_lora_rank + i)] = kva[size_t(r * kva_dim + i)];
    for (int64_t i = 0; i < rope; ++i) kpe[size_t(r * rope + i)] = kva[size_t(r * kva_dim + c.kv_lora_rank + i)];
    rope_interleaved(&kpe[size_t(r * rope)], rope, r % t, rr);
    for (int64_t hh = 0; hh < h; ++hh)
      rope_interleaved(&q[size_t(r * h * qk + hh * qk + nope)], rope, r % t, rr);
  }
  const Mat kv = matvec_rows(rms_rows(ckv, n, c.kv_lora_rank, l.param(m + ".kv_a_layernorm.weight"), 1e-6), n,
                             c.kv_lora_rank, l.param(m + ".kv_b_proj.weight"), h * (nope + vd));
  Mat attn(size_t(n * h * vd), 0.0);
  const double scale = rr.softmax_scale;
  for (int64_t bb = 0; bb < b; ++bb)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t i = 0; i < t; ++i) {
        std::vector<double> s(size_t(i + 1));
        double mx = -1e300;
        const int64_t qi = bb * t + i;
        for (int64_t j = 0; j <= i; ++j) {
          const int64_t kj = bb * t + j;
          double dot = 0;
          for (int64_t e = 0; e < nope; ++e)
            dot += q[size_t(qi * h * qk + hh * qk + e)] * kv[size_t(kj * h * (nope + vd) + hh * (nope + vd) + e)];
          for (int64_t e = 0; e < rope; ++e)
            dot += q[size_t(qi * h * qk + hh * qk + nope + e)] * kpe[size_t(kj * rope + e)];
          s[size_t(j)] = dot * scale;
          mx = std::max(mx, s[size_t(j)]);
        }
        double z = 0;
        for (double& v : s) z += (v = std::exp(v - mx));
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t e = 0; e < vd; ++e)
            attn[size_t(qi * h * vd + hh * vd + e)] +=
                s[size_t(j)] / z * kv[size_t((bb * t + j) * h * (nope + vd) + hh * (nope + vd) + nope + e)];
      }
  return matvec_rows(attn, n, h * vd, l.param(m + ".o_proj.weight"), d);
}

double max_abs(const Mat& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::fabs(e));
  return m;
}

void expect_close(const Mat& got, const Mat& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  const double tol = rel * std::max(1.0, max_abs(want));
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], tol) << "element " << i;
}

TEST(ModelMla, MatchesTheDoublePrecisionEquationsWithAndWithoutQLora) {
  for (const bool q_lora : {true, false}) {
    SCOPED_TRACE(q_lora ? "q_lora" : "q_proj");
    ModelConfig c = testing::small_model_config();
    if (!q_lora) c.q_lora_rank.reset();
    Layers l;
    model::Mla mla(l.ctx(), c, "model.layers.0.self_attn");
    EXPECT_EQ(l.store.find("model.layers.0.self_attn.q_proj.weight") != nullptr, !q_lora);
    EXPECT_EQ(l.store.find("model.layers.0.self_attn.q_a_proj.weight") != nullptr, q_lora);
    const int64_t b = 2, t = 7;
    const Tensor x = testing::random_tensor({b, t, c.hidden_size}, 11);
    const Tensor y = mla.forward(Var(x), Tensor::arange(t)).value();
    ASSERT_EQ(y.shape(), (Shape{b, t, c.hidden_size}));
    // fp32 forward vs double: a few fp32 roundings per reduction of <= 16 terms, ~1e-6 relative.
    expect_close(y.to_doubles(), mla_reference(l, c, "model.layers.0.self_attn", x.to_doubles(), b, t), 2e-5);
  }
}

TEST(ModelMla, YarnMatchesTheDoublePrecisionEquations) {
  // model.rope_scaling yarn: the rope dims rotate with the blended frequencies times the amplitude,
  // and every score is scaled by mscale(s, mscale_all_dim)^2 / sqrt(qk). Positions past the
  // original context (16) as in long-context use; tolerance as above.
  const ModelConfig c = testing::small_yarn_config();
  Layers l;
  model::Mla mla(l.ctx(), c, "model.layers.0.self_attn");
  const int64_t b = 1, t = 40;
  const Tensor x = testing::random_tensor({b, t, c.hidden_size}, 15);
  const Tensor y = mla.forward(Var(x), Tensor::arange(t)).value();
  expect_close(y.to_doubles(), mla_reference(l, c, "model.layers.0.self_attn", x.to_doubles(), b, t), 2e-5);
  // The same weights without YaRN compute something else (the test can fail).
  ModelConfig plain = c;
  plain.rope_scaling.reset();
  const Mat other = mla_reference(l, plain, "model.layers.0.self_attn", x.to_doubles(), b, t);
  EXPECT_GT(max_abs([&] {
              Mat diff = y.to_doubles();
              for (size_t i = 0; i < diff.size(); ++i) diff[i] -= other[i];
              return diff;
            }()),
            1e-3);
}

TEST(ModelMla, IsCausal) {
  const ModelConfig c = testing::small_model_config();
  Layers l;
  model::Mla mla(l.ctx(), c, "model.layers.0.self_attn");
  Tensor x = testing::random_tensor({1, 6, c.hidden_size}, 12);
  const std::vector<double> before = mla.forward(Var(x), Tensor::arange(6)).value().to_doubles();
  x.select(1, 4).fill_(3.0);  // change token 4: outputs 0..3 must not move
  const std::vector<double> after = mla.forward(Var(x), Tensor::arange(6)).value().to_doubles();
  const size_t d = size_t(c.hidden_size);
  for (size_t i = 0; i < 4 * d; ++i) ASSERT_EQ(before[i], after[i]);
  EXPECT_NE(before[4 * d], after[4 * d]);
}

TEST(ModelMla, GradientsMatchFiniteDifferences) {
  for (const ModelConfig& c : {testing::small_model_config(), testing::small_yarn_config()}) {
    SCOPED_TRACE(c.rope_scaling ? "yarn" : "plain rope");
    Layers l;
    model::Mla mla(l.ctx(), c, "model.layers.0.self_attn");
    const Tensor x = testing::random_tensor({2, 5, c.hidden_size}, 13);
    const Tensor w = testing::random_tensor({2, 5, c.hidden_size}, 14);
    const Tensor pos = Tensor::from_vector<int64_t>({3, 9, 17, 30, 41}, {5});  // past the original 16 too
    const auto loss = [&] { return ops::sum_all(ops::mul(mla.forward(Var(x), pos), Var(w))); };
    EXPECT_TRUE(testing::param_gradcheck(loss, l.store.all()));
  }
}

// ---- MoE -----------------------------------------------------------------------------------

// SwiGLU expert e of a stacked tensor triple (or a plain MLP when e < 0) on one row.
std::vector<double> swiglu_row(const Layers& l, const std::string& prefix, int64_t e, const double* x, int64_t d,
                               int64_t f) {
  const Mat wg = l.param(prefix + ".gate_proj.weight"), wu = l.param(prefix + ".up_proj.weight"),
            wd = l.param(prefix + ".down_proj.weight");
  const int64_t base_in = std::max<int64_t>(e, 0) * f * d, base_out = std::max<int64_t>(e, 0) * d * f;
  std::vector<double> h(static_cast<size_t>(f)), y(static_cast<size_t>(d), 0.0);
  for (int64_t j = 0; j < f; ++j) {
    double g = 0, u = 0;
    for (int64_t i = 0; i < d; ++i) {
      g += wg[size_t(base_in + j * d + i)] * x[i];
      u += wu[size_t(base_in + j * d + i)] * x[i];
    }
    h[size_t(j)] = g / (1 + std::exp(-g)) * u;
  }
  for (int64_t o = 0; o < d; ++o)
    for (int64_t j = 0; j < f; ++j) y[size_t(o)] += wd[size_t(base_out + o * f + j)] * h[size_t(j)];
  return y;
}

TEST(ModelMoe, MatchesAPerTokenLoopOverTheSelectedExperts) {
  for (const std::string recipe : {"fp32", "bf16"}) {
    SCOPED_TRACE(recipe);
    const ModelConfig c = testing::small_model_config();
    Layers l(recipe, 0.3);
    model::Moe moe(l.ctx(), c, {}, "model.layers.1.mlp", {});
    const int64_t b = 2, t = 9, d = c.hidden_size, k = c.num_experts_per_tok, f = c.moe_intermediate_size;
    const Tensor x = testing::random_tensor({b, t, d}, 21);
    const std::vector<double> y = moe.forward(Var(x), nullptr).value().to_doubles();
    const std::vector<int64_t> ids = moe.router().last_selection().to_vector<int64_t>();
    const Mat xs = x.to_doubles(), wg = l.param("model.layers.1.mlp.gate.weight");
    Mat want(size_t(b * t * d), 0.0);
    for (int64_t r = 0; r < b * t; ++r) {
      std::vector<double> s(size_t(c.n_routed_experts));
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        double z = 0;
        for (int64_t i = 0; i < d; ++i) z += wg[size_t(e * d + i)] * xs[size_t(r * d + i)];
        s[size_t(e)] = 1 / (1 + std::exp(-z));
      }
      double norm = 0;
      for (int64_t j = 0; j < k; ++j) norm += s[size_t(ids[size_t(r * k + j)])];
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = ids[size_t(r * k + j)];
        const double gate = s[size_t(e)] / norm * c.routed_scaling_factor;
        const std::vector<double> ye = swiglu_row(l, "model.layers.1.mlp.experts", e, &xs[size_t(r * d)], d, f);
        for (int64_t o = 0; o < d; ++o) want[size_t(r * d + o)] += gate * ye[size_t(o)];
      }
      const std::vector<double> ys = swiglu_row(l, "model.layers.1.mlp.shared_experts", -1, &xs[size_t(r * d)], d, f);
      for (int64_t o = 0; o < d; ++o) want[size_t(r * d + o)] += ys[size_t(o)];
    }
    // fp32: ~1e-6 relative. bf16: every GEMM operand rounded to 8 mantissa bits (2^-9 relative
    // each), through two chained projections: a few 1e-3.
    expect_close(y, want, recipe == "fp32" ? 2e-5 : 2e-2);
    // Load statistics count every (token, slot) pair.
    int64_t total = 0;
    for (int64_t v : moe.load().tokens) total += v;
    EXPECT_EQ(total, b * t * k);
  }
}

TEST(ModelMoe, GradientsMatchFiniteDifferencesWithTheRoutingHeldFixed) {
  const ModelConfig c = testing::small_model_config();
  Layers l("fp32", 0.3);
  model::MoeConfig moe_config;
  moe_config.seq_aux_loss_alpha = 0.05;  // the aux loss's gradient reaches the router weight too
  model::Moe moe(l.ctx(), c, moe_config, "model.layers.1.mlp", {});
  const Tensor x = testing::random_tensor({2, 4, c.hidden_size}, 22);
  const Tensor w = testing::random_tensor({2, 4, c.hidden_size}, 23);
  const auto loss = [&] {
    std::vector<Var> aux;
    Var y = ops::sum_all(ops::mul(moe.forward(Var(x), &aux), Var(w)));
    for (const Var& a : aux) y = ops::add(y, a);
    return y;
  };
  loss();
  moe.router().fix_selection(moe.router().last_selection());
  EXPECT_TRUE(testing::param_gradcheck(loss, l.store.all()));
}

TEST(ModelMoe, UnusedExpertsGetZeroGradientAndCapacityDropsRows) {
  ModelConfig c = testing::small_model_config();
  c.n_group = 1;
  c.topk_group = 1;
  c.num_experts_per_tok = 1;
  Layers l("fp32", 0.3);
  model::MoeConfig moe_config;
  moe_config.capacity_factor = 0.5;  // capacity = ceil(0.5 · 6 · 1 / 8) = 1 row per expert
  model::Moe moe(l.ctx(), c, moe_config, "model.layers.1.mlp", {});
  const Tensor x = testing::random_tensor({1, 6, c.hidden_size}, 24);
  backward(ops::sum_all(moe.forward(Var(x), nullptr)));
  const std::vector<int64_t> load = moe.load().tokens;
  const Tensor g = l.store.get("model.layers.1.mlp.experts.up_proj.weight").var.grad();
  int64_t kept = 0;
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    kept += std::min<int64_t>(load[size_t(e)], 1);
    const double norm = max_abs(g.select(0, e).to_doubles());
    if (load[size_t(e)] == 0) {
      EXPECT_EQ(norm, 0.0) << "expert " << e;
    } else {
      EXPECT_GT(norm, 0.0) << "expert " << e;
    }
  }
  EXPECT_EQ(moe.load().dropped, 6 - kept);
}

}  // namespace
}  // namespace daedalus
