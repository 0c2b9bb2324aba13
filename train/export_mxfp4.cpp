// MXFP4 routed experts in Quark's OCP MX layout (train/export_mxfp4.h).
#include "train/export_mxfp4.h"

#include "autograd/check.h"
#include "autograd/dtype_codec.h"
#include "autograd/kernels/copy.h"
#include "fp8/format.h"
#include "fp8/quantized.h"
#include "train/export_hf.h"

namespace daedalus::train {

namespace {

bool is_routed_expert_weight(const std::string& name) {
  return name.find(".mlp.experts.") != std::string::npos && name.ends_with(".weight");
}

}  // namespace

PackedMxfp4 pack_mxfp4(const Tensor& w, const std::string& name) {
  DAEDALUS_CHECK(w.dim() == 2 && w.size(1) % 32 == 0,
                 "export-hf --experts mxfp4: {} {} needs 2 dims with the input size a multiple of 32 (one E8M0 scale "
                 "per 32 inputs)",
                 name, shape_str(w.shape()));
  const int64_t n = w.size(0), k = w.size(1);
  const fp8::QuantizedTensor q = fp8::quantize(w.to(Device::cpu()), fp8::Granularity::mx_1x32, fp8::Format::e2m1);
  const Tensor codes = q.data.contiguous();
  const std::vector<float> scales = q.scale_inv.to_vector<float>();
  PackedMxfp4 p{Tensor::empty({n, k / 2}, DType::u8), Tensor::empty({n, k / 32}, DType::u8)};
  const fp4e2m1* c = codes.data<fp4e2m1>();
  uint8_t* packed = p.weight.data<uint8_t>();
  uint8_t* s = p.scale.data<uint8_t>();
  for (int64_t i = 0; i < n * k / 2; ++i)
    packed[i] = uint8_t((c[2 * i].bits & 0xFu) | ((c[2 * i + 1].bits & 0xFu) << 4));
  // Every OCP scale is a power of two in [2^-127, 2^127] (or NaN for a block holding a NaN): its
  // E8M0 code is exact either way.
  for (size_t i = 0; i < scales.size(); ++i) s[i] = fp8::float_to_e8m0(scales[i], fp8::E8m0Rounding::down);
  return p;
}

Tensor unpack_mxfp4(const Tensor& weight, const Tensor& scale) {
  DAEDALUS_CHECK(weight.dtype() == DType::u8 && scale.dtype() == DType::u8 && weight.dim() == 2 && scale.dim() == 2 &&
                     scale.size(0) == weight.size(0) && scale.size(1) * 16 == weight.size(1),
                 "unpack_mxfp4: weight {} and scale {} are not a packed MXFP4 pair", weight.describe(),
                 scale.describe());
  const int64_t n = weight.size(0), k = weight.size(1) * 2;
  const Tensor wc = weight.contiguous(), sc = scale.contiguous();
  const uint8_t* packed = wc.data<uint8_t>();
  const uint8_t* s = sc.data<uint8_t>();
  Tensor out = Tensor::empty({n, k}, DType::f32);
  float* y = out.data<float>();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) {
      const uint8_t byte = packed[r * (k / 2) + j / 2];
      const uint8_t code = j % 2 == 0 ? byte & 0xFu : byte >> 4;
      y[r * k + j] = codec::e2m1_to_float(fp4e2m1{code}) * fp8::e8m0_to_float(s[r * (k / 32) + j / 32]);
    }
  return out;
}

NamedTensors hf_tensors_mxfp4_experts(const model::ParameterStore& store, const model::ModelConfig& config,
                                      DType dtype) {
  NamedTensors out;
  HfExportOptions fp32;
  fp32.dtype = DType::f32;
  for (auto& [name, t] : hf_tensors(store, config, fp32)) {  // FP32: experts are quantized from the masters
    if (!is_routed_expert_weight(name)) {
      out.emplace_back(name, t.to(dtype).contiguous());
      continue;
    }
    PackedMxfp4 p = pack_mxfp4(t, name);
    out.emplace_back(name, std::move(p.weight));
    out.emplace_back(name + "_scale", std::move(p.scale));
  }
  return out;
}

nlohmann::ordered_json quark_mxfp4_config(const model::ParameterStore& store) {
  using json = nlohmann::ordered_json;
  const json weight = {{"dtype", "fp4"},         {"qscheme", "per_group"},     {"ch_axis", -1},
                       {"group_size", 32},       {"is_dynamic", false},        {"symmetric", nullptr},
                       {"scale_format", "e8m0"}, {"round_method", "half_even"}};
  const json mxfp4 = {{"weight", weight}, {"input_tensors", nullptr}, {"output_tensors", nullptr}, {"bias", nullptr}};
  // Excluded: every Linear that is not a routed expert, by name (HF module names), and by a pattern
  // that also covers the fused names vLLM builds (gate_up_proj, fused_qkv_a_proj): anything whose
  // name lacks ".mlp.experts" — the experts' own FusedMoE layer is "model.layers.L.mlp.experts".
  json exclude = json::array();
  for (const model::Parameter& p : store.all()) {
    if (p.expert || p.var.value().dim() != 2 || !p.name.ends_with(".weight")) continue;
    if (p.name.find("embed_tokens") != std::string::npos || p.name.find("norm") != std::string::npos) continue;
    exclude.push_back(p.name.substr(0, p.name.size() - std::string(".weight").size()));
  }
  exclude.push_back("re:^(?!.*\\.mlp\\.experts(\\.|$)).*");
  return json{{"quant_method", "quark"},
              {"export", {{"kv_cache_group", json::array()}, {"pack_method", "reorder"}}},
              {"global_quant_config", mxfp4},
              {"layer_quant_config", json::object()},
              {"layer_type_quant_config", json::object()},
              {"exclude", exclude}};
}

}  // namespace daedalus::train
