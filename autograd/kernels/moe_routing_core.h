// The per-token and per-pair steps of MoE routing, written once for the host and the device
// (__host__ __device__ under nvcc): the CPU twin in moe_routing.cpp and the CUDA kernels in
// autograd/cuda/moe_routing.cu call these same functions, so the host emulation is the device
// algorithm, and tests hold both to model::select_experts (the router's reference) bit for bit.
//
// Group-limited top-k of one token (DeepSeek-V3's `noaux_tc` selection, per token t):
//   choice_i = fl32(s_i + b_i)                        the bias-corrected score, rounded to fp32
//   group g  = experts [g·E/G, (g+1)·E/G); its score = best + second-best choice (in double,
//              best first; the best alone when a group has one expert)
//   the topk_group best groups stay (ties: lower group), the others' choices become -inf
//   ids      = the k largest choices, in descending order (ties: lower expert id)
// Selection is by repeated maximum: pass c takes the largest key strictly below pass c-1's, over
// keys that are distinct (codec::index_order_key), so no "taken" flags and no sort are needed and
// the answer is the unique one of a stable descending sort. O((k + 1)·E) per token, no scratch
// beyond G doubles (G <= kMaxGroups).
#pragma once

#include <cstdint>

#include "autograd/kernels/order_key.h"

namespace daedalus::routing {

constexpr int64_t kMaxGroups = 64;
// codec::float_order_key(-inf): the key of a choice masked out with its group.
constexpr uint32_t kMaskedChoiceKey = 0x007FFFFFu;

struct GroupLimit {
  int64_t experts = 0;     // E
  int64_t groups = 1;      // G, divides E, <= kMaxGroups
  int64_t topk_group = 1;  // groups kept per token, 1 <= topk_group <= G
  int64_t k = 1;           // experts per token, 1 <= k <= topk_group · E/G
};

// fl32(s + b), rounded to nearest even on both sides (no contraction, no flush).
DAEDALUS_HD float biased_choice(const float* s, const float* b, int64_t i) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(s[i], b[i]);
#else
  return s[i] + b[i];
#endif
}

DAEDALUS_HD double add_double(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// s [E] fp32 (one token's affinities), b [E] fp32 (the correction bias) -> ids [k].
DAEDALUS_HD void route_token(const float* s, const float* b, const GroupLimit& g, int64_t* ids) {
  const int64_t per = g.experts / g.groups;
  uint64_t kept_groups = ~uint64_t(0);  // bit j: group j keeps its experts
  if (g.groups > 1) {
    double score[kMaxGroups];
    for (int64_t j = 0; j < g.groups; ++j) {
      uint64_t first = 0, second = 0;  // 0 is below every key
      for (int64_t i = j * per; i < (j + 1) * per; ++i) {
        const uint64_t key = codec::index_order_key(biased_choice(s, b, i), i);
        if (key > first) {
          second = first;
          first = key;
        } else if (key > second) {
          second = key;
        }
      }
      double sum = add_double(0.0, double(biased_choice(s, b, codec::index_of_order_key(first))));
      if (per >= 2) sum = add_double(sum, double(biased_choice(s, b, codec::index_of_order_key(second))));
      score[j] = sum;
    }
    kept_groups = 0;
    uint64_t previous = 0;
    int64_t previous_group = -1;
    for (int64_t r = 0; r < g.topk_group; ++r) {
      int64_t best = -1;
      uint64_t best_key = 0;
      for (int64_t j = 0; j < g.groups; ++j) {  // after (previous, previous_group) in (score desc, group asc)
        const uint64_t key = codec::double_order_key(score[j]);
        const bool after = r == 0 || key < previous || (key == previous && j > previous_group);
        if (after && (best < 0 || key > best_key)) {
          best = j;
          best_key = key;
        }
      }
      kept_groups |= uint64_t(1) << best;
      previous = best_key;
      previous_group = best;
    }
  }
  uint64_t previous = 0;
  for (int64_t c = 0; c < g.k; ++c) {
    uint64_t best = 0;
    for (int64_t i = 0; i < g.experts; ++i) {
      const uint64_t key = (kept_groups >> (i / per)) & 1
                               ? codec::index_order_key(biased_choice(s, b, i), i)
                               : uint64_t(kMaskedChoiceKey) << 32 | (0xFFFFFFFFull - uint64_t(i));
      if ((c == 0 || key < previous) && key > best) best = key;
    }
    ids[c] = codec::index_of_order_key(best);
    previous = best;
  }
}

// The capacity ranking: sorting the (token, slot) pairs stably by this key, ascending, orders them
// by expert, then gate descending, then pair index (-0.0 and +0.0 gates tie).
DAEDALUS_HD uint64_t capacity_key(int64_t expert, float gate) {
  return uint64_t(expert) << 32 | (0xFFFFFFFFull - uint64_t(codec::float_order_key(gate)));
}
DAEDALUS_HD int64_t capacity_key_expert(uint64_t key) { return int64_t(key >> 32); }

}  // namespace daedalus::routing
