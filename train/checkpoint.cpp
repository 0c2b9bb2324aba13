// Loading checkpoints (the layout is in checkpoint.h; saving is checkpoint_save.cpp, files and
// verification checkpoint_files.cpp, the metadata checksum and probe checkpoint_probe.cpp).
#include "train/checkpoint.h"

#include <set>

#include "train/checkpoint_h5.h"
#include "train/config.h"

namespace daedalus::train {

namespace {

void restore_history(fp8::LinearState& s, int64_t len, const float* rows, int64_t stored_len) {
  fp8::AmaxHistory* histories[3] = {&s.x, &s.w, &s.dy};
  for (int k = 0; k < 3; ++k) {
    *histories[k] = fp8::AmaxHistory(int(len));
    for (int64_t i = 0; i < stored_len; ++i) {
      const float a = rows[k * stored_len + i];
      if (a != h5::kEmptySlot) histories[k]->push(a);
    }
  }
}

// Reads the element ranges `ranges` of `dataset` into `target` (their elements back to back).
void read_ranges_into(hid_t file, const std::string& dataset_path, const std::string& path,
                      const std::vector<ElementRange>& ranges, Tensor target) {
  if (target.numel() == 0) return;  // this rank owns none of it
  h5::Handle d = h5::open_dataset(file, dataset_path);
  if (!d.valid())
    throw CheckpointReadError(fmt::format("{}: {}: cannot open: {}", path, dataset_path, h5::take_error_stack()));
  const Shape file_shape = h5::dataset_shape(d.get());
  Tensor host = Tensor::empty({target.numel()});
  const int64_t calls = std::max<int64_t>(1, (host.numel() * 4 + h5::kMaxPieceBytes - 1) / h5::kMaxPieceBytes);
  int64_t at = 0;
  std::string error;
  for (const auto& piece : h5::split_ranges(ranges, calls)) {
    if (!h5::read_elements(d.get(), file_shape, piece, host.data<float>() + at, &error))
      throw CheckpointReadError(fmt::format("{}: {}: {}", path, dataset_path, h5::read_failure(error)));
    for (const auto& [b, e] : piece) at += e - b;
  }
  target.copy_(host.view(target.shape()));
}

// Reads rows [row0, row0 + local.size(0)) of `dataset` into `target` (any dtype and device).
void read_into(hid_t file, const std::string& dataset_path, const std::string& path, int64_t row0, Tensor target) {
  h5::Handle d = h5::open_dataset(file, dataset_path);
  if (!d.valid())
    throw CheckpointReadError(fmt::format("{}: {}: cannot open: {}", path, dataset_path, h5::take_error_stack()));
  const Shape file_shape = h5::dataset_shape(d.get());
  Tensor host = Tensor::empty(target.shape());
  const int64_t elems = h5::row_elems(file_shape);
  std::string error;
  for (auto [begin, end] : h5::row_pieces(target.size(0), elems)) {
    if (!h5::read_rows(d.get(), file_shape, row0 + begin, end - begin, host.data<float>() + begin * elems, &error))
      throw CheckpointReadError(fmt::format("{}: {}: {}", path, dataset_path, h5::read_failure(error)));
  }
  target.copy_(host);
}

}  // namespace

std::string LoadReport::describe() const {
  std::string s;
  for (const std::string& n : missing) s += fmt::format("  missing in the checkpoint: {}\n", n);
  for (const std::string& n : unexpected) s += fmt::format("  not in this model: {}\n", n);
  for (const std::string& n : mismatched) s += fmt::format("  shape differs: {}\n", n);
  return s;
}

namespace {

// Whether module `name` kept delayed-scaling state in the run that saved `state`: its stored config
// (verified by the metadata checksum) resolved the way the trainer does; the stored recipe name
// alone when that config does not parse with this build.
bool saved_delayed(const TrainerState& state, const std::string& name) {
  try {
    const RunConfig c = parse_config(state.config, {}, "/trainer/config");
    return fp8::RecipeTable(c.precision.recipe, c.precision.overrides).for_module(name).delayed();
  } catch (const std::exception&) {
    return state.recipe == fp8::recipe_name(fp8::RecipeKind::fp8_tensor_delayed) &&
           !fp8::RecipeTable::always_high_precision(name);
  }
}

TrainerState load(const std::string& path, model::CausalLM& model, AdamW* optimizer, const LoadOptions& options,
                  const Placement& placement, LoadReport* report) {
  h5::Handle file = h5::open_checkpoint(path);
  TrainerState state = h5::read_trainer_state(file.get(), path);
  if (!state.complete)
    throw CheckpointReadError(
        fmt::format("{}: incomplete: no `complete` attribute on /trainer (the save did not finish)", path));
  // Every group a save writes: one missing is damage, never "nothing to load".
  h5::Handle groups[3];
  const char* names[3] = {"model", "optimizer", "fp8"};
  for (int i = 0; i < 3; ++i) {
    groups[i] = h5::open_group(file.get(), names[i]);
    if (!groups[i].valid()) throw CheckpointReadError(fmt::format("{}: no /{} group", path, names[i]));
  }

  // Match names and shapes before reading anything.
  LoadReport r;
  std::set<std::string> in_file;
  for (const std::string& n : h5::list_names(groups[0].get())) in_file.insert(n);
  std::vector<const model::Parameter*> to_load;
  for (const model::Parameter& p : model.parameters().all()) {
    if (in_file.erase(p.name) == 0) {
      r.missing.push_back(p.name);
      continue;
    }
    h5::Handle d = h5::open_dataset(groups[0].get(), p.name);
    if (!d.valid()) throw CheckpointReadError(fmt::format("{}: /model/{}: not a dataset", path, p.name));
    const Shape file_shape = h5::dataset_shape(d.get()), want = p.global_shape();
    if (file_shape != want) {
      r.mismatched.push_back(
          fmt::format("{}: checkpoint {}, model {}", p.name, shape_str(file_shape), shape_str(want)));
      continue;
    }
    to_load.push_back(&p);
  }
  r.unexpected.assign(in_file.begin(), in_file.end());
  if (options.strict && !r.clean()) {
    throw InputError(
        fmt::format("{}: the checkpoint does not match this model ({} missing, {} unexpected, {} with another shape{}):"
                    "\n{}",
                    path, r.missing.size(), r.unexpected.size(), r.mismatched.size(),
                    options.strict_settable ? "; checkpoint.strict: false loads what matches" : "", r.describe()));
  }
  NoGradGuard no_grad;
  for (const model::Parameter* p : to_load) {
    read_into(file.get(), "/model/" + p->name, path, p->expert ? p->expert_offset : 0, p->var.value());
    ++r.tensors;
  }

  if (optimizer != nullptr && options.optimizer) {
    const std::optional<int64_t> step = h5::read_int_attr(groups[1].get(), "step");
    if (!step)
      throw CheckpointReadError(
          fmt::format("{}: no optimizer state (/optimizer has no step): a weights-only checkpoint "
                      "cannot resume; use checkpoint.init_from",
                      path));
    for (const Param& op : optimizer->params()) {
      const model::Parameter& p = model.parameters().get(op.name);
      for (const char* key : {"exp_avg", "exp_avg_sq"}) {
        const std::string name = "/optimizer/" + op.name + "/" + key;
        h5::Handle d = h5::open_dataset(file.get(), name);
        // The manifest is checksummed: a moment that is not there was never written.
        if (!d.valid())
          throw CheckpointReadError(fmt::format("{}: {} is missing: the file has no optimizer state for {} (saved with "
                                       "another set of trained tensors?)",
                                       path, name, op.name));
        const Shape file_shape = h5::dataset_shape(d.get());
        if (file_shape != p.global_shape())
          throw InputError(fmt::format("{}: {} has shape {}, this model's {} has {}", path, name, shape_str(file_shape),
                                       op.name, shape_str(p.global_shape())));
        Tensor& moment = key == std::string("exp_avg") ? optimizer->exp_avg(op.name) : optimizer->exp_avg_sq(op.name);
        if (op.owned) {  // ZeRO-1: this rank's shard, whatever layout wrote the file
          read_ranges_into(file.get(), name, path, h5::zero_file_ranges(p, *op.owned), moment);
        } else {
          read_into(file.get(), name, path, p.expert ? p.expert_offset : 0, moment);
        }
      }
    }
    optimizer->set_step_count(*step);
  }

  if (options.fp8) {
    const int replica = placement.rank / placement.ep_size;
    // The module's histories, or nullopt when the saving run kept none for it (another recipe then).
    auto read_all = [&](const std::string& name, size_t rank, Shape& shape) -> std::optional<std::vector<float>> {
      h5::Handle d = h5::open_dataset(groups[2].get(), name);
      if (!d.valid()) {
        if (saved_delayed(state, name))
          throw CheckpointReadError(fmt::format("{}: /fp8/{} is missing, but the run that saved it kept "
                                                "delayed-scaling histories for that module",
                                                path, name));
        return std::nullopt;
      }
      shape = h5::dataset_shape(d.get());
      if (shape.size() != rank || shape[rank - 2] != 3 || shape[rank - 1] < 1)
        throw CheckpointReadError(fmt::format("{}: /fp8/{}: shape {} is not [..., 3, amax_history_len]", path, name,
                                              shape_str(shape)));
      std::vector<float> v(size_t(shape_numel(shape)));
      std::string error;
      if (!h5::read_rows(d.get(), shape, 0, shape[0], v.data(), &error))
        throw CheckpointReadError(fmt::format("{}: /fp8/{}: {}", path, name, h5::read_failure(error)));
      return v;
    };
    for (model::Linear* l : model.linears()) {
      Shape s;
      if (!l->recipe().delayed()) continue;
      const auto v = read_all(l->name(), 3, s);
      if (!v) continue;
      const int64_t row = placement.rank % s[0];
      restore_history(l->state(), l->recipe().amax_history_len, v->data() + row * 3 * s[2], s[2]);
      ++r.fp8_histories;
    }
    for (model::GroupedLinear* l : model.grouped_linears()) {
      Shape s;
      if (!l->recipe().delayed() || l->states().empty()) continue;
      const auto v = read_all(l->name(), 4, s);
      if (!v) continue;
      const model::Parameter& p = model.parameters().get(l->name() + ".weight");
      if (s[1] != p.num_experts)
        throw InputError(fmt::format("{}: /fp8/{} has histories of {} experts, this model has {}", path, l->name(),
                                     s[1], p.num_experts));
      const int64_t row = replica % s[0];
      for (size_t e = 0; e < l->states().size(); ++e) {
        const int64_t expert = p.expert_offset + int64_t(e);
        restore_history(l->states()[e], l->recipe().amax_history_len, v->data() + (row * s[1] + expert) * 3 * s[3],
                        s[3]);
      }
      ++r.fp8_histories;
    }
  }
  if (report != nullptr) *report = std::move(r);
  return state;
}

}  // namespace

TrainerState load_checkpoint(const std::string& path, model::CausalLM& model, AdamW* optimizer,
                             const LoadOptions& options, const Placement& placement, LoadReport* report) {
  probe_checkpoint(path);  // damaged metadata ends here, in a child process, not in this one
  try {
    return load(path, model, optimizer, options, placement, report);
  } catch (const CheckpointReadError& e) {
    const std::string m = e.what();
    if (m.rfind(path, 0) == 0) throw;
    throw CheckpointReadError(fmt::format("{}: {}", path, m));
  }
}

}  // namespace daedalus::train
