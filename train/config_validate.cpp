// RunConfig's checks beyond what each key's type allows (see config.h): ranges, and the keys that
// constrain one another. Messages start with the key so that parse_config can blame a --set.
#include "train/config.h"

#include "autograd/check.h"
#include "model/stages.h"
#include "train/config_keys.h"

namespace daedalus::train {

using config_keys::kFormats;

void PrecisionConfig::validate() const {
  DAEDALUS_CHECK(recipe.amax_history_len >= 1, "precision.amax_history_len: must be >= 1, got {}",
                 recipe.amax_history_len);
  DAEDALUS_CHECK(recipe.scale.margin >= 0 && recipe.scale.margin <= 64, "precision.margin: must be in [0, 64], got {}",
                 recipe.scale.margin);
  DAEDALUS_CHECK(stats_every >= 0, "precision.stats_every: must be >= 0 (0 = off), got {}", stats_every);
  const fp8::Accumulator& a = recipe.accumulator;
  DAEDALUS_CHECK(a.mantissa_bits >= 0 && a.mantissa_bits <= 23,
                 "precision.accumulator.mantissa_bits: must be in [1, 23] (accumulator: exact is full FP32), got {}",
                 a.mantissa_bits);
  DAEDALUS_CHECK(a.promote_every >= 0, "precision.accumulator.promote_every: must be >= 0 (0 = never), got {}",
                 a.promote_every);
  DAEDALUS_CHECK(a.chunk >= 1 && a.chunk <= 4096, "precision.accumulator.chunk: must be in [1, 4096], got {}", a.chunk);
  DAEDALUS_CHECK(a.mantissa_bits > 0 || a.promote_every == 0,
                 "precision.accumulator.promote_every: {} needs a limited accumulator (mantissa_bits > 0)",
                 a.promote_every);
  for (size_t i = 0; i < overrides.size(); ++i) {
    DAEDALUS_CHECK(!overrides[i].match.empty(), "precision.overrides[{}].match: must not be empty", i);
  }
  const bool fp4 = recipe.is_fp4() || recipe.kind == fp8::RecipeKind::fp4_experts ||
                   std::any_of(overrides.begin(), overrides.end(), [](const fp8::RecipeOverride& o) {
                     return o.recipe == fp8::RecipeKind::nvfp4 || o.recipe == fp8::RecipeKind::mxfp4 ||
                            o.recipe == fp8::RecipeKind::fp4_experts;
                   });
  DAEDALUS_CHECK(!fp4 || a.mantissa_bits == 0,
                 "precision.accumulator: the FP4 recipes emulate exact FP32 accumulation only (mantissa_bits {})",
                 a.mantissa_bits);
}

void TrainConfig::validate() const {
  for (auto [key, value] : {std::pair<const char*, int64_t>{"steps", steps},
                            {"micro_batch_size", micro_batch_size},
                            {"seq_len", seq_len},
                            {"grad_accum_steps", grad_accum_steps},
                            {"log_every", log_every},
                            {"eval_batches", eval_batches}}) {
    DAEDALUS_CHECK(value > 0, "train.{}: must be positive, got {}", key, value);
  }
  DAEDALUS_CHECK(eval_every >= 0, "train.eval_every: must be >= 0 (0 = no evaluation), got {}", eval_every);
  DAEDALUS_CHECK(max_skipped_steps >= 0, "train.max_skipped_steps: must be >= 0, got {}", max_skipped_steps);
  DAEDALUS_CHECK(!stop_after || *stop_after > 0, "train.stop_after: must be positive or null, got {}",
                 stop_after.value_or(0));
  DAEDALUS_CHECK(!time_limit_min || (std::isfinite(*time_limit_min) && *time_limit_min > 0),
                 "train.time_limit_min: must be a positive number of minutes or null, got {}",
                 time_limit_min.value_or(0));
}

void DataConfig::validate() const {
  if (format != DataFormat::synthetic) {
    DAEDALUS_CHECK(!train.empty(), "data.train: no training files given (data.format is {})",
                   kFormats[size_t(format)].second);
  }
  for (const auto* list : {&train, &val}) {
    for (const std::string& f : *list) {
      DAEDALUS_CHECK(!f.empty(), "data.{}: an empty file name", list == &train ? "train" : "val");
    }
  }
  DAEDALUS_CHECK(format != DataFormat::chat || !tokenizer.empty(),
                 "data.tokenizer: data.format chat needs a tokenizer.json (its special tokens render the chats)");
  DAEDALUS_CHECK(!document_mask || format == DataFormat::chat,
                 "data.document_mask: true needs data.format chat (packed samples), got data.format {}",
                 kFormats[size_t(format)].second);
  const data::SyntheticSpec& s = synthetic;
  DAEDALUS_CHECK(s.vocab >= 2, "data.synthetic.vocab: must be >= 2, got {}", s.vocab);
  DAEDALUS_CHECK(s.order >= 1 && s.order <= 3, "data.synthetic.order: must be in [1, 3], got {}", s.order);
  DAEDALUS_CHECK(s.branching >= 1 && s.branching <= s.vocab,
                 "data.synthetic.branching: must be in [1, data.synthetic.vocab = {}], got {}", s.vocab, s.branching);
  DAEDALUS_CHECK(s.tokens >= 1, "data.synthetic.tokens: must be positive, got {}", s.tokens);
}

void ParallelConfig::validate() const {
  DAEDALUS_CHECK(expert_parallel >= 1, "parallel.expert_parallel: must be >= 1, got {}", expert_parallel);
  DAEDALUS_CHECK(pipeline_parallel >= 1, "parallel.pipeline_parallel: must be >= 1, got {}", pipeline_parallel);
  DAEDALUS_CHECK(pipeline_layers.empty() || int64_t(pipeline_layers.size()) == pipeline_parallel,
                 "parallel.pipeline_layers: {} entries for parallel.pipeline_parallel = {} stages",
                 pipeline_layers.size(), pipeline_parallel);
  DAEDALUS_CHECK(std::isfinite(timeout_s) && timeout_s > 0, "parallel.timeout_s: must be a positive number, got {}",
                 timeout_s);
  DAEDALUS_CHECK(zero_stage == 0 || zero_stage == 1, "parallel.zero_stage: expected 0 or 1, got {}", zero_stage);
  DAEDALUS_CHECK(std::isfinite(grad_bucket_mb) && grad_bucket_mb > 0 && grad_bucket_mb <= 4096,
                 "parallel.grad_bucket_mb: must be a number of MiB in (0, 4096], got {}", grad_bucket_mb);
}

void CheckpointConfig::validate() const {
  DAEDALUS_CHECK(every >= 0, "checkpoint.every: must be >= 0 (0 = only at the end), got {}", every);
  DAEDALUS_CHECK(keep_last >= 0, "checkpoint.keep_last: must be >= 0 (0 = keep all), got {}", keep_last);
  DAEDALUS_CHECK(!resume.empty(), "checkpoint.resume: expected auto, none or a checkpoint file, got \"\"");
  DAEDALUS_CHECK(!init_from || !init_from->empty(),
                 "checkpoint.init_from: expected a checkpoint file or null, got \"\"");
  DAEDALUS_CHECK(!init_from || resume == "auto" || resume == "none",
                 "checkpoint.init_from: {} loads weights only, but checkpoint.resume = {} restores a full state; "
                 "set one of them",
                 *init_from, resume);
}

void RunConfig::validate() const {
  DAEDALUS_CHECK(!run.name.empty(), "run.name: must not be empty");
  DAEDALUS_CHECK(!run.dir.empty(), "run.dir: must not be empty");
  DAEDALUS_CHECK(run.seed >= 0, "run.seed: must be >= 0, got {}", run.seed);
  model.validate();
  moe.validate();
  mtp.validate();
  precision.validate();
  optimizer.validate();
  train.validate();
  if (train.recompute != model::Recompute::none) {
    // A recomputed forward quantizes again: delayed scaling would push a second amax per step.
    bool delayed = precision.recipe.delayed();
    for (const fp8::RecipeOverride& o : precision.overrides) delayed |= o.recipe == fp8::RecipeKind::fp8_tensor_delayed;
    DAEDALUS_CHECK(!delayed,
                   "train.recompute: {} reruns forwards in backward, which would advance fp8_tensor_delayed's amax "
                   "histories twice; use none, or a current-scaling recipe",
                   train.recompute == model::Recompute::full ? "full" : "selective");
  }
  schedule.validate(train.steps);
  data.validate();
  parallel.validate();
  checkpoint.validate();

  // Across sections.
  const auto fp4_recipe = [](fp8::RecipeKind k) {
    return k == fp8::RecipeKind::nvfp4 || k == fp8::RecipeKind::mxfp4 || k == fp8::RecipeKind::fp4_experts;
  };
  DAEDALUS_CHECK(train.device != DeviceChoice::cuda || !fp4_recipe(precision.recipe.kind),
                 "precision.recipe: {} is emulated on the CPU only (train.device cpu or auto; docs/gpu.md)",
                 fp8::recipe_name(precision.recipe.kind));
  DAEDALUS_CHECK(train.seq_len <= model.max_position_embeddings,
                 "train.seq_len: {} exceeds model.max_position_embeddings = {}", train.seq_len,
                 model.max_position_embeddings);
  if (model.n_routed_experts > 0) {
    DAEDALUS_CHECK(model.n_routed_experts % parallel.expert_parallel == 0,
                   "model.n_routed_experts: {} experts do not divide over parallel.expert_parallel = {} ranks",
                   model.n_routed_experts, parallel.expert_parallel);
  } else {
    DAEDALUS_CHECK(parallel.expert_parallel == 1,
                   "parallel.expert_parallel: {}, but the model has no routed experts (model.n_routed_experts = 0)",
                   parallel.expert_parallel);
  }
  // The stage split: the given one must cover the layers; either must give each stage a layer.
  model::check_stage_layers(parallel.pipeline_layers, parallel.pipeline_parallel, model.num_hidden_layers,
                            "parallel.pipeline_layers");
  if (data.format == DataFormat::synthetic) {
    DAEDALUS_CHECK(data.synthetic.vocab <= model.vocab_size,
                   "data.synthetic.vocab: {} tokens, but model.vocab_size is {}", data.synthetic.vocab,
                   model.vocab_size);
  }
  if (data.format == DataFormat::text && data.tokenizer.empty()) {
    DAEDALUS_CHECK(model.vocab_size >= 256,
                   "model.vocab_size: {}, but data.format text uses the byte-level tokenizer (256 tokens)",
                   model.vocab_size);
  }
}

void RunConfig::validate(int world_size) const {
  validate();
  DAEDALUS_CHECK(world_size >= 1, "world size must be >= 1, got {}", world_size);
  DAEDALUS_CHECK(world_size % parallel.expert_parallel == 0,
                 "parallel.expert_parallel: {} does not divide the world size {} (world = expert_parallel x replicas)",
                 parallel.expert_parallel, world_size);
  DAEDALUS_CHECK(world_size % (parallel.expert_parallel * parallel.pipeline_parallel) == 0,
                 "parallel.pipeline_parallel: {} stages x parallel.expert_parallel: {} do not divide the world size {} "
                 "(world = pipeline_parallel x replicas x expert_parallel)",
                 parallel.pipeline_parallel, parallel.expert_parallel, world_size);
}

}  // namespace daedalus::train
