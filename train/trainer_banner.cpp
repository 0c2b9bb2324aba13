// The trainer's start-up banner: the model, precision, layout, optimizer state, data and batch of
// the run, as rank 0 prints it before step 1 (docs/training.md shows one).
#include <omp.h>

#include <algorithm>

#include "model/param_count.h"
#include "train/chat_training.h"
#include "train/trainer.h"

namespace daedalus::train {

std::string Trainer::banner() const {
  const model::ModelConfig& c = config_.model;
  const model::ParameterCounts p = model::count_parameters(c);
  const int64_t moe_layers =
      c.n_routed_experts > 0 ? c.num_hidden_layers - std::min(c.first_k_dense_replace, c.num_hidden_layers) : 0;
  const int world = groups_.world->size(), data_ranks = groups_.stage->size();
  const int64_t tokens_per_step =
      config_.train.micro_batch_size * config_.train.seq_len * config_.train.grad_accum_steps * data_ranks;
  std::string overrides;
  for (const fp8::RecipeOverride& o : config_.precision.overrides)
    overrides += fmt::format("{}{} -> {}", overrides.empty() ? "" : ", ", o.match, fp8::recipe_name(o.recipe));
  std::string s = fmt::format("daedalus train: {} -> {}\n", config_.run.name, config_.run.dir);
  s += fmt::format("  model      {} layers ({} dense, {} MoE), hidden {}, {} heads, MLA q_lora {} kv_lora {}",
                   c.num_hidden_layers, c.num_hidden_layers - moe_layers, moe_layers, c.hidden_size,
                   c.num_attention_heads, c.q_lora_rank ? std::to_string(*c.q_lora_rank) : "none", c.kv_lora_rank);
  if (c.n_routed_experts > 0)
    s += fmt::format(", {} routed + {} shared experts, top-{}", c.n_routed_experts, c.n_shared_experts,
                     c.num_experts_per_tok);
  if (c.num_nextn_predict_layers > 0) s += fmt::format(", MTP depth {}", c.num_nextn_predict_layers);
  s += fmt::format("\n  params     {} total, {} activated per token, + {} MTP\n", format_count(double(p.total)),
                   format_count(double(p.activated)), format_count(double(p.mtp_trained)));
  s += fmt::format("  precision  {}{}\n", fp8::recipe_name(config_.precision.recipe.kind),
                   overrides.empty() ? "" : " (overrides: " + overrides + ")");
  s += fmt::format("  parallel   world {}, expert parallel {}, {} replica(s), ZeRO stage {}", world, groups_.ep_size,
                   data_ranks / groups_.ep_size, config_.parallel.zero_stage);
  if (groups_.pp_size > 1) {
    std::string split;
    for (int64_t n : stage_layers(config_)) split += fmt::format("{}{}", split.empty() ? "" : ", ", n);
    s += fmt::format(", pipeline {} stages (layers {}; 1F1B, {} micro-batches)", groups_.pp_size, split,
                     config_.train.grad_accum_steps);
  }
  s += "\n";
  s += fmt::format("  optimizer  AdamW, {} moments: {} per rank\n", dtype_name(config_.optimizer.state_dtype),
                   format_bytes(double(optimizer_->state_bytes())));
  const auto packed = [&](const data::PackedWindows& w, const std::vector<std::string>& files) {
    return describe_chat(w, files, config_.data.document_mask);
  };
  s += fmt::format("  data       {}\n", train_packed_ ? packed(*train_packed_, config_.data.train)
                                        : train_loader_
                                            ? (train_view_ ? train_view_->describe() : train_source_->describe())
                                            : "");
  if (val_source_) s += fmt::format("  validation {}\n", val_source_->describe());
  if (val_packed_) s += fmt::format("  validation {}\n", packed(*val_packed_, config_.data.val));
  s += fmt::format("  batch      {} x {} tokens x {} accum x {} rank(s) = {} tokens/step, {} steps\n",
                   config_.train.micro_batch_size, config_.train.seq_len, config_.train.grad_accum_steps, data_ranks,
                   tokens_per_step, config_.train.steps);
  if (device_.is_cuda()) {
    s += fmt::format("  device     {} ({} host threads)", device_.str(), omp_get_max_threads());
  } else {
    s += fmt::format("  device     {} ({} threads)", device_.str(), omp_get_max_threads());
  }
  if (const std::string w = config_.schedule.warning(config_.train.steps); !w.empty()) s += "\n  warning    " + w;
  return s;
}

}  // namespace daedalus::train
