// HuggingFace export: config.json, generation_config.json and model.safetensors (layout in export_hf.h).
#include "train/export_hf.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/check.h"
#include "train/hf_fp8.h"
#include "train/export_mxfp4.h"

namespace daedalus::train {

namespace {

std::string torch_dtype_name(DType dtype) { return dtype == DType::f32 ? "float32" : "bfloat16"; }

// DeepSeek's release quantizes the projections of attention, dense MLPs, shared and routed experts;
// the router, norms, embedding, head and the MTP's eh_proj stay in high precision.
bool quantized_in_fp8(const std::string& name, const Tensor& t) {
  return t.dim() == 2 && name.ends_with("_proj.weight") && !name.ends_with("eh_proj.weight");
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  DAEDALUS_CHECK(f.good(), "export-hf: cannot write {}", path);
}

}  // namespace

std::string hf_config_json(const model::ModelConfig& c, const HfExportOptions& o) {
  DAEDALUS_CHECK(c.scoring_func == "sigmoid",
                 "model.scoring_func: {} cannot be exported: HF's DeepseekV3 router is sigmoid only (it would "
                 "silently compute another model)",
                 c.scoring_func);
  if (c.n_routed_experts > 0)
    DAEDALUS_CHECK(c.n_routed_experts / c.n_group >= 2,
                   "model.n_group: {} experts in {} groups cannot be exported: HF's DeepseekV3 scores a group by its "
                   "top-2 experts and needs at least 2 per group",
                   c.n_routed_experts, c.n_group);
  nlohmann::ordered_json j;
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  j["model_type"] = "deepseek_v3";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  // HF builds an MoE in every layer from first_k_dense_replace on: a dense model says so by that.
  j["first_k_dense_replace"] = c.n_routed_experts > 0 ? c.first_k_dense_replace : c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_attention_heads;
  j["q_lora_rank"] = c.q_lora_rank ? nlohmann::ordered_json(*c.q_lora_rank) : nlohmann::ordered_json(nullptr);
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = c.n_shared_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["scoring_func"] = c.scoring_func;
  j["topk_method"] = "noaux_tc";
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling) {
    // DeepSeek's release spelling (transformers reads it as rope_parameters): type, factor, ...
    const model::RopeScaling& y = *c.rope_scaling;
    nlohmann::ordered_json r;
    r["type"] = "yarn";
    r["factor"] = y.factor;
    r["original_max_position_embeddings"] = y.original_max_position_embeddings;
    r["beta_fast"] = y.beta_fast;
    r["beta_slow"] = y.beta_slow;
    if (y.mscale != 0) r["mscale"] = y.mscale;  // 0: not given, as HF's absent key
    r["mscale_all_dim"] = y.mscale_all_dim;
    if (y.attention_factor) r["attention_factor"] = *y.attention_factor;
    if (!y.truncate) r["truncate"] = false;
    j["rope_scaling"] = r;
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["rope_interleave"] = true;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["torch_dtype"] = torch_dtype_name(o.fp8 ? DType::bf16 : o.dtype);
  if (o.fp8) {
    nlohmann::ordered_json q;
    q["activation_scheme"] = "dynamic";
    q["fmt"] = "e4m3";
    q["quant_method"] = "fp8";
    q["weight_block_size"] = {o.block, o.block};
    if (o.ue8m0) q["scale_fmt"] = "ue8m0";
    j["quantization_config"] = q;
  }
  // nlohmann writes a double with an integral value as "2.0": floats stay floats for HF.
  return j.dump(2) + "\n";
}

std::string hf_generation_config_json(const model::ModelConfig& c) {
  nlohmann::ordered_json j;
  j["_from_model_config"] = true;
  j["do_sample"] = true;
  j["temperature"] = 0.8;  // daedalus generate's defaults: temperature 0.8, no top-k, no top-p
  j["top_k"] = 0;
  j["top_p"] = 1.0;
  j["max_length"] = c.max_position_embeddings;
  return j.dump(2) + "\n";
}

NamedTensors hf_tensors(const model::ParameterStore& store, const model::ModelConfig& config,
                        const HfExportOptions& o) {
  DAEDALUS_CHECK(o.dtype == DType::f32 || o.dtype == DType::bf16, "export-hf: dtype {} (expected fp32 or bf16)",
                 dtype_name(o.dtype));
  const DType plain = o.fp8 ? DType::bf16 : o.dtype;
  NamedTensors out;
  const auto emit = [&](const std::string& name, const Tensor& t) {
    if (o.fp8 && quantized_in_fp8(name, t)) {
      Fp8Blocks b = quantize_fp8_blocks(t, o.block, o.block, o.ue8m0);
      out.emplace_back(name, std::move(b.codes));
      out.emplace_back(name + "_scale_inv", std::move(b.scale_inv));
      return;
    }
    out.emplace_back(name, t.to(Device::cpu()).to(plain).contiguous());
  };
  for (const model::Parameter& p : store.all()) {
    const Tensor& v = p.var.value();
    if (!p.expert) {
      emit(p.name, v);
      continue;
    }
    DAEDALUS_CHECK(p.expert_offset == 0 && v.size(0) == p.num_experts,
                   "export-hf: {} holds experts [{}, {}) of {}: gather every expert before exporting", p.name,
                   p.expert_offset, p.expert_offset + v.size(0), p.num_experts);
    // model.layers.L.mlp.experts.gate_proj.weight -> model.layers.L.mlp.experts.E.gate_proj.weight
    const std::string marker = ".experts.";
    const size_t at = p.name.find(marker);
    DAEDALUS_CHECK(at != std::string::npos, "export-hf: expert tensor {} lacks '.experts.'", p.name);
    const std::string head = p.name.substr(0, at + marker.size()), tail = p.name.substr(at + marker.size());
    for (int64_t e = 0; e < v.size(0); ++e) emit(head + std::to_string(e) + "." + tail, v.select(0, e));
  }
  // DeepSeek's release stores each MTP layer's copies of the shared embedding and head.
  const model::Parameter* embed = store.find("model.embed_tokens.weight");
  const model::Parameter* head =
      store.find(config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
  for (int64_t k = 0; k < config.num_nextn_predict_layers && embed != nullptr && head != nullptr; ++k) {
    const std::string module = fmt::format("model.layers.{}.", config.num_hidden_layers + k);
    emit(module + "embed_tokens.weight", embed->var.value());
    emit(module + "shared_head.head.weight", head->var.value());
  }
  return out;
}

std::vector<std::string> copy_tokenizer_files(const std::string& tokenizer_json, const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> written;
  const fs::path config = fs::path(tokenizer_json).parent_path() / "tokenizer_config.json";
  for (const auto& [from, name] : {std::pair{fs::path(tokenizer_json), "tokenizer.json"},
                                   std::pair{config, "tokenizer_config.json"}}) {
    std::error_code ec;
    if (name == std::string("tokenizer_config.json") && !fs::is_regular_file(from, ec)) continue;  // optional
    DAEDALUS_CHECK(fs::is_regular_file(from, ec), "data.tokenizer: {}: not a readable file (export-hf copies it)",
                   from.string());
    fs::copy_file(from, fs::path(dir) / name, fs::copy_options::overwrite_existing, ec);
    DAEDALUS_CHECK(!ec, "export-hf: cannot copy {} to {}: {}", from.string(), dir, ec.message());
    written.emplace_back(name);
  }
  return written;
}

void export_hf(const model::ParameterStore& store, const model::ModelConfig& config, const std::string& dir,
               const HfExportOptions& options) {
  DAEDALUS_CHECK(!(options.fp8 && options.mxfp4_experts),
                 "export-hf: --format fp8 and --experts mxfp4 together: choose one format for the experts");
  std::string config_text = hf_config_json(config, options);  // refusals before anything is written
  if (options.mxfp4_experts) {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(config_text);
    j["quantization_config"] = quark_mxfp4_config(store);
    config_text = j.dump(2) + "\n";
  }
  NamedTensors tensors =
      options.mxfp4_experts ? hf_tensors_mxfp4_experts(store, config, options.dtype) : hf_tensors(store, config, options);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  DAEDALUS_CHECK(!ec, "export-hf: cannot create {}: {}", dir, ec.message());
  write_text(dir + "/config.json", config_text);
  write_text(dir + "/generation_config.json", hf_generation_config_json(config));
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace daedalus::train
