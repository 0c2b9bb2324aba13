// The 1F1B schedule (see pipeline_schedule.h).
#include "train/pipeline_schedule.h"

#include <chrono>
#include <deque>
#include <memory>
#include <optional>

#include "autograd/nvtx.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/tape.h"

namespace daedalus::train {

namespace {

using Clock = std::chrono::steady_clock;
using Kind = parallel::PeerTransfer::Kind;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Σ of the aux losses (undefined when none).
Var sum_of(const std::vector<Var>& terms) {
  if (terms.empty()) return Var();
  Var sum = terms[0];
  for (size_t i = 1; i < terms.size(); ++i) sum = ops::add(sum, terms[i]);
  return sum;
}

}  // namespace

// One micro-batch between its forward and its backward: its tape and what backward starts from.
struct PipelineSchedule::InFlight {
  std::unique_ptr<Tape> tape = std::make_unique<Tape>();
  Var input;   // a later stage: the received hidden states (a leaf collecting their gradient)
  Var output;  // an earlier stage: the hidden states sent on
  Var aux;     // an earlier stage: Σ of its MoE aux losses (undefined when none)
  Var loss;    // the last stage: lm + λ·mtp + aux
};

PipelineSchedule::PipelineSchedule(model::CausalLM& model, parallel::Communicator* pipeline, Device device,
                                   bool document_positions)
    : model_(model), pipeline_(pipeline), device_(device), document_positions_(document_positions) {
  if (pipeline_ != nullptr) {
    stage_ = pipeline_->rank();
    stages_ = pipeline_->size();
  }
  DAEDALUS_CHECK(model_.stage().first == (stage_ == 0) && model_.stage().last == (stage_ == stages_ - 1),
                 "pipeline: rank {} of the pipeline group holds layers [{}, {}) of another stage", stage_,
                 model_.stage().begin, model_.stage().end);
}

Tensor PipelineSchedule::hidden_buffer(const data::Batch& b) const {
  return Tensor::empty({b.inputs.size(0), b.inputs.size(1), model_.options().config.hidden_size}, DType::f32, device_);
}

void PipelineSchedule::transfer(const std::vector<parallel::PeerTransfer>& transfers) {
  if (transfers.empty()) return;
  const nvtx::Range range("pipeline.p2p");
  const auto t0 = Clock::now();
  pipeline_->exchange(transfers);
  wait_s_ += seconds_since(t0);
}

Tensor PipelineSchedule::recv_forward(const data::Batch& shape_of) {
  if (stage_ == 0) return Tensor();
  Tensor x = hidden_buffer(shape_of);
  transfer({{Kind::recv, x, stage_ - 1}});
  return x;
}

void PipelineSchedule::send_forward(const Tensor& out) {
  if (stage_ == stages_ - 1) return;
  transfer({{Kind::send, out.contiguous(), stage_ + 1}});
}

Tensor PipelineSchedule::send_forward_recv_backward(const Tensor& out) {
  if (stage_ == stages_ - 1) return Tensor();
  Tensor grad = Tensor::empty(out.shape(), DType::f32, device_);
  transfer({{Kind::send, out.contiguous(), stage_ + 1}, {Kind::recv, grad, stage_ + 1}});
  return grad;
}

Tensor PipelineSchedule::recv_backward(const Tensor& like) {
  if (stage_ == stages_ - 1) return Tensor();
  Tensor grad = Tensor::empty(like.shape(), DType::f32, device_);
  transfer({{Kind::recv, grad, stage_ + 1}});
  return grad;
}

Tensor PipelineSchedule::send_backward_recv_forward(const Tensor& grad_in, const data::Batch& shape_of) {
  if (stage_ == 0) return Tensor();
  Tensor x = hidden_buffer(shape_of);
  transfer({{Kind::send, grad_in.contiguous(), stage_ - 1}, {Kind::recv, x, stage_ - 1}});
  return x;
}

void PipelineSchedule::send_backward(const Tensor& grad_in) {
  if (stage_ == 0) return;
  transfer({{Kind::send, grad_in.contiguous(), stage_ - 1}});
}

Tensor PipelineSchedule::positions_of(const data::Batch& b) const {
  // On the host for any device: RoPE builds its cos/sin table from them there.
  return document_positions_ ? b.positions.to(Device::cpu())
                             : Tensor::arange(b.inputs.size(1), DType::i64, Device::cpu());
}

StageResult PipelineSchedule::train(const std::function<data::Batch()>& next_batch, int64_t m,
                                    const std::function<double(int64_t)>& seed_scale,
                                    const std::vector<double>& lm_weight, const std::function<void(int64_t)>& enter,
                                    BackwardObserver* last_backward) {
  DAEDALUS_CHECK(m >= 1, "pipeline: {} micro-batches", m);
  DAEDALUS_CHECK(lm_weight.empty() || int64_t(lm_weight.size()) == m, "pipeline: {} loss weights for {} micro-batches",
                 lm_weight.size(), m);
  const auto t_start = Clock::now();
  wait_s_ = 0;
  StageResult result;
  const bool first = stage_ == 0, last = stage_ == stages_ - 1;
  std::deque<InFlight> in_flight;   // forwards done, backwards not yet
  std::deque<data::Batch> batches;  // read ahead so that a receive knows its micro-batch's shape
  int64_t read = 0;
  const auto peek = [&]() -> const data::Batch& {
    if (batches.empty()) {
      batches.push_back(next_batch());
      ++read;
    }
    return batches.front();
  };

  int64_t forwards = 0;
  // Forward of the next micro-batch from `x` (received hidden states; undefined on the first stage).
  const auto forward = [&](const Tensor& x) -> Tensor {
    const nvtx::Range range("forward");
    const data::Batch b = peek();
    batches.pop_front();
    if (enter) enter(forwards);
    InFlight f;
    {
      const TapeScope scope(*f.tape);
      const Tensor inputs = b.inputs.to(device_);
      const Tensor positions = positions_of(b);
      std::vector<Var> aux;
      Var h;
      if (first) {
        h = model_.embed(inputs);
      } else {
        f.input = Var(x, /*requires_grad=*/true);
        h = f.input;
      }
      h = model_.run_layers(h, positions, &aux);
      if (last) {
        const model::LmOutput out = model_.finish(h, inputs, b.targets.to(device_), positions, std::move(aux));
        // loss + (w - 1) · lm_loss: the LM term weighed by w, the rest as it is.
        const double w = lm_weight.empty() ? 1.0 : lm_weight[size_t(forwards)];
        f.loss = w == 1.0 ? out.loss : ops::add(out.loss, ops::affine(out.lm_loss, w - 1.0));
        // The losses come to the host for logging (one small copy each).
        const double lm = out.lm_loss.value().item();
        result.loss += (out.loss.value().item() + (w - 1.0) * lm) / double(m);
        result.lm_loss += w * lm / double(m);
        if (out.mtp_loss.defined()) result.mtp_loss += out.mtp_loss.value().item() / double(m), result.has_mtp = true;
        if (out.aux_loss.defined()) result.aux_loss += out.aux_loss.value().item() / double(m), result.has_aux = true;
      } else {
        f.output = h;
        f.aux = sum_of(aux);
        if (f.aux.defined()) {
          const double a = f.aux.value().item() / double(m);
          result.loss += a;
          result.aux_loss += a;
          result.has_aux = true;
        }
      }
    }
    in_flight.push_back(std::move(f));
    ++forwards;
    return last ? Tensor() : in_flight.back().output.value();
  };

  // Backward of the oldest micro-batch in flight from `grad` (the gradient of its output, received;
  // undefined on the last stage). Returns the gradient of its input (undefined on the first stage).
  int64_t backwards = 0;
  const auto backward = [&](const Tensor& grad) -> Tensor {
    const nvtx::Range range("backward");
    InFlight f = std::move(in_flight.front());
    in_flight.pop_front();
    if (enter) enter(backwards);
    const bool completes_step = backwards == m - 1;  // 1F1B runs the backwards in micro-batch order
    const double scale = seed_scale(backwards++);
    {
      const TapeScope scope(*f.tape);
      if (completes_step) f.tape->set_observer(last_backward);
      if (last) {
        f.tape->backward(ops::affine(f.loss, scale));
      } else {
        std::vector<Var> roots{f.output};
        std::vector<Tensor> seeds{grad};
        if (f.aux.defined()) {
          roots.push_back(ops::affine(f.aux, scale));
          seeds.emplace_back();  // a scalar root: seed 1
        }
        f.tape->backward(roots, seeds);
      }
    }
    if (first) return Tensor();
    const Tensor& g = f.input.grad();
    return g.defined() ? g : Tensor::zeros(f.input.shape(), DType::f32, device_);
  };

  const int64_t warmup = std::min<int64_t>(stages_ - 1 - stage_, m);
  const int64_t steady = m - warmup;
  for (int64_t i = 0; i < warmup; ++i) send_forward(forward(recv_forward(peek())));
  Tensor x = steady > 0 ? recv_forward(peek()) : Tensor();
  for (int64_t i = 0; i < steady; ++i) {
    const Tensor out = forward(x);
    const Tensor grad_in = backward(send_forward_recv_backward(out));
    if (i == steady - 1) {
      send_backward(grad_in);
    } else {
      x = send_backward_recv_forward(grad_in, peek());
    }
  }
  for (int64_t i = steady; i < m; ++i) {
    const Tensor grad_in = backward(recv_backward(in_flight.front().output.value()));
    send_backward(grad_in);
  }
  DAEDALUS_ASSERT(in_flight.empty() && batches.empty() && read == m && backwards == m);
  result.total_s = seconds_since(t_start);
  result.wait_s = wait_s_;
  result.busy_s = result.total_s - result.wait_s;
  return result;
}

PipelineSchedule::EvalSum PipelineSchedule::evaluate(const std::function<data::Batch()>& next_batch,
                                                     int64_t batches) {
  NoGradGuard no_grad;
  const bool first = stage_ == 0, last = stage_ == stages_ - 1;
  EvalSum sum;
  for (int64_t i = 0; i < batches; ++i) {
    const data::Batch b = next_batch();
    const Tensor inputs = b.inputs.to(device_);
    const Tensor positions = positions_of(b);
    Var h = first ? model_.embed(inputs) : Var(recv_forward(b));
    h = model_.run_layers(h, positions, nullptr);
    if (last) {
      const int64_t tokens = b.loss_tokens();
      if (tokens == 0) continue;  // an all-masked window: no loss to weigh (its mean is 0 / 0)
      const double mean = model_.finish(h, inputs, b.targets.to(device_), positions, {}).lm_loss.value().item();
      sum.loss_sum += mean * double(tokens);
      sum.tokens += tokens;
    } else {
      send_forward(h.value());
    }
  }
  return sum;
}

}  // namespace daedalus::train
