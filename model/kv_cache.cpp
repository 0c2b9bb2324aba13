// Decode-cache sizes: what a cache holds now and what it costs per token from a config.
#include "model/kv_cache.h"

namespace daedalus::model {

int64_t DecodeCache::bytes() const {
  int64_t n = 0;
  for (const MlaCache& l : layers) n += int64_t(l.c_kv.size() + l.k_pe.size() + l.k.size() + l.v.size());
  return n * int64_t(sizeof(float));
}

CacheFootprint cache_footprint(const ModelConfig& c) {
  CacheFootprint f;
  f.latent = c.kv_lora_rank + c.qk_rope_head_dim;
  f.expanded = c.num_attention_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim);
  f.mha = 2 * c.num_attention_heads * c.v_head_dim;
  return f;
}

}  // namespace daedalus::model
