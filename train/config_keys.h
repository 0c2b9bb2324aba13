// The config's keys, each listed once: the names YAML spells the enumerated values with, and
// one visit_*() template per section that walks the section's keys with a visitor v:
//   v("key", value)                 a scalar, string, list or optional
//   v.choice("key", value, names)   an enumerated value and its spellings
//   v.map("key", fn)                a nested map, fn(sub-visitor)
//   v.accumulator / v.rope_scaling / v.overrides   the three keys with a shape of their own
// config.cpp's Reader (YAML -> struct), Writer (struct -> YAML) and KeyLister (the paths `--set`
// may name) are the visitors; config_validate.cpp uses the names in its messages. Private to
// those two files (not part of train/config.h's interface).
#pragma once

#include <string_view>
#include <utility>
#include <vector>

#include "train/config.h"

namespace daedalus::train::config_keys {

// ---- names of the enumerated values, as YAML spells them --------------------------------------

template <typename E>
using Names = std::vector<std::pair<E, std::string_view>>;

const Names<OnNonfinite> kOnNonfinite{{OnNonfinite::skip, "skip"}, {OnNonfinite::abort, "abort"}};
const Names<DeviceChoice> kDevices{
    {DeviceChoice::automatic, "auto"}, {DeviceChoice::cpu, "cpu"}, {DeviceChoice::cuda, "cuda"}};
const Names<DataFormat> kFormats{{DataFormat::text, "text"},
                                 {DataFormat::llmc, "llmc"},
                                 {DataFormat::hdf5, "hdf5"},
                                 {DataFormat::synthetic, "synthetic"},
                                 {DataFormat::chat, "chat"}};
const Names<Backend> kBackends{{Backend::automatic, "auto"}, {Backend::nccl, "nccl"}, {Backend::mpi, "mpi"}};
const Names<parallel::DispatchDtype> kDispatch{{parallel::DispatchDtype::fp8, "fp8"},
                                               {parallel::DispatchDtype::bf16, "bf16"},
                                               {parallel::DispatchDtype::fp32, "fp32"}};
const Names<model::Recompute> kRecompute{
    {model::Recompute::none, "none"}, {model::Recompute::selective, "selective"}, {model::Recompute::full, "full"}};
const Names<Progress> kProgress{
    {Progress::automatic, "auto"}, {Progress::always, "always"}, {Progress::never, "never"}};
const Names<DType> kStateDtypes{{DType::f32, "fp32"}, {DType::bf16, "bf16"}};
const Names<fp8::Fp8Formats> kFp8Formats{
    {fp8::Fp8Formats::recipe_default, "auto"}, {fp8::Fp8Formats::e4m3, "e4m3"}, {fp8::Fp8Formats::hybrid, "hybrid"}};
const Names<bool> kFp8OrHigh{{true, "fp8"}, {false, "high"}};

inline const Names<fp8::RecipeKind>& recipe_names() {
  static const Names<fp8::RecipeKind> names = [] {
    Names<fp8::RecipeKind> n;
    for (int k = 0; k <= int(fp8::RecipeKind::fp4_experts); ++k) {
      n.emplace_back(fp8::RecipeKind(k), fp8::recipe_name(fp8::RecipeKind(k)));
    }
    return n;
  }();
  return names;
}

// ---- the sections: each key once ----------------------------------------------------------------
// C is the section struct, const for the Writer and KeyLister.

template <typename V, typename C>
void visit_run(V& v, C& c) {
  // dir: null (or absent) means runs/<name>, filled in after reading.
  std::optional<std::string> dir;
  if (!c.dir.empty()) dir = c.dir;
  v("name", c.name);
  v("dir", dir);
  v("seed", c.seed);
  if constexpr (!std::is_const_v<C>) c.dir = dir.value_or("");
}

template <typename V, typename C>
void visit_model(V& v, C& c) {
  v("vocab_size", c.vocab_size);
  v("hidden_size", c.hidden_size);
  v("intermediate_size", c.intermediate_size);
  v("moe_intermediate_size", c.moe_intermediate_size);
  v("num_hidden_layers", c.num_hidden_layers);
  v("first_k_dense_replace", c.first_k_dense_replace);
  v("num_attention_heads", c.num_attention_heads);
  v("q_lora_rank", c.q_lora_rank);
  v("kv_lora_rank", c.kv_lora_rank);
  v("qk_nope_head_dim", c.qk_nope_head_dim);
  v("qk_rope_head_dim", c.qk_rope_head_dim);
  v("v_head_dim", c.v_head_dim);
  v("n_routed_experts", c.n_routed_experts);
  v("n_shared_experts", c.n_shared_experts);
  v("num_experts_per_tok", c.num_experts_per_tok);
  v("n_group", c.n_group);
  v("topk_group", c.topk_group);
  v("routed_scaling_factor", c.routed_scaling_factor);
  v("norm_topk_prob", c.norm_topk_prob);
  v("scoring_func", c.scoring_func);
  v("rope_theta", c.rope_theta);
  v("rms_norm_eps", c.rms_norm_eps);
  v("max_position_embeddings", c.max_position_embeddings);
  v("tie_word_embeddings", c.tie_word_embeddings);
  v("initializer_range", c.initializer_range);
  v("num_nextn_predict_layers", c.num_nextn_predict_layers);
  v.rope_scaling("rope_scaling", c.rope_scaling);
}

template <typename V, typename C>
void visit_rope_scaling(V& v, C& c) {
  v("factor", c.factor);
  v("original_max_position_embeddings", c.original_max_position_embeddings);
  v("beta_fast", c.beta_fast);
  v("beta_slow", c.beta_slow);
  v("mscale", c.mscale);
  v("mscale_all_dim", c.mscale_all_dim);
  v("attention_factor", c.attention_factor);
  v("truncate", c.truncate);
}

template <typename V, typename C>
void visit_precision(V& v, C& c) {
  v.choice("recipe", c.recipe.kind, recipe_names());
  v.choice("fp8_format", c.recipe.formats, kFp8Formats);
  v("power_of_two_scales", c.recipe.scale.power_of_two);
  v("amax_history_len", c.recipe.amax_history_len);
  v("margin", c.recipe.scale.margin);
  v.choice("wgrad", c.recipe.wgrad_fp8, kFp8OrHigh);
  v.choice("cache_activations", c.recipe.cache_fp8, kFp8OrHigh);
  v.accumulator("accumulator", c.recipe.accumulator);
  v("stats_every", c.stats_every);
  v.overrides("overrides", c.overrides);
  v.map("fp4", [&](V& s) {  // the NVFP4 paper's stabilisers (nvfp4 and mxfp4)
    s("weight_2d", c.recipe.fp4.weight_2d);
    s("hadamard", c.recipe.fp4.hadamard);
    s("stochastic_rounding", c.recipe.fp4.stochastic_rounding);
  });
}

template <typename V, typename C>
void visit_all(V& v, C& c) {
  v.map("run", [&](V& s) { visit_run(s, c.run); });
  v.map("model", [&](V& s) { visit_model(s, c.model); });
  v.map("moe", [&](V& s) {
    s("bias_update_rate", c.moe.bias_update_rate);
    s("seq_aux_loss_alpha", c.moe.seq_aux_loss_alpha);
    s("capacity_factor", c.moe.capacity_factor);
  });
  v.map("mtp", [&](V& s) { s("loss_weight", c.mtp.loss_weight); });
  v.map("precision", [&](V& s) { visit_precision(s, c.precision); });
  v.map("optimizer", [&](V& s) {
    s("lr", c.optimizer.lr);
    s("betas", c.optimizer.betas);
    s("eps", c.optimizer.eps);
    s("weight_decay", c.optimizer.weight_decay);
    s("grad_clip", c.optimizer.grad_clip);
    s.choice("state_dtype", c.optimizer.state_dtype, kStateDtypes);
  });
  v.map("schedule", [&](V& s) {
    s("type", c.schedule.type);
    s("warmup_steps", c.schedule.warmup_steps);
    s("min_lr_ratio", c.schedule.min_lr_ratio);
    s("decay_fraction", c.schedule.decay_fraction);
  });
  v.map("train", [&](V& s) {
    s("steps", c.train.steps);
    s("micro_batch_size", c.train.micro_batch_size);
    s("seq_len", c.train.seq_len);
    s("grad_accum_steps", c.train.grad_accum_steps);
    s("log_every", c.train.log_every);
    s("eval_every", c.train.eval_every);
    s("eval_batches", c.train.eval_batches);
    s.choice("on_nonfinite", c.train.on_nonfinite, kOnNonfinite);
    s("max_skipped_steps", c.train.max_skipped_steps);
    s.choice("device", c.train.device, kDevices);
    s("stop_after", c.train.stop_after);
    s("time_limit_min", c.train.time_limit_min);
    s.choice("recompute", c.train.recompute, kRecompute);
  });
  v.map("data", [&](V& s) {
    s.choice("format", c.data.format, kFormats);
    s("train", c.data.train);
    s("val", c.data.val);
    s("tokenizer", c.data.tokenizer);
    s("document_mask", c.data.document_mask);
    s.map("synthetic", [&](V& g) {
      g("vocab", c.data.synthetic.vocab);
      g("order", c.data.synthetic.order);
      g("branching", c.data.synthetic.branching);
      g("tokens", c.data.synthetic.tokens);
      g("seed", c.data.synthetic.seed);
    });
  });
  v.map("parallel", [&](V& s) {
    s("expert_parallel", c.parallel.expert_parallel);
    s("pipeline_parallel", c.parallel.pipeline_parallel);
    s("pipeline_layers", c.parallel.pipeline_layers);
    s.choice("backend", c.parallel.backend, kBackends);
    s.choice("dispatch_dtype", c.parallel.dispatch_dtype, kDispatch);
    s("timeout_s", c.parallel.timeout_s);
    s("zero_stage", c.parallel.zero_stage);
    s("overlap_grad_reduce", c.parallel.overlap_grad_reduce);
    s("grad_bucket_mb", c.parallel.grad_bucket_mb);
  });
  v.map("checkpoint", [&](V& s) {
    s("every", c.checkpoint.every);
    s("keep_last", c.checkpoint.keep_last);
    s("resume", c.checkpoint.resume);
    s("init_from", c.checkpoint.init_from);
    s("strict", c.checkpoint.strict);
  });
  v.map("logging", [&](V& s) {
    s.choice("progress", c.logging.progress, kProgress);
    s("jsonl", c.logging.jsonl);
  });
}

}  // namespace daedalus::train::config_keys
