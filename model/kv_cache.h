// The key/value caches of MLA decoding (generation), and what they cost per token.
//
// latent   (DeepSeek-V3's inference "absorb" mode): per token and layer the normalized latent
//          c_kv (after kv_a_layernorm) [kv_lora_rank] and the rotated shared key head k_pe
//          [qk_rope_head_dim]; kv_b_proj is folded into the query (keys) and the output (values).
// expanded (the naive mode, kept for comparison and tests): per token, layer and head the full key
//          [qk_nope_head_dim + qk_rope_head_dim] and value [v_head_dim], as a plain MHA cache.
// Both hold fp32 values (decode runs in fp32; see Mla::decode).
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace daedalus::model {

enum class CacheKind : uint8_t { latent, expanded };

// One layer's cache; rows [0, length) hold positions 0..length-1.
struct MlaCache {
  int64_t length = 0;
  std::vector<float> c_kv;  // latent: [length, kv_lora_rank]
  std::vector<float> k_pe;  // latent: [length, qk_rope_head_dim], rotated
  std::vector<float> k;     // expanded: [length, heads, qk_nope_head_dim + qk_rope_head_dim]
  std::vector<float> v;     // expanded: [length, heads, v_head_dim]
};

// Every main-model layer's cache (MTP modules are not used for generation).
struct DecodeCache {
  CacheKind kind = CacheKind::latent;
  std::vector<MlaCache> layers;
  int64_t length() const { return layers.empty() ? 0 : layers[0].length; }
  int64_t bytes() const;  // fp32 bytes held now
};

// Cache elements per token per layer, from a config alone:
//   latent   = kv_lora_rank + qk_rope_head_dim                          (DeepSeek-V3: 512 + 64 = 576)
//   expanded = heads · (qk_nope_head_dim + qk_rope_head_dim + v_head_dim) (128 · 320 = 40,960)
//   mha      = 2 · heads · v_head_dim: a plain MHA of the same heads with head dim d_h = v_head_dim,
//              the comparison of DeepSeek-V2's Table 1 (2 n_h d_h)        (2 · 128 · 128 = 32,768)
struct CacheFootprint {
  int64_t latent = 0, expanded = 0, mha = 0;
};
CacheFootprint cache_footprint(const ModelConfig& config);

}  // namespace daedalus::model
