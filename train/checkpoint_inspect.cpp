// `daedalus inspect FILE`: what a checkpoint holds (step, recipe, config summary, parameter
// counts, every tensor with its shape and digest) and whether every dataset reads back with its
// Fletcher32 checksums intact. Two files with the same tensor values print the same digests.
#include <fmt/format.h>

#include "model/param_count.h"
#include "train/checkpoint.h"
#include "train/checkpoint_h5.h"
#include "train/config.h"
#include "train/metrics.h"

namespace daedalus::train {

namespace {

std::string config_summary(const std::string& yaml, const std::string& path) {
  if (yaml.empty()) return "(no config stored)";
  try {
    const RunConfig c = parse_config(yaml, {}, path + ":/trainer/config");
    const model::ModelConfig& m = c.model;
    std::string s = fmt::format("run {}, {} layers ({} dense), hidden {}, {} heads, vocab {}", c.run.name,
                                m.num_hidden_layers, std::min(m.first_k_dense_replace, m.num_hidden_layers),
                                m.hidden_size, m.num_attention_heads, m.vocab_size);
    if (m.n_routed_experts > 0)
      s += fmt::format(", {} routed + {} shared experts, top-{}", m.n_routed_experts, m.n_shared_experts,
                       m.num_experts_per_tok);
    if (m.num_nextn_predict_layers > 0) s += fmt::format(", MTP depth {}", m.num_nextn_predict_layers);
    const model::ParameterCounts p = model::count_parameters(m);
    s += fmt::format("\n             {} steps of {} x {} tokens; {} total parameters, {} activated per token",
                     c.train.steps, c.train.micro_batch_size, c.train.seq_len, format_count(double(p.total)),
                     format_count(double(p.activated)));
    return s;
  } catch (const std::exception& e) {
    return fmt::format("(stored config does not parse with this build: {})", e.what());
  }
}

}  // namespace

int inspect_checkpoint(const std::string& path, std::FILE* out) {
  CheckpointInfo info;
  try {  // the metadata is read in a child process first (probe_checkpoint): damage is a verdict, not a crash
    info = read_checkpoint_info(path);
  } catch (const CheckpointReadError& e) {
    fmt::print(out, "checkpoint  {}\nverdict     CORRUPT: {}\n", path, e.what());
    return 1;
  } catch (const std::exception& e) {  // missing, not HDF5, a newer format
    fmt::print(out, "checkpoint  {}\nverdict     UNUSABLE: {}\n", path, e.what());
    return 1;
  }
  const TrainerState& s = info.state;
  fmt::print(out, "checkpoint  {} ({:.1f} MB, format {}{})\n", path, double(info.file_bytes) / 1e6, s.format_version,
             s.format_version < 2 ? ": metadata without a checksum" : ", metadata checksum verified");
  fmt::print(out, "step        {}, {} tokens seen, {} samples consumed\n", s.step, s.tokens_seen, s.consumed_samples);
  fmt::print(out, "saved by    world {}, expert parallel {}, recipe {}\n", s.world_size, s.expert_parallel,
             s.recipe.empty() ? "?" : s.recipe);
  fmt::print(out, "config      {}\n", config_summary(s.config, path));

  int64_t model_elems = 0, model_tensors = 0, moments = 0, histories = 0;
  for (const TensorInfo& t : info.tensors) {
    if (t.path.rfind("/model/", 0) == 0) {
      model_elems += shape_numel(t.shape);
      ++model_tensors;
    } else if (t.path.rfind("/optimizer/", 0) == 0) {
      ++moments;
    } else {
      ++histories;
    }
  }
  fmt::print(out, "parameters  {} ({}) in {} /model tensors; ", format_count(double(model_elems)), model_elems,
             model_tensors);
  if (info.optimizer_step) {
    fmt::print(out, "optimizer step {}, {} moment tensors; ", *info.optimizer_step, moments);
  } else {
    fmt::print(out, "no optimizer state; ");
  }
  fmt::print(out, "{} fp8 amax-history tensors\n", histories);

  Verification v;
  try {
    v = verify_checkpoint(path, info);
  } catch (const std::exception& e) {
    fmt::print(out, "verdict     CORRUPT: {}\n", e.what());
    return 1;
  }
  size_t width = 0;
  for (const TensorInfo& t : info.tensors) width = std::max(width, t.path.size());
  fmt::print(out, "tensors     (name, dtype, shape, digest of the values)\n");
  for (size_t i = 0; i < info.tensors.size(); ++i) {
    const TensorInfo& t = info.tensors[i];
    fmt::print(out, "  {:<{}}  {} {:<18}  {}\n", t.path, width, t.dtype, shape_str(t.shape),
               v.digests[i] != 0 ? fmt::format("{:016x}", v.digests[i]) : std::string("unreadable"));
  }
  if (v.verdict == Verdict::ok) {
    fmt::print(out, "verdict     OK: {} datasets read, every Fletcher32 checksum verified, complete\n",
               v.datasets_read);
    return 0;
  }
  fmt::print(out, "verdict     {}: {}\n", verdict_name(v.verdict), v.problems.front());
  for (size_t i = 1; i < v.problems.size() && i < 10; ++i) fmt::print(out, "            {}\n", v.problems[i]);
  if (v.problems.size() > 10) fmt::print(out, "            ... and {} more\n", v.problems.size() - 10);
  return 1;
}

}  // namespace daedalus::train
