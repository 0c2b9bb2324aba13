// config.json of a HuggingFace DeepseekV3 directory -> model::ModelConfig (refusals in hf_config.h).
#include "train/hf_config.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#if !DAEDALUS_MINIMAL
#include <nlohmann/json.hpp>
#endif

#include "autograd/check.h"

namespace daedalus::train {

bool is_hf_directory(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec) && std::filesystem::is_regular_file(path + "/config.json", ec);
}

HfModelConfig read_hf_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream f(path);
  DAEDALUS_CHECK(f.good(), "{}: cannot read (an HF model directory holds config.json)", path);
  std::stringstream text;
  text << f.rdbuf();
  return parse_hf_config(text.str(), path);
}

#if DAEDALUS_MINIMAL

HfModelConfig parse_hf_config(const std::string&, const std::string& source) {
  DAEDALUS_FAIL("{}: reading config.json needs nlohmann-json; this build is DAEDALUS_MINIMAL", source);
}

#else

namespace {

using nlohmann::json;

// Reads the fields of one JSON object with type checks; every key looked at is remembered.
class Fields {
 public:
  Fields(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  bool has(const char* key) {
    seen_.insert(key);
    return j_.contains(key) && !j_[key].is_null();
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    DAEDALUS_FAIL("{}: {}: {}", source_, key, what);
  }
  void integer(const char* key, int64_t& v) {
    if (!has(key)) return;
    const json& x = j_[key];
    if (!x.is_number_integer()) fail(key, fmt::format("expected an integer, got {}", x.dump()));
    v = x.get<int64_t>();
  }
  void number(const char* key, double& v) {
    if (!has(key)) return;
    const json& x = j_[key];
    if (!x.is_number()) fail(key, fmt::format("expected a number, got {}", x.dump()));
    v = x.get<double>();
  }
  void boolean(const char* key, bool& v) {
    if (!has(key)) return;
    const json& x = j_[key];
    if (!x.is_boolean()) fail(key, fmt::format("expected true or false, got {}", x.dump()));
    v = x.get<bool>();
  }
  void string(const char* key, std::string& v) {
    if (!has(key)) return;
    const json& x = j_[key];
    if (!x.is_string()) fail(key, fmt::format("expected a string, got {}", x.dump()));
    v = x.get<std::string>();
  }
  // The value must be `want` when present (null counts as absent).
  template <typename T>
  void require(const char* key, const T& want, const std::string& why) {
    if (!has(key)) return;
    if (j_[key] != json(want)) fail(key, fmt::format("{} is not supported: {}", j_[key].dump(), why));
  }
  std::vector<std::string> unseen() const {
    std::vector<std::string> out;
    for (const auto& [k, v] : j_.items())
      if (!seen_.count(k)) out.push_back(k);
    return out;
  }
  const json& at(const char* key) const { return j_[key]; }

 private:
  const json& j_;
  std::string source_;
  std::set<std::string> seen_;
};

// rope_scaling (DeepSeek's release) or rope_parameters (transformers 5): null, default or yarn.
void read_rope(const json& j, const std::string& key, const std::string& source, model::ModelConfig& c,
               int64_t max_position_embeddings) {
  Fields r(j, source);
  std::string type = "default", rope_type;
  r.string("type", type);
  r.string("rope_type", rope_type);
  if (!rope_type.empty()) type = rope_type;
  r.number("rope_theta", c.rope_theta);
  double partial = 1.0;
  r.number("partial_rotary_factor", partial);
  if (partial != 1.0)
    r.fail(key + ".partial_rotary_factor", fmt::format("{} is not supported (RoPE on every rope dim only)", partial));
  if (type == "default") {
    c.rope_scaling.reset();
  } else if (type == "yarn") {
    model::RopeScaling y;
    if (!r.has("factor")) r.fail(key + ".factor", "missing (YaRN needs its factor)");
    r.number("factor", y.factor);
    y.original_max_position_embeddings = max_position_embeddings;  // HF's default
    r.integer("original_max_position_embeddings", y.original_max_position_embeddings);
    r.number("beta_fast", y.beta_fast);
    r.number("beta_slow", y.beta_slow);
    r.number("mscale", y.mscale);
    r.number("mscale_all_dim", y.mscale_all_dim);
    if (r.has("attention_factor")) {
      double a = 0;
      r.number("attention_factor", a);
      y.attention_factor = a;
    }
    r.boolean("truncate", y.truncate);
    try {
      y.validate();
    } catch (const InputError& e) {
      DAEDALUS_FAIL("{}: {}: {}", source, key, e.what());
    }
    c.rope_scaling = y;
  } else {
    r.fail(key + (rope_type.empty() ? ".type" : ".rope_type"),
           fmt::format("\"{}\" is not supported (Daedalus computes default and yarn RoPE exactly)", type));
  }
  for (const std::string& k : r.unseen()) r.fail(key + "." + k, "unknown RoPE parameter: not computable as given");
}

}  // namespace

HfModelConfig parse_hf_config(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    DAEDALUS_FAIL("{}: not valid JSON: {}", source, e.what());
  }
  DAEDALUS_CHECK(j.is_object(), "{}: expected a JSON object, got {}", source, j.type_name());
  Fields f(j, source);
  HfModelConfig out;
  model::ModelConfig& c = out.model;

  std::string model_type;
  f.string("model_type", model_type);
  bool deepseek_arch = false;
  if (f.has("architectures") && f.at("architectures").is_array())
    for (const json& a : f.at("architectures")) deepseek_arch |= a == "DeepseekV3ForCausalLM";
  if (model_type != "deepseek_v3" && model_type != "kimi_k2" && !deepseek_arch)
    f.fail("model_type", fmt::format("\"{}\" is not supported (Daedalus imports the DeepSeek-V3 architecture: "
                                     "deepseek_v3, kimi_k2)",
                                     model_type));

  f.integer("vocab_size", c.vocab_size);
  f.integer("hidden_size", c.hidden_size);
  f.integer("intermediate_size", c.intermediate_size);
  f.integer("moe_intermediate_size", c.moe_intermediate_size);
  f.integer("num_hidden_layers", c.num_hidden_layers);
  f.integer("first_k_dense_replace", c.first_k_dense_replace);
  f.integer("num_attention_heads", c.num_attention_heads);
  if (f.has("q_lora_rank")) {
    int64_t r = 0;
    f.integer("q_lora_rank", r);
    c.q_lora_rank = r;
  } else if (j.contains("q_lora_rank")) {
    c.q_lora_rank.reset();  // null: a plain q_proj (absent: HF's default 1536)
  }
  f.integer("kv_lora_rank", c.kv_lora_rank);
  f.integer("qk_nope_head_dim", c.qk_nope_head_dim);
  f.integer("qk_rope_head_dim", c.qk_rope_head_dim);
  f.integer("v_head_dim", c.v_head_dim);
  f.integer("n_routed_experts", c.n_routed_experts);
  f.integer("n_shared_experts", c.n_shared_experts);
  f.integer("num_experts_per_tok", c.num_experts_per_tok);
  f.integer("n_group", c.n_group);
  f.integer("topk_group", c.topk_group);
  f.number("routed_scaling_factor", c.routed_scaling_factor);
  f.boolean("norm_topk_prob", c.norm_topk_prob);
  f.string("scoring_func", c.scoring_func);
  f.number("rms_norm_eps", c.rms_norm_eps);
  f.integer("max_position_embeddings", c.max_position_embeddings);
  f.boolean("tie_word_embeddings", c.tie_word_embeddings);
  f.number("initializer_range", c.initializer_range);
  c.num_nextn_predict_layers = 0;  // a checkpoint without the field has no MTP layers
  f.integer("num_nextn_predict_layers", c.num_nextn_predict_layers);
  f.integer("num_mtp_layers", c.num_nextn_predict_layers);
  f.number("rope_theta", c.rope_theta);
  c.rope_scaling.reset();
  for (const char* key : {"rope_scaling", "rope_parameters"})
    if (f.has(key)) {
      if (!f.at(key).is_object()) f.fail(key, fmt::format("expected a map, got {}", f.at(key).dump()));
      read_rope(f.at(key), key, source, c, c.max_position_embeddings);
    }

  if (f.has("num_key_value_heads")) {
    int64_t kv = 0;
    f.integer("num_key_value_heads", kv);
    if (kv != c.num_attention_heads)
      f.fail("num_key_value_heads", fmt::format("{} differs from num_attention_heads = {}: MLA expands one latent to "
                                                "every head",
                                                kv, c.num_attention_heads));
  }
  f.require("hidden_act", "silu", "the experts and MLPs are SwiGLU");
  f.require("rope_interleave", true, "Daedalus imports DeepSeek's interleaved rope dims");
  f.require("attention_bias", false, "MLA projections have no bias");
  f.require("topk_method", "noaux_tc", "the router is DeepSeek-V3's bias-corrected group-limited top-k");
  f.require("moe_layer_freq", 1, "every layer after first_k_dense_replace is MoE");
  f.require("pretraining_tp", 1, "no tensor-parallel slicing of the projections");
  if (f.has("attention_dropout")) {
    double p = 0;
    f.number("attention_dropout", p);
    if (p != 0) f.fail("attention_dropout", fmt::format("{} is not supported (Daedalus has no dropout)", p));
  }
  // Dense models: HF builds an MoE in every layer from first_k_dense_replace on.
  if (c.first_k_dense_replace >= c.num_hidden_layers) c.n_routed_experts = 0;

  if (f.has("quantization_config")) {
    const json& q = f.at("quantization_config");
    Fields qf(q, source);
    std::string method, fmt_name = "e4m3", scale_fmt = "float";
    qf.string("quant_method", method);
    if (method != "fp8")
      qf.fail("quantization_config.quant_method",
              fmt::format("\"{}\" is not supported (DeepSeek's block FP8, quant_method fp8, is)", method));
    qf.string("fmt", fmt_name);
    if (fmt_name != "e4m3")
      qf.fail("quantization_config.fmt", fmt::format("\"{}\" is not supported (e4m3 is)", fmt_name));
    if (qf.has("weight_block_size")) {
      const json& b = q["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
          b[0].get<int64_t>() <= 0 || b[1].get<int64_t>() <= 0)
        qf.fail("quantization_config.weight_block_size", fmt::format("expected [rows, cols], got {}", b.dump()));
      out.fp8.block_rows = b[0].get<int64_t>();
      out.fp8.block_cols = b[1].get<int64_t>();
    } else {
      qf.fail("quantization_config.weight_block_size", "missing (per-tensor FP8 is not DeepSeek's format)");
    }
    qf.string("scale_fmt", scale_fmt);
    if (scale_fmt != "float" && scale_fmt != "ue8m0")
      qf.fail("quantization_config.scale_fmt", fmt::format("\"{}\" is not supported (float or ue8m0)", scale_fmt));
    qf.string("activation_scheme", fmt_name);  // dynamic: how an FP8 server quantizes activations
    out.fp8.enabled = true;
    out.fp8.ue8m0 = scale_fmt == "ue8m0";
  }
  f.string("torch_dtype", out.dtype);
  f.string("dtype", out.dtype);
  if (!out.dtype.empty() && out.dtype != "bfloat16" && out.dtype != "float16" && out.dtype != "float32")
    f.fail(j.contains("dtype") ? "dtype" : "torch_dtype",
           fmt::format("\"{}\" is not supported (bfloat16, float16, float32)", out.dtype));
  for (const char* key : {"head_dim", "qk_head_dim"}) f.has(key);  // derived by HF from qk_rope_head_dim
  out.ignored = f.unseen();
  try {
    c.validate();
  } catch (const InputError& e) {
    DAEDALUS_FAIL("{}: {}", source, e.what());
  }
  return out;
}

#endif  // DAEDALUS_MINIMAL

}  // namespace daedalus::train
