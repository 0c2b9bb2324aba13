// HuggingFace import: the read plan (names, shapes, expert slices) checked whole, then the reads.
#include "train/import_hf.h"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#if !DAEDALUS_MINIMAL
#include <yaml-cpp/yaml.h>
#endif

#include "autograd/check.h"
#include "model/stages.h"
#include "train/checkpoint.h"
#include "train/hf_weights.h"
#include "train/trainer.h"

namespace daedalus::train {

namespace {

// Where one model parameter comes from.
struct Source {
  const model::Parameter* param = nullptr;
  enum class Kind : uint8_t { whole, per_expert, stacked } kind = Kind::whole;
  std::string name;         // whole, stacked: the HF tensor
  std::string expert_head;  // per_expert: "model.layers.L.mlp.experts."
  std::string expert_tail;  // per_expert: "gate_proj.weight"
  int64_t half = -1;        // stacked gate_up_proj: 0 gate rows, 1 up rows; -1 whole rows
};

// "model.layers.L.mlp.experts.gate_proj.weight" -> ("model.layers.L.mlp.experts.", "gate").
std::optional<std::pair<std::string, std::string>> expert_parts(const std::string& name) {
  const std::string marker = ".experts.";
  const size_t at = name.find(marker);
  if (at == std::string::npos) return std::nullopt;
  const std::string head = name.substr(0, at + marker.size()), tail = name.substr(at + marker.size());
  for (const char* kind : {"gate", "up", "down"})
    if (tail == std::string(kind) + "_proj.weight") return std::make_pair(head, std::string(kind));
  return std::nullopt;
}

Shape drop_first(const Shape& s) { return Shape(s.begin() + 1, s.end()); }

// "model.layers.12.foo" -> 12 (nullopt for other names).
std::optional<int64_t> layer_of(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (!name.starts_with(prefix)) return std::nullopt;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return std::nullopt;
  try {
    return std::stoll(name.substr(prefix.size(), dot - prefix.size()));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string list_of(const std::vector<std::string>& items, size_t at_most = 12) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < at_most; ++i) s += "\n  " + items[i];
  if (items.size() > at_most) s += fmt::format("\n  ... and {} more", items.size() - at_most);
  return s;
}

}  // namespace

HfModelConfig read_hf_model(const std::string& dir) {
  HfModelConfig hf = read_hf_config(dir);
  model::ModelConfig& c = hf.model;
  if (c.num_nextn_predict_layers == 0) return hf;
  const HfWeights w(dir, hf.fp8);
  int64_t present = 0;
  while (present < c.num_nextn_predict_layers &&
         w.contains(fmt::format("model.layers.{}.eh_proj.weight", c.num_hidden_layers + present)))
    ++present;
  if (present < c.num_nextn_predict_layers) {
    hf.ignored.push_back(fmt::format("num_nextn_predict_layers (MTP layers) {} -> {}: the weights hold {}",
                                     c.num_nextn_predict_layers, present, present));
    c.num_nextn_predict_layers = present;
  }
  return hf;
}

HfImportReport load_hf_weights(const std::string& dir, const HfModelConfig& hf, model::CausalLM& model, bool strict,
                               bool round_bf16) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  const HfWeights w(dir, hf.fp8);
  const model::ModelConfig& c = model.options().config;
  HfImportReport r;
  r.files = w.files();

  std::set<std::string> consumed;
  std::vector<Source> plan;
  const auto shape_ok = [&](const std::string& name, const Shape& want) {
    const Shape got = w.shape(name);
    if (got == want) return true;
    r.mismatched.push_back(
        fmt::format("{}: {} in {}, the model's is {}", name, shape_str(got), w.file_of(name), shape_str(want)));
    return false;
  };
  for (const model::Parameter& p : model.parameters().all()) {
    Source s;
    s.param = &p;
    if (!p.expert) {
      s.name = p.name;
      consumed.insert(p.name);
      if (!w.contains(p.name)) {
        r.missing.push_back(p.name);
      } else if (shape_ok(p.name, p.global_shape())) {
        plan.push_back(s);
      }
      continue;
    }
    const auto parts = expert_parts(p.name);
    DAEDALUS_CHECK(parts.has_value(), "import: expert tensor {} has no HF name rule", p.name);
    const auto& [head, kind] = *parts;
    const Shape global = p.global_shape();  // [E, out, in]
    const std::string tail = kind + "_proj.weight";
    if (w.contains(head + "0." + tail)) {  // per-expert names
      bool ok = true;
      for (int64_t e = 0; e < p.num_experts; ++e) {
        const std::string name = head + std::to_string(e) + "." + tail;
        consumed.insert(name);
        if (!w.contains(name)) {
          r.missing.push_back(name);
          ok = false;
        } else if (e >= p.expert_offset && e < p.expert_offset + p.var.value().size(0)) {
          ok &= shape_ok(name, drop_first(global));
        }
      }
      s.kind = Source::Kind::per_expert;
      s.expert_head = head;
      s.expert_tail = tail;
      if (ok) plan.push_back(s);
      continue;
    }
    // transformers 5's stacked layout: gate_up_proj [E, 2I, H], down_proj [E, H, I].
    s.kind = Source::Kind::stacked;
    s.name = head + (kind == "down" ? "down_proj" : "gate_up_proj");
    s.half = kind == "gate" ? 0 : (kind == "up" ? 1 : -1);
    consumed.insert(s.name);
    Shape want = global;
    if (s.half >= 0) want[1] *= 2;
    if (!w.contains(s.name)) {
      r.missing.push_back(fmt::format("{} (or per-expert {}0.{})", s.name, head, tail));
    } else if (shape_ok(s.name, want)) {
      plan.push_back(s);
    }
  }

  // The directory's other tensors: MTP copies of the shared embedding and head, MTP layers this
  // config leaves out, a tied lm_head; anything else is unexpected.
  std::vector<std::pair<std::string, std::string>> mtp_copies;  // (HF name, the model's shared tensor)
  const std::string head_name = c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  std::set<int64_t> skipped_layers;
  for (const std::string& name : w.names()) {
    if (consumed.count(name)) continue;
    // A pipeline stage reads its own layers; the other stages' tensors are theirs, not unexpected.
    if (model::other_stage_holds(name, model.stage(), c, model.holds_embedding())) continue;
    const std::optional<int64_t> layer = layer_of(name);
    if (layer && *layer >= c.num_hidden_layers) {
      const std::string module = fmt::format("model.layers.{}.", *layer);
      if (*layer >= c.num_hidden_layers + c.num_nextn_predict_layers) {
        skipped_layers.insert(*layer);
        continue;
      }
      if (name == module + "embed_tokens.weight") {
        mtp_copies.emplace_back(name, "model.embed_tokens.weight");
        continue;
      }
      if (name == module + "shared_head.head.weight") {
        mtp_copies.emplace_back(name, head_name);
        continue;
      }
    }
    if (name == "lm_head.weight" && c.tie_word_embeddings) {
      r.notes.push_back("lm_head.weight not imported: tie_word_embeddings is true (the head is the embedding)");
      continue;
    }
    r.unexpected.push_back(fmt::format("{} (in {})", name, w.file_of(name)));
  }
  if (!skipped_layers.empty())
    r.notes.push_back(fmt::format("model.layers.{}..{}.* not imported: config.json's num_nextn_predict_layers = {}",
                                  *skipped_layers.begin(), *skipped_layers.rbegin(), c.num_nextn_predict_layers));
  if (strict && (!r.missing.empty() || !r.unexpected.empty() || !r.mismatched.empty())) {
    std::string what;
    if (!r.missing.empty())
      what += fmt::format("\n{} tensors the model needs are missing:{}", r.missing.size(), list_of(r.missing));
    if (!r.mismatched.empty())
      what += fmt::format("\n{} tensors have another shape:{}", r.mismatched.size(), list_of(r.mismatched));
    if (!r.unexpected.empty())
      what += fmt::format("\n{} tensors are not in this model:{}", r.unexpected.size(), list_of(r.unexpected));
    throw InputError(fmt::format("{}: the weights do not match config.json's model{}", dir, what));
  }

  // The reads, one HF tensor at a time.
  NoGradGuard no_grad;
  const auto finish = [&](Tensor t) { return round_bf16 ? t.to(DType::bf16).to(DType::f32) : t; };
  for (const Source& s : plan) {
    const model::Parameter& p = *s.param;
    Tensor target = p.var.value();
    switch (s.kind) {
      case Source::Kind::whole: target.copy_(finish(w.read_f32(s.name)).reshape(target.shape())); break;
      case Source::Kind::per_expert:
        for (int64_t e = 0; e < target.size(0); ++e) {
          const std::string name = s.expert_head + std::to_string(p.expert_offset + e) + "." + s.expert_tail;
          target.select(0, e).copy_(finish(w.read_f32(name)));
        }
        break;
      case Source::Kind::stacked: {
        const int64_t rows = target.size(1);  // I (gate, up) or H (down)
        const Tensor t = w.read_f32(s.name, p.expert_offset, target.size(0), s.half >= 0 ? rows : 0);
        target.copy_(finish(s.half >= 0 ? t.slice(1, s.half * rows, (s.half + 1) * rows) : t));
        break;
      }
    }
    ++r.tensors;
  }
  for (const auto& [name, shared] : mtp_copies) {
    const model::Parameter* p = model.parameters().find(shared);
    if (p == nullptr) continue;
    const Tensor mine = p->var.value().to(Device::cpu()).to(DType::f32).contiguous();
    const Tensor theirs = finish(w.read_f32(name));
    const bool same =
        theirs.shape() == mine.shape() && std::memcmp(theirs.data_ptr(), mine.data_ptr(), size_t(mine.nbytes())) == 0;
    if (!same)
      r.notes.push_back(
          fmt::format("{} differs from {}: Daedalus's MTP shares the main model's; this copy is not "
                      "imported",
                      name, shared));
  }
  r.bytes = w.bytes_read();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.cpu_seconds = double(std::clock() - c0) / CLOCKS_PER_SEC;
  return r;
}

#if DAEDALUS_MINIMAL

void adopt_hf_model(RunConfig&, const std::string& dir) { DAEDALUS_FAIL("{}: HF import needs yaml-cpp", dir); }

#else

void adopt_hf_model(RunConfig& config, const std::string& dir) {
  const HfModelConfig hf = read_hf_model(dir);
  RunConfig theirs = config;
  theirs.model = hf.model;
  const YAML::Node defaults = YAML::Load(to_yaml(RunConfig{}))["model"];
  const YAML::Node mine = YAML::Load(to_yaml(config))["model"];
  const YAML::Node want = YAML::Load(to_yaml(theirs))["model"];
  for (auto it = mine.begin(); it != mine.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string value = YAML::Dump(it->second), dflt = YAML::Dump(defaults[key]),
                      hf_value = YAML::Dump(want[key]);
    if (value != dflt && value != hf_value)
      DAEDALUS_FAIL(
          "model.{}: the config sets {}, but checkpoint.init_from {}/config.json has {} (leave model.{} out: "
          "an HF directory brings its own model)",
          key, value, dir, hf_value, key);
  }
  config.model = hf.model;
}

#endif

HfImportSummary import_hf(const std::string& dir, const std::string& out, DType dtype,
                          const std::shared_ptr<parallel::Communicator>& world) {
  DAEDALUS_CHECK(dtype == DType::f32 || dtype == DType::bf16, "import-hf: --dtype {} (expected fp32 or bf16)",
                 dtype_name(dtype));
  HfImportSummary summary;
  summary.config = read_hf_model(dir);
  RunConfig config;
  config.model = summary.config.model;
  config.run.name = std::filesystem::path(dir).filename().string();
  if (config.run.name.empty()) config.run.name = "import";
  config.run.dir = "runs/" + config.run.name;
  // Data the stored config can validate with anywhere; eval and fine-tuning set their own.
  config.data.format = DataFormat::synthetic;
  config.data.synthetic.vocab = std::min<int64_t>(config.data.synthetic.vocab, config.model.vocab_size);
  config.data.synthetic.branching = std::min<int>(config.data.synthetic.branching, int(config.data.synthetic.vocab));
  config.train.seq_len = std::min(config.train.seq_len, config.model.max_position_embeddings);
  if (summary.config.fp8.enabled) {  // an FP8 release trains (and exports back) with its own block scales
    config.precision.recipe.kind = fp8::RecipeKind::fp8_block;
    config.precision.recipe.scale.power_of_two = summary.config.fp8.ue8m0;
  }
  config.validate(world->size());

  RunConfig cpu = config;  // the import itself runs on the host
  cpu.train.device = DeviceChoice::cpu;
  const parallel::ProcessGroups groups = make_run_groups(cpu, world);
  model::CausalLM model(lm_options(cpu, &groups));
  summary.report = load_hf_weights(dir, summary.config, model, /*strict=*/true, dtype == DType::bf16);
  for (const model::Parameter& p : model.parameters().all()) summary.parameters += shape_numel(p.global_shape());

  TrainerState state;
  state.config = to_yaml(config);
  state.recipe = std::string(fp8::recipe_name(config.precision.recipe.kind));
  state.complete = true;
  summary.out_bytes = save_checkpoint(out, model, nullptr, state, groups).bytes;
  return summary;
}

}  // namespace daedalus::train
