// MLA at generation time: the latent cache with kv_b_proj absorbed (DeepSeek-V3's inference code,
// attn_impl = "absorb"), and the expanded per-head cache of a plain MHA (attn_impl = "naive").
//
// Per head h, with W = kv_b_proj.weight viewed [H, nope + v, kv_lora] = [W_UK ; W_UV] and the
// cached latents c_s = kv_a_layernorm(c_kv)_s [kv_lora], rotated shared keys k_pe_s [rope]:
//   score(t, s) = q_nope_t · k_nope_s + q_pe_t · k_pe_s,      k_nope_s = W_UK c_s
//               = (q_nope_t W_UK) · c_s + q_pe_t · k_pe_s      q_abs_t = q_nope_t W_UK   [kv_lora]
//   out_t       = Σ_s p(t, s) v_s,                            v_s = W_UV c_s
//               = W_UV (Σ_s p(t, s) c_s)                       attention over c, then W_UV
// so the cache holds kv_lora + rope numbers per token instead of H · (nope + rope + v).
// Both are the same sums as forward() reassociated: in fp32 they agree to rounding (~1e-6 relative).
#include <algorithm>
#include <cmath>

#include "autograd/ops/norm.h"
#include "autograd/ops/rope.h"
#include "autograd/ops/shape.h"
#include "model/mla.h"

namespace daedalus::model {

namespace {

constexpr double kLatentNormEps = 1e-6;  // as in mla.cpp

// Contiguous fp32 host copy of a Var's value.
Tensor host_f32(const Var& v) { return v.value().to(Device::cpu()).to(DType::f32).contiguous(); }

// Softmax over scores[0, n) in place (fp32 values, double sum).
void softmax_inplace(float* scores, int64_t n) {
  const float top = *std::max_element(scores, scores + n);
  double z = 0;
  for (int64_t s = 0; s < n; ++s) z += scores[s] = std::exp(scores[s] - top);
  const float inv = float(1.0 / z);
  for (int64_t s = 0; s < n; ++s) scores[s] *= inv;
}

}  // namespace

Var Mla::decode(const Var& x, MlaCache& cache, CacheKind kind) {
  const ModelConfig& c = config_;
  DAEDALUS_CHECK(x.value().dim() == 3 && x.value().size(0) == 1 && x.value().size(2) == c.hidden_size,
                 "{}: decode input {}: expected [1, seq, {}]", module_, shape_str(x.shape()), c.hidden_size);
  const int64_t t = x.value().size(1), h = c.num_attention_heads, r = c.kv_lora_rank;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim, qk = nope + rope;
  const int64_t start = cache.length, total = start + t;
  DAEDALUS_CHECK(total <= c.max_position_embeddings,
                 "{}: decoding to position {} exceeds model.max_position_embeddings = {}", module_, total,
                 c.max_position_embeddings);
  std::vector<int64_t> pos(static_cast<size_t>(t));
  for (int64_t i = 0; i < t; ++i) pos[size_t(i)] = start + i;
  const Tensor positions = Tensor::from_vector(pos, {t});  // on the host: rope reads them there

  // Projections of the new tokens, exactly as forward() computes them.
  const Var q = c.q_lora_rank ? q_b_proj_.forward(ops::rms_norm(q_a_proj_.forward(x), q_a_layernorm_, kLatentNormEps))
                              : q_proj_.forward(x);
  const std::vector<Var> q_parts = ops::split(ops::reshape(q, {1, t, h, qk}), {nope, rope}, 3);
  const Tensor q_nope = host_f32(q_parts[0]);                                                  // [1, T, H, nope]
  const Tensor q_pe = host_f32(ops::rope(q_parts[1], positions, rope_, rope_layout_));  // [1, T, H, rope]
  const std::vector<Var> kv_a = ops::split(kv_a_proj_with_mqa_.forward(x), {r, rope}, 2);
  const Var c_kv = ops::rms_norm(kv_a[0], kv_a_layernorm_, kLatentNormEps);  // [1, T, kv_lora]
  const Tensor k_pe =
      host_f32(ops::rope(ops::reshape(kv_a[1], {1, t, 1, rope}), positions, rope_, rope_layout_));

  // Append the new tokens to the cache.
  const float* kp = k_pe.data<float>();
  if (kind == CacheKind::latent) {
    const Tensor cn = host_f32(c_kv);
    cache.c_kv.insert(cache.c_kv.end(), cn.data<float>(), cn.data<float>() + t * r);
    cache.k_pe.insert(cache.k_pe.end(), kp, kp + t * rope);
  } else {
    const Tensor kv = host_f32(kv_b_proj_.forward(c_kv));  // [1, T, H·(nope + v)]
    const float* kvp = kv.data<float>();
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < h; ++j) {
        const float* row = kvp + (i * h + j) * (nope + vd);
        cache.k.insert(cache.k.end(), row, row + nope);
        cache.k.insert(cache.k.end(), kp + i * rope, kp + (i + 1) * rope);
        cache.v.insert(cache.v.end(), row + nope, row + nope + vd);
      }
  }
  cache.length = total;

  const float scale = float(softmax_scale_);
  const Tensor w = kv_b_proj_.weight().value().to(Device::cpu()).to(DType::f32).contiguous();  // [H·(nope+v), r]
  const float* wp = w.data<float>();
  const float* qn = q_nope.data<float>();
  const float* qp = q_pe.data<float>();
  Tensor out = Tensor::zeros({1, t, h * vd});
  float* op = out.data<float>();
  std::vector<float> scores(static_cast<size_t>(total)), q_abs(static_cast<size_t>(r)), o_lat(static_cast<size_t>(r));
  for (int64_t i = 0; i < t; ++i) {
    const int64_t n = start + i + 1;  // causal: positions 0 .. start + i
    for (int64_t j = 0; j < h; ++j) {
      const float* qn_ij = qn + (i * h + j) * nope;
      const float* qp_ij = qp + (i * h + j) * rope;
      float* o_ij = op + (i * h + j) * vd;
      const float* w_uk = wp + j * (nope + vd) * r;  // [nope, r]
      const float* w_uv = w_uk + nope * r;           // [v, r]
      if (kind == CacheKind::latent) {
        std::fill(q_abs.begin(), q_abs.end(), 0.0f);  // q_abs = q_nope · W_UK  [r]
        for (int64_t a = 0; a < nope; ++a)
          for (int64_t b = 0; b < r; ++b) q_abs[size_t(b)] += qn_ij[a] * w_uk[a * r + b];
        for (int64_t s = 0; s < n; ++s) {
          const float* cs = cache.c_kv.data() + s * r;
          const float* ks = cache.k_pe.data() + s * rope;
          float dot = 0;
          for (int64_t b = 0; b < r; ++b) dot += q_abs[size_t(b)] * cs[b];
          for (int64_t b = 0; b < rope; ++b) dot += qp_ij[b] * ks[b];
          scores[size_t(s)] = dot * scale;
        }
        softmax_inplace(scores.data(), n);
        std::fill(o_lat.begin(), o_lat.end(), 0.0f);  // Σ_s p c_s  [r]
        for (int64_t s = 0; s < n; ++s) {
          const float p = scores[size_t(s)];
          const float* cs = cache.c_kv.data() + s * r;
          for (int64_t b = 0; b < r; ++b) o_lat[size_t(b)] += p * cs[b];
        }
        for (int64_t a = 0; a < vd; ++a) {  // W_UV · o_lat  [v]
          float acc = 0;
          for (int64_t b = 0; b < r; ++b) acc += w_uv[a * r + b] * o_lat[size_t(b)];
          o_ij[a] = acc;
        }
      } else {
        for (int64_t s = 0; s < n; ++s) {
          const float* ks = cache.k.data() + (s * h + j) * qk;
          float dot = 0;
          for (int64_t b = 0; b < nope; ++b) dot += qn_ij[b] * ks[b];
          for (int64_t b = 0; b < rope; ++b) dot += qp_ij[b] * ks[nope + b];
          scores[size_t(s)] = dot * scale;
        }
        softmax_inplace(scores.data(), n);
        for (int64_t s = 0; s < n; ++s) {
          const float p = scores[size_t(s)];
          const float* vs = cache.v.data() + (s * h + j) * vd;
          for (int64_t a = 0; a < vd; ++a) o_ij[a] += p * vs[a];
        }
      }
    }
  }
  return o_proj_.forward(Var(out.to(x.value().device())));
}

}  // namespace daedalus::model
