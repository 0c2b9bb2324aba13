// A HuggingFace DeepseekV3 directory's config.json, read into Daedalus's model config.
//
// Every DeepseekV3Config field that changes the math is read; a value Daedalus cannot compute
// exactly is refused (InputError naming DIR/config.json and the field):
//   model_type deepseek_v3 (or kimi_k2, or architectures naming DeepseekV3ForCausalLM)
//   num_key_value_heads null or = num_attention_heads   hidden_act silu
//   rope_interleave true (or absent)                    attention_bias false, attention_dropout 0
//   topk_method noaux_tc (or absent)                    moe_layer_freq 1, pretraining_tp 1
//   rope_scaling / rope_parameters: null, type default, or yarn (partial_rotary_factor 1)
//   quantization_config: absent, or {quant_method: fp8, fmt: e4m3, weight_block_size: [128, 128]}
//                        (any block shape; scale_fmt ue8m0 or float)
// rope_theta comes from the top level or from rope_parameters (transformers 5), the dtype from
// torch_dtype or dtype, the MTP depth from num_nextn_predict_layers or num_mtp_layers; n_routed_experts
// 0 or first_k_dense_replace >= num_hidden_layers is a dense model. Fields that do not change the
// function (token ids, use_cache, auto_map, aux_loss_alpha, ...) are listed in `ignored`.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"

namespace daedalus::train {

// DeepSeek's FP8 release format (quantization_config).
struct HfFp8Format {
  bool enabled = false;
  int64_t block_rows = 128, block_cols = 128;  // weight_block_size
  bool ue8m0 = false;                          // scale_fmt: ue8m0 (power-of-two scales)
};

struct HfModelConfig {
  model::ModelConfig model;
  std::string dtype;  // torch_dtype / dtype: "bfloat16", "float16", "float32" ("" when absent)
  HfFp8Format fp8;
  std::vector<std::string> ignored;  // top-level fields read and found not to change the math
};

// Parses config.json text; `source` names the file in messages.
HfModelConfig parse_hf_config(const std::string& text, const std::string& source);
// DIR/config.json.
HfModelConfig read_hf_config(const std::string& dir);

// True when `path` is a directory holding config.json (an HF model directory).
bool is_hf_directory(const std::string& path);

}  // namespace daedalus::train
