// HuggingFace export: config.json and model.safetensors.
#include "train/export_hf.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/check.h"
#include "train/export_mxfp4.h"

namespace daedalus::train {

std::string hf_config_json(const model::ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  j["model_type"] = "deepseek_v3";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
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
  j["torch_dtype"] = "float32";
  // nlohmann writes a double with an integral value as "2.0": floats stay floats for HF.
  return j.dump(2) + "\n";
}

NamedTensors hf_tensors(const model::ParameterStore& store, DType dtype) {
  DAEDALUS_CHECK(dtype == DType::f32 || dtype == DType::bf16, "export-hf: dtype {} (expected fp32 or bf16)",
                 dtype_name(dtype));
  NamedTensors out;
  const auto convert = [&](const Tensor& t) { return t.to(Device::cpu()).to(dtype).contiguous(); };
  for (const model::Parameter& p : store.all()) {
    const Tensor& v = p.var.value();
    if (!p.expert) {
      out.emplace_back(p.name, convert(v));
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
    for (int64_t e = 0; e < v.size(0); ++e)
      out.emplace_back(head + std::to_string(e) + "." + tail, convert(v.select(0, e)));
  }
  return out;
}

void export_hf(const model::ParameterStore& store, const model::ModelConfig& config, const std::string& dir,
               DType dtype, bool mxfp4_experts) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  DAEDALUS_CHECK(!ec, "export-hf: cannot create {}: {}", dir, ec.message());
  const std::string config_path = dir + "/config.json";
  {
    std::ofstream f(config_path);
    if (mxfp4_experts) {
      nlohmann::ordered_json j = nlohmann::ordered_json::parse(hf_config_json(config));
      j["quantization_config"] = quark_mxfp4_config(store);
      f << j.dump(2) << "\n";
    } else {
      f << hf_config_json(config);
    }
    DAEDALUS_CHECK(f.good(), "export-hf: cannot write {}", config_path);
  }
  write_safetensors(dir + "/model.safetensors",
                    mxfp4_experts ? hf_tensors_mxfp4_experts(store, dtype) : hf_tensors(store, dtype),
                    {{"format", "pt"}});
}

}  // namespace daedalus::train
