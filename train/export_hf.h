// Export to HuggingFace format: config.json (model_type deepseek_v3) and model.safetensors with
// per-expert names, written without Python, loadable by transformers' DeepseekV3ForCausalLM
// (docs/hf-parity.md shows the check).
//
// config.json carries every `model:` field plus what HF needs to compute the same function:
// num_key_value_heads = num_attention_heads (HF's default is 128), no head_dim (it would override
// the rope dim), rope_scaling null and rope_interleave true (plain RoPE on interleaved pairs),
// floats written as floats (HF's config class rejects 1 for a float field).
// model.safetensors: every parameter under its HF name; the stacked routed experts unstacked into
// model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight; the MTP modules under
// model.layers.{num_hidden_layers + k}.* as DeepSeek-V3's released checkpoint names them (HF's
// forward skips them).
#pragma once

#include <string>

#include "model/causal_lm.h"
#include "train/safetensors.h"

namespace daedalus::train {

// config.json text for `config`.
std::string hf_config_json(const model::ModelConfig& config);

// The tensors of model.safetensors, converted to `dtype` (fp32 or bf16). The store must hold
// every routed expert (expert-parallel runs gather the slices first).
NamedTensors hf_tensors(const model::ParameterStore& store, DType dtype);

// Writes DIR/config.json and DIR/model.safetensors (creating DIR). With mxfp4_experts the routed
// experts are written in MXFP4 (train/export_mxfp4.h: the layout vLLM loads, with its
// quantization_config in config.json) and everything else in `dtype`.
void export_hf(const model::ParameterStore& store, const model::ModelConfig& config, const std::string& dir,
               DType dtype = DType::bf16, bool mxfp4_experts = false);

}  // namespace daedalus::train
