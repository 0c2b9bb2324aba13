// Expert dispatch and combine: the routing plan (host bookkeeping), the row exchange in each wire
// format, and the differentiable ops built from it. Row orders and wire formats: dispatch.h.
//
// dispatch = gather_rows(x, send_unique_token) -> exchange -> gather_rows(expert_to_unique)
// combine  = gather_rows(expert_out, arrival_to_expert) -> exchange back -> gated scatter_add_rows
// Only the exchange is recorded here; the permutations and the gated sum are autograd ops.
#include "parallel/dispatch.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <string>
#include <utility>

#include "autograd/kernels/index.h"
#include "autograd/nvtx.h"
#include "autograd/ops/index.h"
#include "autograd/ops/shape.h"
#include "fp8/quantized.h"

namespace daedalus::parallel {

namespace {

std::string_view wire_name(DispatchDtype dtype) {
  switch (dtype) {
    case DispatchDtype::fp32: return "fp32";
    case DispatchDtype::bf16: return "bf16";
    case DispatchDtype::fp8: return "fp8";
  }
  return "?";
}

Tensor index_tensor(const std::vector<int64_t>& values) {
  return Tensor::from_vector(values, {static_cast<int64_t>(values.size())});
}

// Rows this rank sends to other ranks (its own rows are a local copy, not traffic).
int64_t remote_rows(const std::vector<int64_t>& counts, int self) {
  int64_t n = 0;
  for (size_t r = 0; r < counts.size(); ++r)
    if (static_cast<int>(r) != self) n += counts[r];
  return n;
}

// rows [N_in, D] fp32|bf16 -> [N_out, D] fp32: rows[sum(send[<r]) ..] go to rank r, received rows in
// source-rank order, carried as `wire`. Adds the bytes sent to other ranks to *bytes.
Tensor exchange_rows(Communicator& ep, const Tensor& rows, const std::vector<int64_t>& send,
                     const std::vector<int64_t>& recv, DispatchDtype wire, int64_t* bytes) {
  const int64_t n_out = std::accumulate(recv.begin(), recv.end(), int64_t{0});
  const int64_t d = rows.size(1);
  const int64_t remote = remote_rows(send, ep.rank());
  const Device device = rows.device();
  if (wire == DispatchDtype::fp8) {
    // E4M3 data and 1x128 scale_inv rows, as two exchanges of rows with the same counts.
    const int64_t nb = (d + 127) / 128;
    Tensor data;
    Tensor scale_inv;
    if (rows.size(0) > 0) {
      fp8::QuantizedTensor q = fp8::quantize(rows, fp8::Granularity::tile_1x128, fp8::Format::e4m3);
      data = q.data.contiguous();
      scale_inv = q.scale_inv.contiguous().view({rows.size(0), nb});
    } else {
      data = Tensor::empty({0, d}, DType::f8e4m3, device);
      scale_inv = Tensor::empty({0, nb}, DType::f32, device);
    }
    fp8::QuantizedTensor arrived;
    arrived.data = Tensor::empty({n_out, d}, DType::f8e4m3, device);
    arrived.scale_inv = Tensor::empty({n_out, nb}, DType::f32, device);
    arrived.granularity = fp8::Granularity::tile_1x128;
    arrived.format = fp8::Format::e4m3;
    ep.all_to_all_v(data, send, arrived.data, recv);
    ep.all_to_all_v(scale_inv, send, arrived.scale_inv, recv);
    *bytes += remote *
              (d * static_cast<int64_t>(dtype_size(DType::f8e4m3)) + nb * static_cast<int64_t>(dtype_size(DType::f32)));
    if (n_out == 0) return Tensor::zeros({0, d}, DType::f32, device);
    return arrived.dequantize();
  }
  const DType dt = wire == DispatchDtype::bf16 ? DType::bf16 : DType::f32;
  const Tensor in = rows.to(dt).contiguous();
  Tensor out = Tensor::empty({n_out, d}, dt, device);
  ep.all_to_all_v(in, send, out, recv);
  *bytes += remote * d * static_cast<int64_t>(dtype_size(dt));
  return out.to(DType::f32);
}

// The differentiable exchange: in [N_in, D] -> [N_out, D] fp32 sent as `forward`; the gradient goes
// back along the reverse route (counts swapped) as `backward`, into in's dtype. Bytes are added to
// the stats fields named. The communicator must outlive the backward pass (it is collective too).
Var exchange(Communicator& ep, const Var& in, const std::vector<int64_t>& send, const std::vector<int64_t>& recv,
             DispatchDtype forward, DispatchDtype backward, const std::shared_ptr<DispatchStats>& stats,
             int64_t DispatchStats::*forward_bytes, int64_t DispatchStats::*backward_bytes, const char* range) {
  const nvtx::Range forward_range(range);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor out = exchange_rows(ep, in.value(), send, recv, forward, &((*stats).*forward_bytes));
  stats->exchange_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return record1("all_to_all_rows", {in}, std::move(out),
                 [comm = &ep, send, recv, backward, stats, backward_bytes, dtype = in.dtype(),
                  range_name = std::string(range) + " backward"](const BackwardContext& ctx) {
                   const nvtx::Range backward_range(range_name);
                   const auto t1 = std::chrono::steady_clock::now();
                   Tensor g = exchange_rows(*comm, ctx.grad(), recv, send, backward, &((*stats).*backward_bytes));
                   stats->exchange_seconds +=
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
                   return std::vector<Tensor>{g.to(dtype)};
                 });
}

void check_plan_matches(std::string_view op, const Communicator& ep, const DispatchPlan& plan) {
  DAEDALUS_CHECK(ep.size() == plan.ep_size && ep.rank() == plan.ep_rank,
                 "{}: the plan was made for rank {} of {} but the communicator is rank {} of {}", op, plan.ep_rank,
                 plan.ep_size, ep.rank(), ep.size());
}

}  // namespace

DispatchPlan plan_dispatch(Communicator& ep, const Tensor& expert_ids, int64_t num_experts) {
  const nvtx::Range range("moe.plan_dispatch");
  const int p_size = ep.size();
  DAEDALUS_CHECK(expert_ids.dim() == 2, "plan_dispatch: expert_ids must be [tokens, k], got {}", expert_ids.describe());
  DAEDALUS_CHECK(expert_ids.dtype() == DType::i32 || expert_ids.dtype() == DType::i64,
                 "plan_dispatch: expert_ids must be int32 or int64, got {}", expert_ids.describe());
  DAEDALUS_CHECK(num_experts > 0 && num_experts % p_size == 0,
                 "plan_dispatch: {} experts do not split evenly over an EP group of {} ranks", num_experts, p_size);
  const Tensor host = expert_ids.to(Device::cpu());
  kernels::check_index_range("plan_dispatch", host, "expert_ids", num_experts, fmt::format("{} experts", num_experts));

  DispatchPlan plan;
  plan.ep_size = p_size;
  plan.ep_rank = ep.rank();
  plan.num_experts = num_experts;
  plan.experts_per_rank = num_experts / p_size;
  plan.num_tokens = expert_ids.size(0);
  plan.top_k = expert_ids.size(1);
  const int64_t local = plan.experts_per_rank;
  const auto p = static_cast<size_t>(p_size);

  // Send order: a stable counting sort of the (token, slot) pairs by global expert id, which sorts
  // by destination rank (id / local) and then local expert (id % local), keeping (token, slot).
  const std::vector<int64_t> ids = host.to(DType::i64).to_vector<int64_t>();
  std::vector<int64_t> per_expert(static_cast<size_t>(num_experts), 0);
  for (int64_t e : ids) ++per_expert[static_cast<size_t>(e)];
  std::vector<int64_t> cursor(per_expert.size(), 0);
  std::exclusive_scan(per_expert.begin(), per_expert.end(), cursor.begin(), int64_t{0});
  std::vector<int64_t> send_pair(ids.size());
  std::vector<int64_t> send_token(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto pos = static_cast<size_t>(cursor[static_cast<size_t>(ids[i])]++);
    send_pair[pos] = static_cast<int64_t>(i);
    send_token[pos] = static_cast<int64_t>(i) / plan.top_k;
  }
  plan.send_pair = index_tensor(send_pair);
  plan.send_token = index_tensor(send_token);
  plan.send_counts.assign(p, 0);
  for (size_t e = 0; e < per_expert.size(); ++e) plan.send_counts[e / static_cast<size_t>(local)] += per_expert[e];

  // The dispatch wire: each token once per destination rank, by destination then token. For every
  // pair in send order, pair_wire is the index of its token's row within the message to its rank.
  plan.send_unique_counts.assign(p, 0);
  std::vector<int64_t> unique_token, pair_wire(ids.size());
  {
    std::vector<int64_t> row_of(static_cast<size_t>(plan.num_tokens), -1);  // token -> its row, this rank
    size_t pos = 0;
    for (size_t r = 0; r < p; ++r) {
      std::vector<int64_t> tokens;  // this destination's pairs, in send order (sorted by expert)
      for (size_t i = pos; i < pos + static_cast<size_t>(plan.send_counts[r]); ++i) tokens.push_back(send_token[i]);
      std::vector<int64_t> sorted = tokens;
      std::sort(sorted.begin(), sorted.end());
      sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
      for (size_t u = 0; u < sorted.size(); ++u) row_of[static_cast<size_t>(sorted[u])] = static_cast<int64_t>(u);
      for (size_t i = 0; i < tokens.size(); ++i) pair_wire[pos + i] = row_of[static_cast<size_t>(tokens[i])];
      unique_token.insert(unique_token.end(), sorted.begin(), sorted.end());
      plan.send_unique_counts[r] = static_cast<int64_t>(sorted.size());
      pos += static_cast<size_t>(plan.send_counts[r]);
    }
  }
  plan.send_unique_token = index_tensor(unique_token);

  // Rank r receives our row r of [P, E/P + 1]: its pairs per local expert from us, then the number
  // of unique rows we send it.
  const std::vector<int64_t> ones(p, 1);
  std::vector<int64_t> counts(p * static_cast<size_t>(local + 1));
  for (size_t r = 0; r < p; ++r) {
    for (size_t e = 0; e < static_cast<size_t>(local); ++e)
      counts[r * static_cast<size_t>(local + 1) + e] = per_expert[r * static_cast<size_t>(local) + e];
    counts[r * static_cast<size_t>(local + 1) + static_cast<size_t>(local)] = plan.send_unique_counts[r];
  }
  const Tensor counts_in = Tensor::from_vector(counts, {p_size, local + 1});
  const Tensor counts_out = Tensor::empty({p_size, local + 1}, DType::i64);
  ep.all_to_all_v(counts_in, ones, counts_out, ones);
  plan.stats->plan_bytes += (p_size - 1) * (local + 1) * static_cast<int64_t>(sizeof(int64_t));
  const std::vector<int64_t> received = counts_out.to_vector<int64_t>();
  plan.recv_expert_counts.assign(p * static_cast<size_t>(local), 0);
  plan.recv_unique_counts.assign(p, 0);
  for (size_t src = 0; src < p; ++src) {
    for (size_t e = 0; e < static_cast<size_t>(local); ++e)
      plan.recv_expert_counts[src * static_cast<size_t>(local) + e] =
          received[src * static_cast<size_t>(local + 1) + e];
    plan.recv_unique_counts[src] = received[src * static_cast<size_t>(local + 1) + static_cast<size_t>(local)];
  }

  // Arrival order: by source rank, then (the sender's send order) local expert.
  plan.recv_counts.assign(p, 0);
  plan.expert_counts.assign(static_cast<size_t>(local), 0);
  std::vector<int64_t> arrival_expert;
  for (size_t src = 0; src < p; ++src)
    for (size_t e = 0; e < static_cast<size_t>(local); ++e) {
      const int64_t n = plan.recv_expert_counts[src * static_cast<size_t>(local) + e];
      plan.recv_counts[src] += n;
      plan.expert_counts[e] += n;
      arrival_expert.insert(arrival_expert.end(), static_cast<size_t>(n), static_cast<int64_t>(e));
    }

  // Expert order: arrival rows stably sorted by local expert.
  plan.expert_offsets.assign(static_cast<size_t>(local) + 1, 0);
  std::inclusive_scan(plan.expert_counts.begin(), plan.expert_counts.end(), plan.expert_offsets.begin() + 1);
  std::vector<int64_t> next(plan.expert_offsets.begin(), plan.expert_offsets.end() - 1);
  std::vector<int64_t> expert_order(arrival_expert.size());
  std::vector<int64_t> arrival_to_expert(arrival_expert.size());
  for (size_t j = 0; j < arrival_expert.size(); ++j) {
    const int64_t pos = next[static_cast<size_t>(arrival_expert[j])]++;
    expert_order[static_cast<size_t>(pos)] = static_cast<int64_t>(j);
    arrival_to_expert[j] = pos;
  }
  plan.arrival_local_expert = index_tensor(arrival_expert);
  plan.expert_order = index_tensor(expert_order);
  plan.arrival_to_expert = index_tensor(arrival_to_expert);

  // Which arriving unique row each arrival pair reads: the senders' pair_wire, offset by source.
  const Tensor wire_in = Tensor::from_vector(pair_wire, {static_cast<int64_t>(pair_wire.size()), 1});
  const Tensor wire_out = Tensor::empty({static_cast<int64_t>(arrival_expert.size()), 1}, DType::i64);
  ep.all_to_all_v(wire_in, plan.send_counts, wire_out, plan.recv_counts);
  plan.stats->plan_bytes += remote_rows(plan.send_counts, ep.rank()) * static_cast<int64_t>(sizeof(int64_t));
  const std::vector<int64_t> arrival_wire = wire_out.to_vector<int64_t>();
  std::vector<int64_t> expert_to_unique(arrival_expert.size());
  size_t j = 0;
  int64_t unique_offset = 0;
  for (size_t src = 0; src < p; ++src) {
    for (int64_t i = 0; i < plan.recv_counts[src]; ++i, ++j)
      expert_to_unique[static_cast<size_t>(arrival_to_expert[j])] = unique_offset + arrival_wire[j];
    unique_offset += plan.recv_unique_counts[src];
  }
  plan.expert_to_unique = index_tensor(expert_to_unique);
  return plan;
}

Var dispatch(Communicator& ep, const DispatchPlan& plan, const Var& x, DispatchDtype dtype) {
  check_plan_matches("dispatch", ep, plan);
  DAEDALUS_CHECK(x.value().dim() == 2 && x.shape()[0] == plan.num_tokens,
                 "dispatch: x must be [tokens, D] with the plan's {} tokens, got {}", plan.num_tokens,
                 x.value().describe());
  DAEDALUS_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::bf16, "dispatch: x must be fp32 or bf16, got {}",
                 x.value().describe());
  const Device device = x.value().device();
  const Var rows = ops::gather_rows(x, plan.send_unique_token.to(device));  // [U, D], one per (rank, token)
  const DispatchDtype backward = dtype == DispatchDtype::fp32 ? DispatchDtype::fp32 : DispatchDtype::bf16;
  const Var arrived = exchange(ep, rows, plan.send_unique_counts, plan.recv_unique_counts, dtype, backward, plan.stats,
                               &DispatchStats::dispatch_bytes, &DispatchStats::dispatch_backward_bytes, "moe.dispatch");
  // Fan out: each pair reads its token's row (backward sums the pairs of a row, in double).
  return ops::gather_rows(arrived, plan.expert_to_unique.to(device));  // [R, D], expert order
}

Var combine(Communicator& ep, const DispatchPlan& plan, const Var& expert_out, const Var& gates, DispatchDtype dtype) {
  check_plan_matches("combine", ep, plan);
  DAEDALUS_CHECK(dtype != DispatchDtype::fp8, "combine: the combine is sent in fp32 or bf16, not {}", wire_name(dtype));
  DAEDALUS_CHECK(expert_out.value().dim() == 2 && expert_out.shape()[0] == plan.num_received(),
                 "combine: expert_out must be [received rows, D] with the plan's {} rows, got {}", plan.num_received(),
                 expert_out.value().describe());
  DAEDALUS_CHECK(expert_out.dtype() == DType::f32 || expert_out.dtype() == DType::bf16,
                 "combine: expert_out must be fp32 or bf16, got {}", expert_out.value().describe());
  DAEDALUS_CHECK(gates.dtype() == DType::f32 && gates.value().dim() == 2 && gates.shape()[0] == plan.num_tokens &&
                     gates.shape()[1] == plan.top_k,
                 "combine: gates must be fp32 [{}, {}] (tokens, k), got {}", plan.num_tokens, plan.top_k,
                 gates.value().describe());
  const Device device = expert_out.value().device();
  const int64_t d = expert_out.shape()[1];
  const Var arrival = ops::gather_rows(expert_out, plan.arrival_to_expert.to(device));  // [R, D]
  const Var back =
      exchange(ep, arrival, plan.recv_counts, plan.send_counts, dtype, dtype, plan.stats, &DispatchStats::combine_bytes,
               &DispatchStats::combine_backward_bytes, "moe.combine");  // [S, D]
  const int64_t s = plan.num_sent();
  const Var gate_rows = ops::gather_rows(ops::reshape(gates, {s, 1}), plan.send_pair.to(device));  // [S, 1]
  const Var base(Tensor::zeros({plan.num_tokens, d}, DType::f32, device));
  return ops::scatter_add_rows(base, plan.send_token.to(device), back, ops::reshape(gate_rows, {s}));
}

}  // namespace daedalus::parallel
