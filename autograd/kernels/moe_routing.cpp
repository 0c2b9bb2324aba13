// MoE routing: dispatcher and CPU twin (the host emulation of the CUDA kernels; the per-token and
// per-pair steps are moe_routing_core.h, shared with them).
#include "autograd/kernels/moe_routing.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/index.h"
#include "autograd/kernels/strided.h"

namespace daedalus {

namespace cpu {

void group_limited_topk(const Tensor& ids, const Tensor& scores, const Tensor& bias, const routing::GroupLimit& g) {
  const int64_t n = scores.size(0);
  const float* s = scores.data<float>();
  const float* b = bias.data<float>();
  int64_t* out = ids.data<int64_t>();
#pragma omp parallel for schedule(static) if (n * g.experts * g.k >= kParallelThreshold)
  for (int64_t t = 0; t < n; ++t) routing::route_token(s + t * g.experts, b, g, out + t * g.k);
}

// counts [2E] int64: load per expert, then kept pairs per expert. pair, token [N·k]: the kept
// pairs in expert order first (the dispatcher keeps the first R). kept [N·k] fp32.
void order_by_expert(const Tensor& ids, int64_t e, const Tensor& gates, int64_t capacity, const Tensor& pair,
                     const Tensor& token, const Tensor& kept, const Tensor& counts) {
  const int64_t pairs = ids.numel(), k = ids.size(1);
  const int64_t* id = ids.data<int64_t>();
  int64_t* load = counts.data<int64_t>();
  int64_t* kept_count = load + e;
  float* keep = kept.data<float>();
  std::fill(load, load + 2 * e, int64_t(0));
  for (int64_t p = 0; p < pairs; ++p) ++load[id[p]];
  std::fill(keep, keep + pairs, 1.0f);
  if (capacity >= 0) {
    // Rank each pair within its expert by (gate descending, pair ascending): a stable sort of the
    // capacity keys, as the CUDA twin's radix sort does.
    const float* gate = gates.data<float>();
    std::vector<uint64_t> key(static_cast<size_t>(pairs));
    for (int64_t p = 0; p < pairs; ++p) key[size_t(p)] = routing::capacity_key(id[p], gate[p]);
    std::vector<int64_t> sorted(static_cast<size_t>(pairs));
    std::iota(sorted.begin(), sorted.end(), int64_t(0));
    std::stable_sort(sorted.begin(), sorted.end(), [&](int64_t a, int64_t b) { return key[size_t(a)] < key[size_t(b)]; });
    std::vector<int64_t> start(static_cast<size_t>(e));
    std::exclusive_scan(load, load + e, start.begin(), int64_t(0));
    for (int64_t i = 0; i < pairs; ++i) {
      const int64_t p = sorted[size_t(i)];
      const int64_t expert = routing::capacity_key_expert(key[size_t(p)]);
      if (i - start[size_t(expert)] >= capacity) keep[p] = 0.0f;
    }
  }
  for (int64_t p = 0; p < pairs; ++p)
    if (keep[p] != 0.0f) ++kept_count[id[p]];
  // The kept pairs stably by expert (a counting sort).
  std::vector<int64_t> next(static_cast<size_t>(e));
  std::exclusive_scan(kept_count, kept_count + e, next.begin(), int64_t(0));
  int64_t* out_pair = pair.data<int64_t>();
  int64_t* out_token = token.data<int64_t>();
  for (int64_t p = 0; p < pairs; ++p) {
    if (keep[p] == 0.0f) continue;
    const int64_t r = next[size_t(id[p])]++;
    out_pair[r] = p;
    out_token[r] = p / k;
  }
}

void expert_counts_per_sequence(const Tensor& out, const Tensor& ids, int64_t seq_len, int64_t e, float scale) {
  const int64_t n = ids.size(0), k = ids.size(1);
  const int64_t* id = ids.data<int64_t>();
  std::vector<int64_t> count(static_cast<size_t>(out.numel()), 0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t expert = id[t * k + j];
      if (expert >= 0 && expert < e) ++count[size_t((t / seq_len) * e + expert)];
    }
  float* y = out.data<float>();
  for (size_t i = 0; i < count.size(); ++i) y[i] = float(count[i]) * scale;
}

}  // namespace cpu

namespace kernels {

namespace {

void check_ids(std::string_view op, const Tensor& ids) {
  check_dim(op, ids, "ids", 2);
  check_dtype(op, ids, "ids", DType::i64);
}

}  // namespace

Tensor group_limited_topk(const Tensor& scores, const Tensor& bias, const routing::GroupLimit& g) {
  constexpr std::string_view op = "group_limited_topk";
  const Device device = common_device(op, {&scores, &bias});
  check_dim(op, scores, "scores", 2);
  check_dtype(op, scores, "scores", DType::f32);
  check_dtype(op, bias, "bias", DType::f32);
  DAEDALUS_CHECK(scores.size(1) == g.experts && bias.numel() == g.experts,
                 "{}: scores {} and bias {} for {} experts", op, shape_str(scores.shape()), shape_str(bias.shape()),
                 g.experts);
  DAEDALUS_CHECK(g.groups >= 1 && g.groups <= routing::kMaxGroups && g.experts % g.groups == 0,
                 "{}: {} experts in {} groups (groups must divide the experts, at most {})", op, g.experts, g.groups,
                 routing::kMaxGroups);
  DAEDALUS_CHECK(g.topk_group >= 1 && g.topk_group <= g.groups && g.k >= 1 &&
                     g.k <= g.topk_group * (g.experts / g.groups) && g.experts < int64_t(0xFFFFFFFF),
                 "{}: top-{} of {} groups x {} experts cannot give k = {}", op, g.topk_group, g.groups,
                 g.experts / g.groups, g.k);
  Tensor ids = Tensor::empty({scores.size(0), g.k}, DType::i64, device);
  if (scores.size(0) == 0) return ids;
  const Tensor s = scores.contiguous(), b = bias.contiguous();
  switch (device.type) {
    case DeviceType::cpu: cpu::group_limited_topk(ids, s, b, g); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL(op, group_limited_topk(ids, s, b, g)); break;
  }
  return ids;
}

int64_t ExpertOrder::dropped() const { return std::accumulate(load.begin(), load.end(), int64_t(0)) - rows(); }

ExpertOrder order_by_expert(const Tensor& ids, int64_t num_experts, const Tensor& gates, int64_t capacity) {
  constexpr std::string_view op = "order_by_expert";
  check_ids(op, ids);
  const Device device = capacity >= 0 ? common_device(op, {&ids, &gates}) : common_device(op, {&ids});
  if (capacity >= 0) {
    check_dtype(op, gates, "gates", DType::f32);
    check_same_shape(op, ids, gates);
  }
  DAEDALUS_CHECK(num_experts >= 1 && num_experts < int64_t(0xFFFFFFFF), "{}: {} experts", op, num_experts);
  const int64_t pairs = ids.numel();
  check_index_range(op, ids, "ids", num_experts, fmt::format("{} experts", num_experts));
  const Tensor id = ids.contiguous();
  const Tensor g = capacity >= 0 ? gates.contiguous() : Tensor();
  Tensor pair = Tensor::empty({pairs}, DType::i64, device), token = Tensor::empty({pairs}, DType::i64, device);
  ExpertOrder order;
  order.kept = Tensor::empty(ids.shape(), DType::f32, device);
  Tensor counts;  // [2E] int64 on the host
  switch (device.type) {
    case DeviceType::cpu:
      counts = Tensor::empty({2 * num_experts}, DType::i64);
      cpu::order_by_expert(id, num_experts, g, capacity, pair, token, order.kept, counts);
      break;
    case DeviceType::cuda: {
      const Tensor on_device = Tensor::empty({2 * num_experts}, DType::i64, device);
      DAEDALUS_CUDA_KERNEL(op, order_by_expert(id, num_experts, g, capacity, pair, token, order.kept, on_device));
      counts = on_device.to(Device::cpu());  // the one wait: R and the expert row counts
      break;
    }
  }
  const std::vector<int64_t> c = counts.to_vector<int64_t>();
  order.load.assign(c.begin(), c.begin() + num_experts);
  order.offsets.assign(size_t(num_experts) + 1, 0);
  std::inclusive_scan(c.begin() + num_experts, c.end(), order.offsets.begin() + 1);
  order.pair = pair.slice(0, 0, order.rows());
  order.token = token.slice(0, 0, order.rows());
  return order;
}

Tensor expert_counts_per_sequence(const Tensor& ids, int64_t seq_len, int64_t num_experts, float scale) {
  constexpr std::string_view op = "expert_counts_per_sequence";
  const Device device = common_device(op, {&ids});
  check_ids(op, ids);
  DAEDALUS_CHECK(seq_len >= 1 && ids.size(0) % seq_len == 0, "{}: {} tokens are not sequences of {}", op,
                 ids.size(0), seq_len);
  Tensor out = Tensor::empty({ids.size(0) / seq_len, num_experts}, DType::f32, device);
  if (out.numel() == 0) return out;
  const Tensor id = ids.contiguous();
  switch (device.type) {
    case DeviceType::cpu: cpu::expert_counts_per_sequence(out, id, seq_len, num_experts, scale); break;
    case DeviceType::cuda:
      DAEDALUS_CUDA_KERNEL(op, expert_counts_per_sequence(out, id, seq_len, num_experts, scale));
      break;
  }
  return out;
}

}  // namespace kernels

}  // namespace daedalus
