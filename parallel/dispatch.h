// Expert parallelism: the differentiable all-to-all that sends each token's rows to the ranks
// owning its routed experts (dispatch) and brings the expert outputs back, weighted by the gates
// (combine). DeepSeek-V3 / DeepEP style, on any Communicator.
//
// Setting: E routed experts split evenly over the P ranks of the EP group; rank p owns the global
// experts [p·E/P, (p+1)·E/P) and calls them local experts 0 .. E/P-1. Every rank has T local
// tokens x [T, D] (T may differ between ranks, and may be 0) and top-k routing: expert ids [T, k]
// and gate weights [T, k].
//
//   plan = plan_dispatch(ep, expert_ids, E)                       // once per step and layer
//   h    = dispatch(ep, plan, x, DispatchDtype::fp8)              // [R, D], grouped by local expert
//   out  = grouped experts over h (plan.expert_counts rows each, contiguous, in local-expert order)
//   y    = combine(ep, plan, out, gates, DispatchDtype::bf16)     // [T, D] = Σ_s gates[t,s]·out(t,s)
//
// Row orders (each fixed and deterministic):
//   send order     the T·k (token, slot) pairs sorted by destination rank, then local expert, then
//                  token, then slot — i.e. by global expert id, then (token, slot);
//   arrival order  what all_to_all_v delivers: by source rank, then (each sender's send order)
//                  local expert, token, slot;
//   expert order   dispatch's output: by local expert, then source rank, token, slot — the
//                  arrival rows stably sorted by local expert, so each expert's rows are contiguous.
//
// Wire formats (DispatchDtype): fp32 sends fp32 rows; bf16 rounds rows to bf16 (nearest even)
// before sending and widens them to fp32 on arrival; fp8 (dispatch only, NUMERICS.md
// "Communication") quantizes each row with fp8::quantize(tile_1x128, e4m3) and sends the E4M3
// bytes [U, D] and the scale_inv rows [U, ceil(D/128)] fp32 of the U unique rows as two
// all_to_all_v calls, dequantized
// on arrival: D + 4·ceil(D/128) bytes per row against BF16's 2·D (about half).
// Backward: each exchange's gradient goes back along the reverse route (all_to_all_v with send and
// receive counts swapped) in the exchange's backward wire format: fp32 for fp32, bf16 for bf16 and
// for fp8. The fp8 path is straight-through: the gradient w.r.t. the dequantized rows is passed on
// as the gradient w.r.t. x (quantization is treated as the identity), in BF16 as DeepSeek keeps its
// combine and backward traffic. combine never sends FP8 (InputError).
//
// Dispatch sends each token once per destination rank, as DeepEP does: the wire carries the unique
// (destination, token) rows, sorted by destination then token, and the receiver fans each row out
// to the pairs that need it (plan.expert_to_unique). The plan exchange tells every receiver, for
// each pair it will serve, which arriving row holds its token. The combine still returns one row
// per (token, slot) pair, weighted on the token's rank.
// Known gaps: the exchange is synchronous (no compute/communication overlap); index bookkeeping is
// on the host.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/tape.h"
#include "parallel/communicator.h"

namespace daedalus::parallel {

enum class DispatchDtype : uint8_t { fp32, bf16, fp8 };

// Bytes this rank handed to all_to_all_v for other ranks (rows it sends to itself are a local copy
// and not counted), accumulated over every call made with one plan (forward and backward apart).
struct DispatchStats {
  int64_t plan_bytes = 0;               // the per-expert count exchange
  int64_t dispatch_bytes = 0;           // dispatch forward: rows (+ FP8 scales)
  int64_t dispatch_backward_bytes = 0;  // dispatch backward: gradient rows back to the sources
  int64_t combine_bytes = 0;            // combine forward: expert outputs back to the sources
  int64_t combine_backward_bytes = 0;   // combine backward: gradient rows to the experts
  double exchange_seconds = 0;          // wall time in the row exchanges (all_to_all_v), both passes
};

struct DispatchPlan {
  int ep_size = 1;
  int ep_rank = 0;
  int64_t num_experts = 0;       // E, global
  int64_t experts_per_rank = 0;  // E / P
  int64_t num_tokens = 0;        // T, this rank
  int64_t top_k = 0;             // k

  // Sender side: S = T·k rows, in send order (see the file comment).
  Tensor send_pair;                  // [S] int64: token·k + slot of the i-th sent row
  Tensor send_token;                 // [S] int64: token of the i-th sent row
  std::vector<int64_t> send_counts;  // [P]: rows sent to each rank

  // Dispatch wire: U unique (destination rank, token) rows, by destination then token.
  Tensor send_unique_token;                 // [U] int64: token of the i-th unique row sent
  std::vector<int64_t> send_unique_counts;  // [P]: unique rows sent to each rank
  std::vector<int64_t> recv_unique_counts;  // [P]: unique rows received from each rank

  // Receiver side: R = Σ recv_counts rows.
  std::vector<int64_t> recv_counts;         // [P]: rows received from each rank
  std::vector<int64_t> recv_expert_counts;  // [P · E/P] row-major: rows from rank src for local expert e
  Tensor arrival_local_expert;              // [R] int64: local expert of each row, arrival order
  Tensor expert_order;                      // [R] int64: arrival index of expert-order row i
  Tensor arrival_to_expert;                 // [R] int64: expert-order index of arrival row j (inverse)
  std::vector<int64_t> expert_counts;       // [E/P]: rows per local expert (expert order is grouped)
  std::vector<int64_t> expert_offsets;      // [E/P + 1]: first expert-order row of each local expert
  Tensor expert_to_unique;                  // [R] int64: arrived unique row holding expert-order row i's token

  // Shared with the backward closures, which update it after the plan itself may be gone.
  std::shared_ptr<DispatchStats> stats = std::make_shared<DispatchStats>();

  int64_t num_sent() const { return num_tokens * top_k; }
  int64_t num_received() const { return expert_offsets.empty() ? 0 : expert_offsets.back(); }
};

// expert_ids [T, k] int32|int64 (values in [0, num_experts)), num_experts divisible by ep.size():
// the routes of this rank's (token, slot) pairs, and — after two all_to_all_v calls (E/P + 1 int64
// counts per rank pair, then one int64 per pair: the index of its token's row on the wire) — what
// every rank receives. Collective over `ep`: every rank must call it.
// InputError on an out-of-range id or indivisible E (naming both).
DispatchPlan plan_dispatch(Communicator& ep, const Tensor& expert_ids, int64_t num_experts);

// x [T, D] fp32|bf16 -> [R, D] fp32 in expert order: row i is x[token] of the pair routed to local
// expert (see plan.expert_offsets) from some source rank, carried in `dtype` over the wire.
// Differentiable w.r.t. x: dx[t] = Σ over t's slots of the returned rows' gradients (fp8: straight-
// through, see above). Collective over `ep`; D must be equal on every rank.
Var dispatch(Communicator& ep, const DispatchPlan& plan, const Var& x, DispatchDtype dtype);

// expert_out [R, D] fp32|bf16 in expert order (dispatch's output order), gates [T, k] fp32 ->
// y [T, D] fp32 with y[t] = Σ_s gates[t, s] · expert_out(row of (t, s)), rows sent back to their
// source ranks in `dtype` (fp32 or bf16; the gradient of expert_out returns in the same dtype).
// Products and sums in double, rounded once to fp32 (kernels::scatter_add_rows). Differentiable
// w.r.t. expert_out and gates. Collective over `ep`.
Var combine(Communicator& ep, const DispatchPlan& plan, const Var& expert_out, const Var& gates,
            DispatchDtype dtype = DispatchDtype::fp32);

}  // namespace daedalus::parallel
