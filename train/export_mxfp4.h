// MXFP4 routed experts for `export-hf --experts mxfp4`: the layout vLLM loads for a DeepseekV3
// model whose experts are OCP MXFP4 — AMD Quark's "OCP MX" checkpoint format (vLLM's
// QuarkOCP_MX_MoEMethod, weight-only scheme w_mxfp4):
//   model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight        U8 [N, K/2]   two E2M1 codes a byte,
//                                                                  element 2j in the low nibble, 2j+1 high
//   model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight_scale  U8 [N, K/32]  E8M0 (2^(c - 127))
// and in config.json a "quantization_config" {"quant_method": "quark", ...} whose global config is
// MXFP4 weights (fp4, per_group, group_size 32, scale_format e8m0) with every other Linear excluded
// (kept in --dtype). The codes and scales are fp8::quantize(w, mx_1x32, e2m1) of the FP32 master —
// OCP MX v1.0's scale rule, the one the fp4_experts recipe trains through, so a model trained with
// fp4_experts exports exactly the weights its forward pass used. K must be a multiple of 32.
#pragma once

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/parameters.h"
#include "train/safetensors.h"

namespace daedalus::train {

struct PackedMxfp4 {
  Tensor weight;  // u8 [N, K/2]
  Tensor scale;   // u8 [N, K/32]
};

// One expert weight w [N, K] (fp32, CPU): quantized to MXFP4 and packed as above. `name` names the
// tensor in errors (K not a multiple of 32).
PackedMxfp4 pack_mxfp4(const Tensor& w, const std::string& name);

// The inverse, for checks: codes and scales back to fp32 values [N, K].
Tensor unpack_mxfp4(const Tensor& weight, const Tensor& scale);

// model.safetensors' tensors: routed experts packed (two tensors each), everything else as
// hf_tensors(store, config) gives it in `dtype`.
NamedTensors hf_tensors_mxfp4_experts(const model::ParameterStore& store, const model::ModelConfig& config,
                                      DType dtype);

// config.json's "quantization_config" for those tensors.
nlohmann::ordered_json quark_mxfp4_config(const model::ParameterStore& store);

}  // namespace daedalus::train
