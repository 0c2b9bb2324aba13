// What one training step reduces across ranks after the schedule: the logged losses, router
// loads and traffic, the pipeline's bubble and memory per stage, and the global gradient norm.
// With one stage these are the data-parallel means the trainer always logged; with several, each
// stage contributes its part (the last its losses, every stage its MoE aux losses and layers).
#include <cmath>

#include "autograd/allocator.h"
#include "train/trainer.h"
#include "train/zero.h"

namespace daedalus::train {

namespace {

// MoE layers of the whole model (decoder layers, then the MTP modules'), and how many come
// before decoder layer `layer`.
int64_t moe_layers_before(const model::ModelConfig& c, int64_t layer) {
  int64_t n = 0;
  for (int64_t l = 0; l < layer; ++l) n += c.is_moe_layer(l) ? 1 : 0;
  return n;
}

}  // namespace

bool Trainer::shares_embedding() const {
  const model::ModelConfig& c = config_.model;
  return groups_.pp_size > 1 && (groups_.first_stage() || groups_.last_stage()) &&
         (c.tie_word_embeddings || c.num_nextn_predict_layers > 0);
}

double Trainer::global_grad_norm() {
  const GradSquares sq = optimizer_->grad_squares();  // the last stage's copy of a shared embedding left out
  // ZeRO-1: every rank's owned elements, each counted once over the world (every stage).
  if (zero_) return std::sqrt(sq.replicated + zero_->sum_over_world(sq.sharded));
  // Expert slices differ across the EP group: their squares add up; then every stage's share.
  const double sharded = groups_.ep_size > 1 ? parallel::sum_in_rank_order(*groups_.ep, sq.sharded) : sq.sharded;
  double total = sq.replicated + sharded;
  if (groups_.pp_size > 1) total = parallel::sum_in_rank_order(*groups_.pipeline, total);
  return std::sqrt(total);
}

void Trainer::reduce_stage_metrics(const StageResult& r, StepMetrics& m) {
  const model::ModelConfig& c = config_.model;
  const int world = groups_.world->size();
  std::vector<double> losses{r.loss, r.lm_loss, r.mtp_loss, r.aux_loss, r.has_mtp ? 1.0 : 0.0, r.has_aux ? 1.0 : 0.0};
  if (world > 1) {  // sums over every rank; each stage's ranks hold one share of the data
    Tensor t = Tensor::from_values(losses, {int64_t(losses.size())});
    groups_.world->all_reduce(t);
    losses = t.to_doubles();
    for (size_t i = 0; i < 4; ++i) losses[i] /= groups_.stage->size();
  }
  m.loss = losses[0];
  m.lm_loss = losses[1];
  if (losses[4] > 0) m.mtp_loss = losses[2];
  if (losses[5] > 0) m.moe_aux_loss = losses[3];

  // Router balance per MoE layer (loads already summed over the stage), in model order.
  std::vector<double> load;
  for (model::Moe* moe : model_->moe_layers()) load.push_back(moe->load().max_over_mean());
  // Expert-parallel traffic of this step, this rank's bytes to other ranks: forward dispatch and
  // combine apart (what parallel.dispatch_dtype changes), and their backward mirror together.
  std::vector<int64_t> traffic(3, 0);
  for (model::Moe* moe : model_->moe_layers()) {
    for (const auto& t : moe->load().traffic) {
      traffic[0] += t->dispatch_bytes;
      traffic[1] += t->combine_bytes;
      traffic[2] += t->dispatch_backward_bytes + t->combine_backward_bytes;
      m.all_to_all_ms += 1e3 * t->exchange_seconds;
    }
    moe->load().traffic.clear();
  }
  const int stages = groups_.pp_size;
  if (stages > 1) {
    // One pipeline (this rank's position in every stage): each stage fills its own slots.
    const int64_t total_moe = moe_layers_before(c, c.num_hidden_layers + c.num_nextn_predict_layers);
    const int64_t offset = moe_layers_before(c, model_->stage().begin);
    const int s = groups_.pp_stage;
    std::vector<double> values(size_t(total_moe + stages + 1), 0.0);
    for (size_t i = 0; i < load.size(); ++i) values[size_t(offset) + i] = load[i];
    values[size_t(total_moe + s)] = r.total_s > 0 ? r.wait_s / r.total_s : 0.0;  // this stage's idle share
    values.back() = m.all_to_all_ms;
    std::vector<int64_t> counts = traffic;  // + each stage's peak bytes so far this step
    counts.resize(size_t(3 + stages), 0);
    counts[size_t(3 + s)] = allocator_for(device_).stats().peak_bytes;
    Tensor v = Tensor::from_values(values, {int64_t(values.size())});
    groups_.pipeline->all_reduce(v);
    Tensor n = Tensor::from_vector(counts, {int64_t(counts.size())});
    groups_.pipeline->all_reduce(n);
    values = v.to_doubles();
    counts = n.to_vector<int64_t>();
    load.assign(values.begin(), values.begin() + total_moe);
    m.pipeline_bubble.assign(values.begin() + total_moe, values.begin() + total_moe + stages);
    m.all_to_all_ms = values.back();
    traffic.assign(counts.begin(), counts.begin() + 3);
    m.stage_mem_bytes.assign(counts.begin() + 3, counts.end());
    const double micro = double(config_.train.grad_accum_steps);
    m.pipeline_bubble_theory = double(stages - 1) / (micro + double(stages - 1));
  }
  m.expert_load_max_over_mean = load;
  m.dispatch_bytes = traffic[0];
  m.combine_bytes = traffic[1];
  m.backward_all_to_all_bytes = traffic[2];
}

}  // namespace daedalus::train
