// MoE routing on the device of its inputs: the group-limited top-k expert choice, the order of the
// (token, slot) pairs by expert with capacity drops, and the per-sequence expert counts of the
// auxiliary loss. The CUDA twins (autograd/cuda/moe_routing.cu) run on the GPU without the host
// waiting, except for ONE copy per order_by_expert call: the 2·E counts below, which the grouped
// expert GEMMs need on the host (their per-expert row counts) and which give the number of rows R
// the permuted tensors have. The CPU twins are the host emulation of the same algorithm (the
// per-token and per-pair steps are shared code, moe_routing_core.h); tests hold them bit for bit
// to model::select_experts and to the router's capacity rule.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/kernels/moe_routing_core.h"
#include "autograd/tensor.h"

namespace daedalus::kernels {

// scores [N, E] fp32 (the affinities), bias [E] fp32 (the correction bias), on one device ->
// ids [N, k] int64 on that device: each token's k experts in descending biased score (the rule in
// moe_routing_core.h). InputError on shapes or limits that do not fit (E / G, topk_group, k).
Tensor group_limited_topk(const Tensor& scores, const Tensor& bias, const routing::GroupLimit& limit);

// The (token, slot) pairs p = t·k + s of a routing, in expert order.
struct ExpertOrder {
  Tensor pair;                   // [R] int64: the kept pairs, by expert, then pair index (a stable sort)
  Tensor token;                  // [R] int64: pair / k, the token row each expert row reads
  Tensor kept;                   // [N, k] fp32: 1 for a kept pair, 0 for one capacity dropped
  std::vector<int64_t> load;     // [E] host: pairs routed to each expert, before capacity
  std::vector<int64_t> offsets;  // [E + 1] host: expert e's rows are [offsets[e], offsets[e + 1])
  int64_t rows() const { return offsets.back(); }
  int64_t dropped() const;  // Σ load − R
};

// ids [N, k] int64 (values in [0, E)) -> their expert order. capacity < 0: every pair is kept.
// capacity >= 0: each expert keeps its `capacity` pairs of largest gate (gates [N, k] fp32 on ids'
// device; ties: lower pair index; -0.0 ties +0.0) and drops the rest. On CUDA the host waits once,
// for the 2·E counts (load and kept per expert); everything else stays on the device.
// InputError on an id out of range (CUDA: deferred to that copy, see autograd/device_checks.h).
ExpertOrder order_by_expert(const Tensor& ids, int64_t num_experts, const Tensor& gates, int64_t capacity);

// ids [B·T, k] int64 -> [B, E] fp32: scale · (the number of pairs of sequence b, tokens
// [b·T, (b+1)·T), routed to expert e), each product rounded once to fp32. Ids out of range are
// not counted (order_by_expert reports them).
Tensor expert_counts_per_sequence(const Tensor& ids, int64_t seq_len, int64_t num_experts, float scale);

}  // namespace daedalus::kernels
