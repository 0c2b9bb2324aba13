// Export to HuggingFace format: config.json (model_type deepseek_v3), generation_config.json and
// model.safetensors with per-expert names, written without Python, loadable by transformers'
// DeepseekV3ForCausalLM (docs/hf-parity.md shows the check) and by vLLM / SGLang.
//
// config.json carries every `model:` field plus what HF needs to compute the same function:
// num_key_value_heads = num_attention_heads (HF's default is 128), no head_dim (it would override
// the rope dim), rope_scaling (null, or model.rope_scaling's YaRN map) and rope_interleave true
// (interleaved pairs), floats written as floats (HF's config class rejects 1 for a float field),
// torch_dtype = the dtype of the written tensors. What HF's DeepseekV3 cannot express is refused
// (InputError naming the key) or translated:
//   scoring_func softmax                  refused (HF's router is sigmoid only)
//   n_routed_experts 0                    written as first_k_dense_replace = num_hidden_layers
//   fewer than 2 experts per group        refused (HF scores a group by its top-2 experts)
// model.safetensors: every parameter under its HF name; the stacked routed experts unstacked into
// model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight; the MTP modules under
// model.layers.{num_hidden_layers + k}.* as DeepSeek-V3's released checkpoint names them, with
// that release's copies of the shared embedding and head (embed_tokens, shared_head.head) (HF's
// forward skips them; vLLM's MTP loader reads them).
// Format fp8: DeepSeek's block FP8 (train/hf_fp8.h): every `*_proj.weight` of attention, MLPs and
// experts as E4M3 codes + `<name>_scale_inv` per 128x128 block (power-of-two scales and scale_fmt
// ue8m0 when `ue8m0`), everything else in bf16; config.json gains quantization_config.
#pragma once

#include <string>
#include <vector>

#include "model/causal_lm.h"
#include "train/safetensors.h"

namespace daedalus::train {

struct HfExportOptions {
  DType dtype = DType::bf16;  // fp32 | bf16: the tensors (format fp8: those not quantized)
  bool fp8 = false;           // DeepSeek's block FP8 for the projection weights
  bool ue8m0 = false;         // fp8: power-of-two scales (scale_fmt ue8m0)
  int64_t block = 128;        // fp8: block rows and columns
  bool mxfp4_experts = false;  // routed experts in MXFP4 (train/export_mxfp4.h); not with fp8
};

// config.json text for `config` (InputError for what HF cannot express).
std::string hf_config_json(const model::ModelConfig& config, const HfExportOptions& options = {});

// generation_config.json text: `daedalus generate`'s sampling defaults.
std::string hf_generation_config_json(const model::ModelConfig& config);

// The tensors of model.safetensors. The store must hold every routed expert (expert-parallel runs
// gather the slices first).
NamedTensors hf_tensors(const model::ParameterStore& store, const model::ModelConfig& config,
                        const HfExportOptions& options = {});

// The run's tokenizer beside the weights, as transformers and vLLM look for it: `tokenizer_json`
// (data.tokenizer) copied to DIR/tokenizer.json, and the tokenizer_config.json next to it (bos/eos,
// chat template) when there is one. Returns the names written. InputError naming data.tokenizer
// when the file cannot be read.
std::vector<std::string> copy_tokenizer_files(const std::string& tokenizer_json, const std::string& dir);

// Writes DIR/config.json, DIR/generation_config.json and DIR/model.safetensors (creating DIR). With
// options.mxfp4_experts the routed experts are written in MXFP4 (train/export_mxfp4.h: the layout vLLM
// loads, with its quantization_config in config.json) and everything else in options.dtype.
void export_hf(const model::ParameterStore& store, const model::ModelConfig& config, const std::string& dir,
               const HfExportOptions& options = {});

}  // namespace daedalus::train
