// `export-hf --experts mxfp4` (train/export_mxfp4.h): the packing by hand (nibble order, E8M0
// scale codes), unpacking gives exactly the quantizer's dequantized values, bad shapes are named,
// and a model's tensors and quantization_config follow Quark's OCP MX layout that vLLM loads.
#include <gtest/gtest.h>

#include <filesystem>

#include "fp8/quantized.h"
#include "tests/model_testing.h"
#include "tests/testing.h"
#include "train/export_mxfp4.h"
#include "train/safetensors.h"

namespace daedalus::train {
namespace {

TEST(ExportMxfp4, PacksTwoCodesPerByteLowNibbleFirstWithE8m0Scales) {
  // Row 0: block 0 has amax 6 (scale 2^0: the values are their own codes), block 1 amax 12
  // (scale 2^1). Row 1: all zeros (scale 1, code 127).
  std::vector<float> v(2 * 64, 0.0f);
  v[0] = 0.5f;    // code 1
  v[1] = -3.0f;   // code 0xD
  v[2] = 6.0f;    // code 7
  v[32] = 12.0f;  // 12 / 2 = 6: code 7
  v[33] = 1.0f;   // 1 / 2 = 0.5: code 1
  const PackedMxfp4 p = pack_mxfp4(Tensor::from_vector(v, {2, 64}), "w");
  ASSERT_EQ(p.weight.shape(), (Shape{2, 32}));
  ASSERT_EQ(p.scale.shape(), (Shape{2, 2}));
  const std::vector<uint8_t> w = testing::bytes(p.weight), s = testing::bytes(p.scale);
  EXPECT_EQ(w[0], 0xD1);  // element 0 low, element 1 high
  EXPECT_EQ(w[1], 0x07);
  EXPECT_EQ(w[16], 0x17);
  EXPECT_EQ(s, (std::vector<uint8_t>{127, 128, 127, 127}));
}

TEST(ExportMxfp4, UnpackingGivesTheQuantizersValuesExactly) {
  const Tensor w = testing::scaled_normal(48, 96, 3);
  const PackedMxfp4 p = pack_mxfp4(w, "w");
  EXPECT_TRUE(testing::bit_identical(unpack_mxfp4(p.weight, p.scale),
                                     fp8::quantize(w, fp8::Granularity::mx_1x32, fp8::Format::e2m1).dequantize()));
  testing::expect_error(
      [&] {
        pack_mxfp4(testing::random_tensor({4, 40}, 1), "model.layers.1.mlp.experts.3.up_proj.weight");
      },
      {"model.layers.1.mlp.experts.3.up_proj.weight", "[4, 40]", "multiple of 32"});
}

TEST(ExportMxfp4, ModelTensorsAndQuantizationConfig) {
  model::ModelConfig c = testing::small_model_config();
  c.hidden_size = 64;  // expert inputs a multiple of 32
  c.moe_intermediate_size = 64;
  model::LmOptions o;
  o.config = c;
  o.recipes = testing::recipes_of("fp4_experts");
  const model::CausalLM lm(o);
  const NamedTensors tensors = hf_tensors_mxfp4_experts(lm.parameters(), c, DType::bf16);
  int experts = 0;
  for (const auto& [name, t] : tensors) {
    if (name.find(".mlp.experts.") != std::string::npos) {
      EXPECT_EQ(t.dtype(), DType::u8) << name;
      if (name.ends_with(".weight_scale")) {
        ++experts;
        EXPECT_EQ(t.size(1), 2) << name;  // K = 64 inputs (hidden or moe_intermediate): 2 scales a row
      }
    } else {
      EXPECT_EQ(t.dtype(), DType::bf16) << name;
    }
  }
  // 3 projections per expert, in the MoE layer and the MTP module's MoE layer.
  EXPECT_EQ(experts, 3 * int(c.n_routed_experts) *
                         int(c.num_hidden_layers - c.first_k_dense_replace + c.num_nextn_predict_layers));
  // U8 round-trips through safetensors.
  const std::string path = (std::filesystem::temp_directory_path() / "daedalus_mxfp4_test.safetensors").string();
  write_safetensors(path, tensors);
  const NamedTensors back = read_safetensors(path);
  std::filesystem::remove(path);
  ASSERT_EQ(back.size(), tensors.size());
  for (size_t i = 0; i < back.size(); ++i) EXPECT_TRUE(testing::bit_identical(back[i].second, tensors[i].second));
  // quantization_config: Quark, MXFP4 weights (vLLM's OCP MX check: fp4, per_group, 32, e8m0),
  // every non-expert Linear excluded, the routed experts not.
  const nlohmann::ordered_json q = quark_mxfp4_config(lm.parameters());
  EXPECT_EQ(q["quant_method"], "quark");
  const auto& w = q["global_quant_config"]["weight"];
  EXPECT_EQ(w["dtype"], "fp4");
  EXPECT_EQ(w["qscheme"], "per_group");
  EXPECT_EQ(w["group_size"], 32);
  EXPECT_EQ(w["scale_format"], "e8m0");
  EXPECT_TRUE(q["global_quant_config"]["input_tensors"].is_null());
  std::vector<std::string> exclude = q["exclude"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(exclude.begin(), exclude.end(), "lm_head"), exclude.end());
  EXPECT_NE(std::find(exclude.begin(), exclude.end(), "model.layers.1.mlp.shared_experts.gate_proj"), exclude.end());
  EXPECT_NE(std::find(exclude.begin(), exclude.end(), "model.layers.1.mlp.gate"), exclude.end());
  for (const std::string& e : exclude) EXPECT_EQ(e.find(".mlp.experts."), std::string::npos) << e;
}

}  // namespace
}  // namespace daedalus::train
