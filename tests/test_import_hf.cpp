// HF import and export round trips, Python-free: the test writes HuggingFace DeepseekV3 directories
// itself (one file or sharded with an index; BF16; DeepSeek's FP8 blocks with ue8m0 and fp32 scales;
// per-expert and transformers 5's stacked expert names; YaRN; MTP with its embed/head copies),
// imports them, exports again and compares tensors byte for byte. Bad directories are InputErrors
// naming the file and the tensor or key.
#if !DAEDALUS_MINIMAL

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "model/causal_lm.h"
#include "tests/model_testing.h"
#include "tests/testing.h"
#include "train/export_hf.h"
#include "train/hf_config.h"
#include "train/hf_fp8.h"
#include "train/hf_weights.h"
#include "train/import_hf.h"

namespace daedalus::train {
namespace {

using testing::expect_error;

using TempDir = testing::TempDir;

void write_text(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

using testing::bytes;

// The small two-layer shape with YaRN, MTP depth 1, 8 experts in 4 groups (top-2 groups).
model::LmOptions small_options(uint64_t seed, bool q_lora = true) {
  model::LmOptions o;
  o.config = testing::small_yarn_config();
  if (!q_lora) o.config.q_lora_rank.reset();
  o.recipes = testing::recipes_of("fp32");
  o.seed = seed;
  return o;
}

// Rounds every parameter to bf16 values (so a bf16 file holds them exactly).
void round_to_bf16(model::CausalLM& lm) {
  NoGradGuard no_grad;
  for (const model::Parameter& p : lm.parameters().all()) {
    Tensor v = p.var.value();  // a handle on the parameter's storage
    v.copy_(v.to(DType::bf16));
  }
}

// transformers 5's stacked experts: per-expert gate/up/down (and FP8 scales) of each layer become
// experts.gate_up_proj [E, 2I, H] (gate rows, then up rows) and experts.down_proj [E, H, I]; scales
// likewise (gate's block rows, then up's).
NamedTensors stack_experts(const NamedTensors& in) {
  NamedTensors out;
  std::map<std::string, std::map<int64_t, std::map<std::string, Tensor>>> experts;  // head -> e -> tail
  for (const auto& [name, t] : in) {
    const size_t at = name.find(".experts.");
    if (at == std::string::npos) {
      out.emplace_back(name, t);
      continue;
    }
    const std::string head = name.substr(0, at + 9), rest = name.substr(at + 9);
    const size_t dot = rest.find('.');
    experts[head][std::stoll(rest.substr(0, dot))][rest.substr(dot + 1)] = t;
  }
  for (const auto& [head, by_expert] : experts) {
    const int64_t e_count = int64_t(by_expert.size());
    for (const std::string suffix : {"", "_scale_inv"}) {
      const Tensor& g0 = by_expert.at(0).at("gate_proj.weight" + suffix);
      const Tensor& d0 = by_expert.at(0).at("down_proj.weight" + suffix);
      Shape gu = {e_count, 2 * g0.size(0), g0.size(1)};
      Tensor gate_up = Tensor::empty(gu, g0.dtype()),
             down = Tensor::empty({e_count, d0.size(0), d0.size(1)}, d0.dtype());
      for (int64_t e = 0; e < e_count; ++e) {
        const std::vector<uint8_t> g = bytes(by_expert.at(e).at("gate_proj.weight" + suffix));
        const std::vector<uint8_t> u = bytes(by_expert.at(e).at("up_proj.weight" + suffix));
        const std::vector<uint8_t> d = bytes(by_expert.at(e).at("down_proj.weight" + suffix));
        char* gp = static_cast<char*>(gate_up.data_ptr()) + size_t(e) * (g.size() + u.size());
        std::memcpy(gp, g.data(), g.size());
        std::memcpy(gp + g.size(), u.data(), u.size());
        std::memcpy(static_cast<char*>(down.data_ptr()) + size_t(e) * d.size(), d.data(), d.size());
      }
      if (suffix.empty() || by_expert.at(0).count("gate_proj.weight_scale_inv")) {
        out.emplace_back(head + "gate_up_proj" + suffix, gate_up);
        out.emplace_back(head + "down_proj" + suffix, down);
      }
      if (!by_expert.at(0).count("gate_proj.weight_scale_inv")) break;
    }
  }
  return out;
}

// DIR/config.json and the tensors, in one file or in `shards` files with the index.
void write_hf_dir(const std::string& dir, const std::string& config_json, const NamedTensors& tensors, int shards) {
  std::filesystem::create_directories(dir);
  write_text(dir + "/config.json", config_json);
  if (shards <= 1) {
    write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
    return;
  }
  nlohmann::ordered_json index;
  index["metadata"]["total_size"] = 0;
  const size_t per = (tensors.size() + size_t(shards) - 1) / size_t(shards);
  for (int s = 0; s < shards; ++s) {
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards);
    NamedTensors part;
    for (size_t i = size_t(s) * per; i < std::min(tensors.size(), size_t(s + 1) * per); ++i) {
      part.push_back(tensors[i]);
      index["weight_map"][tensors[i].first] = file;
    }
    write_safetensors(dir + "/" + file, part, {{"format", "pt"}});
  }
  write_text(dir + "/model.safetensors.index.json", index.dump(2));
}

// Imports `dir` into a fresh model (another seed: nothing left from initialization).
std::unique_ptr<model::CausalLM> import_dir(const std::string& dir, bool q_lora = true) {
  const HfModelConfig hf = read_hf_config(dir);
  auto lm = std::make_unique<model::CausalLM>(small_options(99, q_lora));
  const HfImportReport r = load_hf_weights(dir, hf, *lm, /*strict=*/true);
  EXPECT_EQ(r.tensors, int64_t(lm->parameters().all().size()));
  EXPECT_TRUE(r.notes.empty()) << r.notes.front();
  EXPECT_GT(r.bytes, 0u);
  return lm;
}

void expect_same_tensors(const NamedTensors& a, const NamedTensors& b) {
  ASSERT_EQ(a.size(), b.size());
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [n, t] : b) by_name[n] = &t;
  for (const auto& [n, t] : a) {
    ASSERT_TRUE(by_name.count(n)) << n;
    const Tensor& u = *by_name[n];
    EXPECT_EQ(t.dtype(), u.dtype()) << n;
    EXPECT_EQ(t.shape(), u.shape()) << n;
    if (bytes(t) != bytes(u)) {
      const std::vector<double> x = t.to_doubles(), y = u.to_doubles();
      size_t i = 0;
      while (i < x.size() && x[i] == y[i]) ++i;
      ADD_FAILURE() << n << " differs first at element " << i << ": " << (i < x.size() ? x[i] : 0) << " vs "
                    << (i < y.size() ? y[i] : 0);
    }
  }
}

TEST(ImportHf, ConfigJsonReadsWhatExportWritesWithYarnAndMtp) {
  const model::ModelConfig c = testing::small_yarn_config();
  const HfModelConfig hf = parse_hf_config(hf_config_json(c), "config.json");
  EXPECT_EQ(hf.model.hidden_size, c.hidden_size);
  EXPECT_EQ(hf.model.q_lora_rank, c.q_lora_rank);
  EXPECT_EQ(hf.model.num_nextn_predict_layers, 1);
  ASSERT_TRUE(hf.model.rope_scaling.has_value());
  EXPECT_EQ(hf.model.rope_scaling->factor, 4.0);
  EXPECT_EQ(hf.model.rope_scaling->mscale, 0.9);
  EXPECT_EQ(hf.model.rope_scaling->mscale_all_dim, 0.6);
  EXPECT_EQ(hf.dtype, "bfloat16");  // export's default dtype and its torch_dtype agree
  EXPECT_FALSE(hf.fp8.enabled);
  // transformers 5's spelling: rope_parameters with rope_theta inside, dtype, num_mtp_layers.
  const HfModelConfig t5 = parse_hf_config(
      R"({"model_type": "deepseek_v3", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
          "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 12, "kv_lora_rank": 20, "q_lora_rank": null,
          "n_routed_experts": 8, "n_group": 4, "topk_group": 2, "num_experts_per_tok": 3, "num_mtp_layers": 2,
          "rope_parameters": {"rope_type": "yarn", "rope_theta": 50000.0, "factor": 40.0,
                              "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1,
                              "mscale": 1.0, "mscale_all_dim": 1.0}, "dtype": "float16", "use_cache": true})",
      "t5/config.json");
  EXPECT_FALSE(t5.model.q_lora_rank.has_value());
  EXPECT_EQ(t5.model.rope_theta, 50000.0);
  EXPECT_EQ(t5.model.rope_scaling->original_max_position_embeddings, 4096);
  EXPECT_EQ(t5.model.num_nextn_predict_layers, 2);
  EXPECT_EQ(t5.dtype, "float16");
  EXPECT_EQ(t5.ignored, std::vector<std::string>{"use_cache"});
}

TEST(ImportHf, ConfigJsonRefusesWhatIsNotComputableNamingTheField) {
  const std::string base = R"({"model_type": "deepseek_v3", "hidden_size": 64, "num_attention_heads": 4, )"
                           R"("qk_rope_head_dim": 8, "n_routed_experts": 8, "n_group": 4, "topk_group": 2, )";
  const auto bad = [&](const std::string& extra) { parse_hf_config(base + extra + "}", "m/config.json"); };
  expect_error([&] { bad(R"("rope_scaling": {"type": "linear", "factor": 2.0})"); },
               {"m/config.json", "rope_scaling.type", "\"linear\" is not supported"});
  expect_error([&] { bad(R"("rope_parameters": {"rope_type": "dynamic", "factor": 2.0})"); },
               {"m/config.json", "rope_parameters.rope_type", "dynamic"});
  expect_error([&] { bad(R"("rope_scaling": {"type": "yarn", "factor": 2.0, "low_freq_factor": 1.0})"); },
               {"rope_scaling.low_freq_factor"});
  expect_error([&] { bad(R"("quantization_config": {"quant_method": "bitsandbytes"})"); },
               {"m/config.json", "quantization_config.quant_method", "bitsandbytes"});
  expect_error(
      [&] { bad(R"("quantization_config": {"quant_method": "fp8", "fmt": "e5m2", "weight_block_size": [128, 128]})"); },
      {"quantization_config.fmt", "e5m2"});
  expect_error([&] { bad(R"("num_key_value_heads": 1)"); }, {"num_key_value_heads", "num_attention_heads = 4"});
  expect_error([&] { bad(R"("hidden_act": "gelu")"); }, {"hidden_act", "gelu"});
  expect_error([&] { bad(R"("rope_interleave": false)"); }, {"rope_interleave"});
  expect_error([&] { bad(R"("topk_method": "greedy")"); }, {"topk_method", "greedy"});
  expect_error([&] { bad(R"("torch_dtype": "int8")"); }, {"torch_dtype", "int8"});
  expect_error([&] { bad(R"("hidden_size": "big")"); }, {"m/config.json", "hidden_size", "expected an integer"});
  expect_error([&] { parse_hf_config(R"({"model_type": "llama"})", "l/config.json"); }, {"model_type", "llama"});
}

TEST(ImportHf, Bf16ShardedAndStackedRoundTripByteForByte) {
  // BF16 values survive fp32 masters exactly, so import -> export gives the same bytes; the
  // imported model holds exactly the original's values (its experts stacked, MTP included).
  TempDir tmp;
  for (const bool q_lora : {true, false}) {
    model::CausalLM original(small_options(7, q_lora));
    round_to_bf16(original);
    const model::ModelConfig& c = original.options().config;
    const NamedTensors per_expert = hf_tensors(original.parameters(), c);  // bf16, with the MTP copies
    const std::string json = hf_config_json(c);
    struct Variant {
      std::string name;
      NamedTensors tensors;
      int shards;
    };
    for (const Variant& v : {Variant{"one", per_expert, 1}, Variant{"sharded", per_expert, 3},
                             Variant{"stacked", stack_experts(per_expert), 2}}) {
      SCOPED_TRACE(fmt::format("q_lora {} {}", q_lora, v.name));
      const std::string dir = tmp / fmt::format("{}-{}", v.name, int(q_lora));
      write_hf_dir(dir, json, v.tensors, v.shards);
      const auto imported = import_dir(dir, q_lora);
      for (const model::Parameter& p : original.parameters().all())
        ASSERT_EQ(bytes(p.var.value()), bytes(imported->parameters().get(p.name).var.value())) << p.name;
      expect_same_tensors(hf_tensors(imported->parameters(), c), per_expert);
    }
  }
}

TEST(ImportHf, Fp8BlocksDequantizeExactlyAndExportBackByteForByte) {
  // DeepSeek's format with 8x8 blocks on these small shapes (ragged edges everywhere: 12, 16, 20,
  // 24, 37 rows and columns): every imported weight equals e4m3(code) * scale_inv computed in double
  // and rounded once to fp32 (exact for ue8m0); exporting the import gives back the same codes and
  // scales byte for byte (fp32 scales), or (ue8m0) the same bytes except blocks whose largest code
  // was 224, re-encoded with the same values (see hf_fp8.h); per-expert or stacked.
  TempDir tmp;
  for (const bool ue8m0 : {true, false}) {
    model::CausalLM original(small_options(8));
    const model::ModelConfig& c = original.options().config;
    HfExportOptions eo;
    eo.fp8 = true;
    eo.ue8m0 = ue8m0;
    eo.block = 8;
    const NamedTensors written = hf_tensors(original.parameters(), c, eo);
    int64_t quantized = 0;
    for (const auto& [name, t] : written) quantized += t.dtype() == DType::f8e4m3;
    EXPECT_GT(quantized, 30);
    for (const bool stacked : {false, true}) {
      SCOPED_TRACE(fmt::format("{} scales, {}", ue8m0 ? "ue8m0" : "fp32", stacked ? "stacked" : "per expert"));
      const std::string dir = tmp / fmt::format("fp8-{}-{}", int(ue8m0), int(stacked));
      write_hf_dir(dir, hf_config_json(c, eo), stacked ? stack_experts(written) : written, 2);
      const auto imported = import_dir(dir);
      // Independent dequantization of one per-expert weight and one attention weight.
      std::map<std::string, Tensor> by_name(written.begin(), written.end());
      for (const std::string name :
           {"model.layers.0.self_attn.kv_b_proj.weight", "model.layers.1.mlp.experts.5.up_proj.weight"}) {
        const std::vector<double> q = by_name.at(name).to_doubles(), s = by_name.at(name + "_scale_inv").to_doubles();
        const Shape shape = by_name.at(name).shape();
        const int64_t cols = shape[1], scale_cols = (cols + 7) / 8;
        Tensor got =
            name.find(".experts.5.") != std::string::npos
                ? imported->parameters().get("model.layers.1.mlp.experts.up_proj.weight").var.value().select(0, 5)
                : imported->parameters().get(name).var.value();
        const std::vector<double> g = got.to_doubles();
        for (size_t i = 0; i < q.size(); ++i) {
          const int64_t r = int64_t(i) / cols, col = int64_t(i) % cols;
          const double want = double(float(q[i] * s[size_t((r / 8) * scale_cols + col / 8)]));
          ASSERT_EQ(g[i], want) << name << " element " << i;
          if (ue8m0) {
            ASSERT_EQ(g[i], q[i] * s[size_t((r / 8) * scale_cols + col / 8)]);  // exact
          }
        }
      }
      const NamedTensors again = hf_tensors(imported->parameters(), c, eo);
      if (!ue8m0) {
        expect_same_tensors(again, written);
        continue;
      }
      // ue8m0: the same bytes except in blocks whose largest code was 224 (DeepSeek's rounding up
      // of amax / 448 leaves two encodings of those values; the export takes the smaller scale):
      // there the codes double and the scale halves, and the values stay identical.
      std::map<std::string, Tensor> out(again.begin(), again.end());
      int64_t blocks = 0, recoded = 0;
      for (const auto& [name, t] : written) {
        if (name.ends_with("_scale_inv")) continue;  // compared with their codes below
        if (t.dtype() != DType::f8e4m3) {
          ASSERT_EQ(bytes(t), bytes(out.at(name))) << name;
          continue;
        }
        const std::vector<double> q0 = t.to_doubles(), q1 = out.at(name).to_doubles();
        const std::vector<double> s0 = by_name.at(name + "_scale_inv").to_doubles();
        const std::vector<double> s1 = out.at(name + "_scale_inv").to_doubles();
        const int64_t cols = t.size(1), sc = (cols + 7) / 8;
        std::vector<double> max_code(s0.size(), 0);
        for (size_t i = 0; i < q0.size(); ++i) {
          const size_t b = size_t((int64_t(i) / cols / 8) * sc + (int64_t(i) % cols) / 8);
          max_code[b] = std::max(max_code[b], std::fabs(q0[i]));
          ASSERT_EQ(q0[i] * s0[b], q1[i] * s1[b]) << name << " element " << i;  // the same value
          ASSERT_EQ(q1[i], s1[b] == s0[b] ? q0[i] : 2 * q0[i]) << name << " element " << i;
        }
        for (size_t b = 0; b < s0.size(); ++b) {
          ++blocks;
          if (s1[b] != s0[b]) {
            ++recoded;
            ASSERT_EQ(max_code[b], 224.0) << name << " block " << b;
            ASSERT_EQ(s1[b], s0[b] / 2) << name << " block " << b;
          }
        }
      }
      EXPECT_LT(recoded, blocks / 5) << recoded << " of " << blocks << " blocks re-encoded";
    }
  }
}

TEST(ImportHf, Fp8QuantizerTakesTheDeepSeekScaleForFreshWeights) {
  // Weights that did not come from FP8: scale_inv = amax / 448 (fp32) or 2^ceil(log2(amax / 448))
  // (ue8m0), codes = round(w / scale), as DeepSeek's reference quantizer; an all-zero block has 1.
  Tensor w = testing::random_tensor({3, 5}, 9);
  w.data<float>()[0] = 3.0f;  // amax 3 > every other |w| (random normals are < 3 here? ensure)
  const std::vector<float> v = w.to_vector<float>();
  float amax = 0;
  for (float x : v) amax = std::max(amax, std::fabs(x));
  const Fp8Blocks f = quantize_fp8_blocks(w, 128, 128, /*ue8m0=*/false);
  EXPECT_EQ(f.scale_inv.to_vector<float>()[0], amax / 448.0f);
  const Fp8Blocks p = quantize_fp8_blocks(w, 128, 128, /*ue8m0=*/true);
  EXPECT_EQ(p.scale_inv.to_vector<float>()[0], std::exp2(std::ceil(std::log2(double(amax) / 448.0))));
  EXPECT_EQ(quantize_fp8_blocks(Tensor::zeros({2, 2}), 128, 128, false).scale_inv.to_vector<float>()[0], 1.0f);
  const Tensor back = dequantize_fp8_blocks(f.codes, f.scale_inv, 128, 128);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(back.to_vector<float>()[i], v[i], std::fabs(v[i]) / 16 + 1e-3);
}

TEST(ImportHf, BadDirectoriesNameTheFileAndTensor) {
  TempDir tmp;
  model::CausalLM original(small_options(7));
  const model::ModelConfig& c = original.options().config;
  const NamedTensors tensors = hf_tensors(original.parameters(), c);
  const std::string json = hf_config_json(c);
  const auto import = [&](const std::string& dir) {
    model::CausalLM lm(small_options(1));
    load_hf_weights(dir, read_hf_config(dir), lm, /*strict=*/true);
  };
  // A missing shard, named with a tensor the index places there.
  write_hf_dir(tmp / "a", json, tensors, 3);
  std::filesystem::remove(tmp / "a/model-00002-of-00003.safetensors");
  expect_error([&] { import(tmp / "a"); },
               {tmp / "a/model-00002-of-00003.safetensors", "missing", "names it for tensor"});
  // The index names a tensor its shard does not hold.
  write_hf_dir(tmp / "b", json, tensors, 2);
  {
    nlohmann::json index = nlohmann::json::parse(std::ifstream(tmp / "b/model.safetensors.index.json"));
    index["weight_map"]["model.layers.0.self_attn.ghost.weight"] = "model-00001-of-00002.safetensors";
    write_text(tmp / "b/model.safetensors.index.json", index.dump());
  }
  expect_error([&] { import(tmp / "b"); },
               {"model-00001-of-00002.safetensors", "no tensor 'model.layers.0.self_attn.ghost.weight'"});
  // A tensor of the wrong shape.
  NamedTensors wrong = tensors;
  for (auto& [name, t] : wrong)
    if (name == "model.layers.1.self_attn.o_proj.weight") t = Tensor::zeros({t.size(0), t.size(1) + 1}, DType::bf16);
  write_hf_dir(tmp / "c", json, wrong, 1);
  expect_error([&] { import(tmp / "c"); },
               {"model.layers.1.self_attn.o_proj.weight", tmp / "c/model.safetensors", "another shape", "[16, 11]"});
  // A missing tensor and an unexpected one.
  NamedTensors fewer(tensors.begin() + 1, tensors.end());
  fewer.emplace_back("model.layers.0.extra.weight", Tensor::zeros({2}, DType::bf16));
  write_hf_dir(tmp / "d", json, fewer, 1);
  expect_error([&] { import(tmp / "d"); },
               {tensors.front().first, "missing", "model.layers.0.extra.weight", "not in this model"});
  // A truncated file.
  write_hf_dir(tmp / "e", json, tensors, 1);
  std::filesystem::resize_file(tmp / "e/model.safetensors",
                               std::filesystem::file_size(tmp / "e/model.safetensors") - 10);
  expect_error([&] { import(tmp / "e"); }, {tmp / "e/model.safetensors", "out of range", "truncated"});
  // FP8 codes without a quantization_config; a missing scale.
  HfExportOptions eo;
  eo.fp8 = true;
  eo.block = 8;
  const NamedTensors fp8 = hf_tensors(original.parameters(), c, eo);
  write_hf_dir(tmp / "f", json, fp8, 1);
  expect_error([&] { import(tmp / "f"); }, {tmp / "f/model.safetensors", "F8_E4M3", "no quantization_config"});
  NamedTensors unscaled;
  for (const auto& nt : fp8)
    if (nt.first != "model.layers.0.self_attn.o_proj.weight_scale_inv") unscaled.push_back(nt);
  write_hf_dir(tmp / "g", hf_config_json(c, eo), unscaled, 1);
  expect_error([&] { import(tmp / "g"); }, {"model.layers.0.self_attn.o_proj.weight", "_scale_inv' is missing"});
  // ue8m0 promised, fp32 scales delivered.
  write_hf_dir(tmp / "h",
               hf_config_json(c,
                              [&] {
                                HfExportOptions u = eo;
                                u.ue8m0 = true;
                                return u;
                              }()),
               fp8, 1);
  expect_error([&] { import(tmp / "h"); }, {"_scale_inv", "not a power of two", "ue8m0"});
  // No weights at all.
  write_text(tmp / "i/config.json", json);
  expect_error([&] { import(tmp / "i"); }, {tmp / "i", "no model.safetensors"});
}

TEST(ImportHf, MtpDepthFollowsTheWeights) {
  // transformers saves num_mtp_layers 1 without MTP weights: the import drops the MTP, and says so.
  TempDir tmp;
  model::CausalLM original(small_options(7));
  const model::ModelConfig& c = original.options().config;
  NamedTensors tensors;
  for (const auto& nt : hf_tensors(original.parameters(), c))
    if (!nt.first.starts_with("model.layers.2.")) tensors.push_back(nt);
  write_hf_dir(tmp / "a", hf_config_json(c), tensors, 1);
  EXPECT_EQ(read_hf_config(tmp / "a").model.num_nextn_predict_layers, 1);
  const HfModelConfig hf = read_hf_model(tmp / "a");
  EXPECT_EQ(hf.model.num_nextn_predict_layers, 0);
  ASSERT_FALSE(hf.ignored.empty());
  EXPECT_TRUE(testing::mentions(hf.ignored.back(), {"num_nextn_predict_layers", "1 -> 0"}));
  model::LmOptions o = small_options(1);
  o.config = hf.model;
  model::CausalLM lm(o);
  EXPECT_EQ(load_hf_weights(tmp / "a", hf, lm, /*strict=*/true).tensors, int64_t(lm.parameters().all().size()));
}

TEST(ImportHf, NonStrictReportsAndExportRefusesWhatHfCannotExpress) {
  TempDir tmp;
  model::CausalLM original(small_options(7));
  const model::ModelConfig& c = original.options().config;
  NamedTensors tensors = hf_tensors(original.parameters(), c);
  tensors.erase(tensors.begin());  // model.embed_tokens.weight
  write_hf_dir(tmp / "a", hf_config_json(c), tensors, 1);
  model::CausalLM lm(small_options(1));
  const HfImportReport r = load_hf_weights(tmp / "a", read_hf_config(tmp / "a"), lm, /*strict=*/false);
  EXPECT_EQ(r.missing, std::vector<std::string>{"model.embed_tokens.weight"});
  // The MTP copy of the embedding no longer matches the model's (it kept its initial values).
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_TRUE(testing::mentions(r.notes[0], {"model.layers.2.embed_tokens.weight", "differs"}));

  model::ModelConfig softmax = c;
  softmax.scoring_func = "softmax";
  expect_error([&] { hf_config_json(softmax); }, {"model.scoring_func", "softmax", "sigmoid only"});
  model::ModelConfig one_per_group = c;
  one_per_group.n_group = 8;
  one_per_group.topk_group = 8;
  expect_error([&] { hf_config_json(one_per_group); }, {"model.n_group", "top-2"});
  model::ModelConfig dense = c;
  dense.n_routed_experts = 0;
  const nlohmann::json j = nlohmann::json::parse(hf_config_json(dense));
  EXPECT_EQ(j["first_k_dense_replace"], dense.num_hidden_layers);
  EXPECT_EQ(parse_hf_config(hf_config_json(dense), "x").model.n_routed_experts, 0);
  HfExportOptions f32;
  f32.dtype = DType::f32;
  EXPECT_EQ(nlohmann::json::parse(hf_config_json(c, f32))["torch_dtype"], "float32");
}

}  // namespace
}  // namespace daedalus::train

#endif  // !DAEDALUS_MINIMAL
