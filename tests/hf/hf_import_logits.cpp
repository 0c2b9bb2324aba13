// Our logits and loss for a HuggingFace directory imported with train/import_hf, for the import
// parity harness (tests/hf/hf_import_parity.py, docs/hf-parity.md):
//   hf_import_logits DIR IDS OUT
// DIR: an HF DeepseekV3 directory (any format import-hf reads); IDS: a safetensors file with
// input_ids I64 [B, T]; writes OUT (safetensors): logits F32 [B, T, V] and loss F32 [] (mean
// next-token cross-entropy over positions 0..T-2), in fp32 with dropless routing.
#include <fmt/format.h>

#include "model/causal_lm.h"
#include "train/hf_config.h"
#include "train/import_hf.h"
#include "train/safetensors.h"

using namespace daedalus;

int main(int argc, char** argv) {
  if (argc != 4) {
    fmt::print(stderr, "usage: hf_import_logits DIR IDS OUT\n");
    return 1;
  }
  try {
    const std::string dir = argv[1];
    const train::HfModelConfig hf = train::read_hf_model(dir);
    model::LmOptions o;
    o.config = hf.model;
    fp8::Recipe fp32;
    fp32.kind = fp8::RecipeKind::fp32;
    o.recipes = fp8::RecipeTable(fp32);
    o.moe.capacity_factor.reset();
    model::CausalLM lm(o);
    const train::HfImportReport r = train::load_hf_weights(dir, hf, lm, /*strict=*/true);
    Tensor ids;
    for (auto& [name, t] : read_safetensors(argv[2]))
      if (name == "input_ids") ids = t.to(DType::i64);
    if (!ids.defined()) throw InputError(fmt::format("{}: no tensor 'input_ids'", argv[2]));
    const int64_t b = ids.size(0), t = ids.size(1);
    const std::vector<int64_t> flat = ids.to_vector<int64_t>();
    std::vector<int64_t> targets(flat.size());
    for (int64_t i = 0; i < b * t; ++i) targets[size_t(i)] = (i + 1) % t == 0 ? -100 : flat[size_t(i + 1)];
    NoGradGuard no_grad;
    const Tensor logits = lm.logits(ids).value();
    const Tensor loss = lm.forward(ids, Tensor::from_vector(targets, {b, t})).lm_loss.value();
    write_safetensors(argv[3], {{"logits", logits}, {"loss", loss}});
    fmt::print("{}: {} tensors, {:.1f} MB in {:.2f} s; [{}, {}] tokens, loss {:.8f}\n", dir, r.tensors,
               double(r.bytes) / 1e6, r.seconds, b, t, loss.item());
    for (const std::string& n : r.notes) fmt::print("  note: {}\n", n);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "hf_import_logits: {}\n", e.what());
    return 2;
  }
}
