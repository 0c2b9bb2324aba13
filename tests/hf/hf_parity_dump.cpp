// Writes a random tiny DeepSeek-V3 model and our outputs on random tokens for the HuggingFace
// parity harness (tests/hf/hf_parity.py, docs/hf-parity.md):
//   OUT/config.json, OUT/model.safetensors      (train/export_hf, fp32)
//   OUT/reference.safetensors                   input_ids [B, T], logits [B, T, V], loss []
// Usage: hf_parity_dump OUT [--q-proj]   (--q-proj: q_lora_rank null, a single q_proj)
#include <fmt/format.h>

#include <cstring>

#include "autograd/generator.h"
#include "model/causal_lm.h"
#include "train/export_hf.h"

using namespace daedalus;

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: hf_parity_dump OUT [--q-proj]\n");
    return 1;
  }
  const std::string out = argv[1];
  const bool q_proj = argc > 2 && std::strcmp(argv[2], "--q-proj") == 0;
  try {
    model::LmOptions o;
    model::ModelConfig& c = o.config;
    c.vocab_size = 101;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.moe_intermediate_size = 12;
    c.num_hidden_layers = 3;
    c.first_k_dense_replace = 1;
    c.num_attention_heads = 4;
    c.q_lora_rank = 24;
    if (q_proj) c.q_lora_rank.reset();
    c.kv_lora_rank = 16;
    c.qk_nope_head_dim = 8;
    c.qk_rope_head_dim = 8;
    c.v_head_dim = 12;
    c.n_routed_experts = 8;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 3;
    c.n_group = 4;
    c.topk_group = 2;
    c.routed_scaling_factor = 2.5;
    c.max_position_embeddings = 64;
    c.initializer_range = 0.1;
    c.num_nextn_predict_layers = 1;
    fp8::Recipe fp32;
    fp32.kind = fp8::RecipeKind::fp32;
    o.recipes = fp8::RecipeTable(fp32);
    o.seed = 2024;
    model::CausalLM lm(o);
    // Give the norms and router biases non-trivial values so that HF must load and use them.
    Generator gen(77);
    for (const model::Parameter& p : lm.parameters().all()) {
      const bool norm = p.name.find("norm") != std::string::npos;
      const bool bias = p.name.find("e_score_correction_bias") != std::string::npos;
      if (!norm && !bias) continue;
      Tensor v = p.var.value();
      std::vector<float> noise(static_cast<size_t>(v.numel()));
      gen.fill_uniform(noise.data(), v.numel(), norm ? 0.5 : -0.05, norm ? 1.5 : 0.05);
      v.copy_(Tensor::from_vector(noise, v.shape()));
    }
    const int64_t b = 2, t = 13;
    std::vector<int64_t> ids(static_cast<size_t>(b * t)), targets(ids.size());
    for (int64_t& id : ids) id = int64_t(gen.next_u64() % uint64_t(c.vocab_size));
    for (int64_t i = 0; i < b * t; ++i) targets[size_t(i)] = (i + 1) % t == 0 ? -100 : ids[size_t(i + 1)];
    const Tensor input_ids = Tensor::from_vector(ids, {b, t});
    NoGradGuard no_grad;
    const Tensor logits = lm.logits(input_ids).value();
    const Tensor loss = lm.forward(input_ids, Tensor::from_vector(targets, {b, t})).lm_loss.value();
    train::HfExportOptions export_options;
    export_options.dtype = DType::f32;
    train::export_hf(lm.parameters(), c, out, export_options);
    write_safetensors(out + "/reference.safetensors", {{"input_ids", input_ids}, {"logits", logits}, {"loss", loss}});
    fmt::print("wrote {} (q_lora_rank {}), loss {:.8f}\n", out, q_proj ? "null" : "24", loss.item());
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "hf_parity_dump: {}\n", e.what());
    return 2;
  }
}
