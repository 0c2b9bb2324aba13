// The 1F1B pipeline schedule (PipeDream-Flush, Megatron-LM's non-interleaved schedule): one
// training step's forward and backward passes over m micro-batches on one pipeline stage.
//
// Stage s of P runs min(P - 1 - s, m) warm-up forwards, then alternates one forward and one
// backward (steady state) until every micro-batch is in flight, then the cool-down backwards:
//
//   P = 4, m = 6      time ->   (F3 = forward of micro-batch 3, B3 = its backward, . = idle)
//   stage 0   F0 F1 F2 F3 .  .  .  B0 F4 B1 F5 B2 .  B3 .  B4 .  B5
//   stage 1   .  F0 F1 F2 .  .  B0 F3 B1 F4 B2 F5 B3 .  B4 .  B5 .
//   stage 2   .  .  F0 F1 .  B0 F2 B1 F3 B2 F4 B3 F5 B4 .  B5 .  .
//   stage 3   .  .  .  F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 .  .  .
//
// so stage s holds at most P - s micro-batches' activations at once (not m), and each stage idles
// (P - 1) of (m + P - 1) slots when forward and backward take one slot each: the bubble
// (P - 1) / (m + P - 1). Every micro-batch records onto a tape of its own, kept until its backward:
// the first stage embeds the tokens, a later stage starts from the hidden states [B, T, D] fp32 it
// received (a leaf that collects their gradient); the last stage computes the losses and runs
// backward from them, an earlier one from the gradient it received for its output (plus its MoE
// aux losses). Activations and gradients travel as fp32 (the model's compute dtype between
// layers) with Communicator::exchange over the pipeline group; a send and the matching receive are
// one exchange on both sides (Megatron's send_forward_recv_backward / send_backward_recv_forward),
// so neighbours never wait on each other in a cycle. With P = 1 this is the plain loop
// (forward, backward, per micro-batch) the trainer ran before, bit for bit.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "data/loader.h"
#include "model/causal_lm.h"
#include "parallel/communicator.h"

namespace daedalus::train {

// What one stage saw in one step. Loss sums are over this stage's micro-batches, each divided by m;
// only the last stage has lm / mtp and the loss terms; every stage adds its own MoE aux losses.
struct StageResult {
  double loss = 0;  // last stage: lm + λ·mtp + its aux; earlier stages: their aux
  double lm_loss = 0;
  double mtp_loss = 0;
  double aux_loss = 0;
  bool has_mtp = false;
  bool has_aux = false;
  double busy_s = 0;  // forward and backward compute
  double wait_s = 0;  // blocked in point-to-point transfers: this stage's share of the bubble
  double total_s = 0;
};

class PipelineSchedule {
 public:
  // `pipeline`: the pipeline group (rank = stage; null when P = 1). `model` holds this stage.
  // `document_positions` (data.document_mask): the batches' per-document positions [B, T] go to
  // the model (RoPE restarting per packed document, block-diagonal attention).
  PipelineSchedule(model::CausalLM& model, parallel::Communicator* pipeline, Device device,
                   bool document_positions = false);

  // One step's forward and backward over `micro_batches` batches from `next_batch` (called once per
  // micro-batch, in order, on every stage). `seed_scale(i)` is the factor micro-batch i's loss is
  // scaled by before its backward (1/m; the trainer's test hooks may return NaN there).
  // `lm_weight[i]` (empty: all 1) weighs micro-batch i's LM loss, in the loss it seeds and the
  // reported sums (chat data: train/chat_training.h). `enter(i)`, when given, runs before
  // micro-batch i's forward and again before its backward (1F1B interleaves micro-batches, so
  // per-micro-batch state such as FP4 stochastic-rounding seeds is set at each entry). Gradients
  // accumulate into the stage's parameters. `last_backward`, when given, watches the backward that
  // completes the step's accumulation (the last micro-batch's: parallel/grad_overlap.h).
  StageResult train(const std::function<data::Batch()>& next_batch, int64_t micro_batches,
                    const std::function<double(int64_t)>& seed_scale, const std::vector<double>& lm_weight = {},
                    const std::function<void(int64_t)>& enter = {}, BackwardObserver* last_backward = nullptr);

  // Forward only (evaluation, no tape) over `batches` batches, on the last stage ({0, 0} on the
  // others): the sum over batches of each batch's mean next-token loss times its loss tokens, and
  // the loss tokens. Their ratio is the mean over loss tokens whatever the batching (chat windows
  // carry different numbers of loss tokens).
  struct EvalSum {
    double loss_sum = 0;
    int64_t tokens = 0;
  };
  EvalSum evaluate(const std::function<data::Batch()>& next_batch, int64_t batches);

 private:
  struct InFlight;

  Tensor recv_forward(const data::Batch& shape_of);
  Tensor send_forward_recv_backward(const Tensor& out);
  Tensor send_backward_recv_forward(const Tensor& grad_in, const data::Batch& shape_of);
  Tensor recv_backward(const Tensor& like);
  void send_forward(const Tensor& out);
  void send_backward(const Tensor& grad_in);
  void transfer(const std::vector<parallel::PeerTransfer>& transfers);
  Tensor hidden_buffer(const data::Batch& b) const;
  Tensor positions_of(const data::Batch& b) const;

  model::CausalLM& model_;
  parallel::Communicator* pipeline_;
  Device device_;
  bool document_positions_ = false;
  int stage_ = 0, stages_ = 1;
  double wait_s_ = 0;
};

}  // namespace daedalus::train
