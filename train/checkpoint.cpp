// Saving and loading checkpoints (the layout is in checkpoint.h; files, verification and the
// resume choice are checkpoint_files.cpp).
#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "train/checkpoint_h5.h"

namespace daedalus::train {

namespace {

using Clock = std::chrono::steady_clock;
constexpr float kEmptySlot = -1.0f;  // an unused amax-history slot (amaxes are >= 0 or NaN)

Tensor host_f32(const Tensor& t) {
  Tensor h = t.to(Device::cpu());
  if (h.dtype() != DType::f32) h = h.to(DType::f32);
  return h.contiguous();
}

int64_t row_elems(const Shape& shape) {
  int64_t n = 1;
  for (size_t d = 1; d < shape.size(); ++d) n *= shape[d];
  return n;
}

// The MPI communicator behind the trainer's world: MPI_COMM_WORLD (the world is its duplicate).
MPI_Comm world_comm(const parallel::Communicator& world) {
  int size = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (size != world.size() || rank != world.rank())
    throw Error(fmt::format("checkpoint: the trainer's world (rank {} of {}) is not MPI_COMM_WORLD (rank {} of {})",
                            world.rank(), world.size(), rank, size));
  return MPI_COMM_WORLD;
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw Error(fmt::format("checkpoint: cannot open {} to fsync it: {}", path, std::strerror(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  // Some file systems cannot fsync a directory (EINVAL); the file itself must sync.
  if (rc != 0 && !(directory && errno == EINVAL))
    throw Error(fmt::format("checkpoint: fsync {} failed: {}", path, std::strerror(errno)));
}

// One dataset of the file. HDF5 creates datasets collectively, so every rank walks the same list
// of records in the same order, including the tensors of other pipeline stages (their names and
// shapes come from those stages: gather_records); only the ranks of the record's stage write data.
struct Record {
  std::string path;  // "model/<name>", "optimizer/<name>/exp_avg", "fp8/<module>"
  Shape shape;       // the whole tensor (stacked experts: all of them)
  bool experts = false;
  int stage = 0;  // the first pipeline stage holding it: its ranks write it
};

// This rank's data for a record it holds: the tensor and, for stacked experts, its first expert.
struct Held {
  Tensor value;
  int64_t offset = 0;
};

// Records of every stage, in stage order, each path once (a shared embedding is written by the
// first stage). Collective over groups.pipeline; each rank passes its own stage's records.
std::vector<Record> gather_records(std::vector<Record> mine, const parallel::ProcessGroups& g) {
  for (Record& r : mine) r.stage = g.pp_stage;
  if (g.pp_size == 1) return mine;
  std::string text;  // one line per record: path \t experts \t dims,
  for (const Record& r : mine) {
    text += fmt::format("{}\t{}\t", r.path, r.experts ? 1 : 0);
    for (int64_t d : r.shape) text += fmt::format("{},", d);
    text += "\n";
  }
  parallel::Communicator& pipe = *g.pipeline;
  const Tensor lengths = Tensor::empty({pipe.size()}, DType::i64);
  pipe.all_gather(Tensor::from_vector<int64_t>({int64_t(text.size())}, {1}), lengths);
  const std::vector<int64_t> n = lengths.to_vector<int64_t>();
  const int64_t longest = *std::max_element(n.begin(), n.end());
  std::vector<int32_t> chars(size_t(longest), 0);
  for (size_t i = 0; i < text.size(); ++i) chars[i] = int32_t(uint8_t(text[i]));
  const Tensor all = Tensor::empty({pipe.size() * longest}, DType::i32);
  pipe.all_gather(Tensor::from_vector(chars, {longest}), all);
  const std::vector<int32_t> every = all.to_vector<int32_t>();
  std::vector<Record> out;
  std::set<std::string> seen;
  for (int stage = 0; stage < pipe.size(); ++stage) {
    std::string t;
    for (int64_t i = 0; i < n[size_t(stage)]; ++i) t.push_back(char(every[size_t(stage * longest + i)]));
    for (size_t at = 0; at < t.size();) {
      const size_t end = t.find('\n', at), tab1 = t.find('\t', at), tab2 = t.find('\t', tab1 + 1);
      Record r;
      r.path = t.substr(at, tab1 - at);
      r.experts = t[tab1 + 1] == '1';
      for (size_t d = tab2 + 1; d < end;) {
        const size_t comma = t.find(',', d);
        r.shape.push_back(std::stoll(t.substr(d, comma - d)));
        d = comma + 1;
      }
      r.stage = stage;
      at = end + 1;
      if (seen.insert(r.path).second) out.push_back(std::move(r));
    }
  }
  return out;
}

// Collective writes of one file: every rank calls write() for every record, in the same order.
class Writer {
 public:
  Writer(hid_t xfer, const parallel::ProcessGroups& g)
      : xfer_(xfer),
        stage_(g.pp_stage),
        rank_(g.stage->rank()),
        ranks_(g.stage->size()),
        ep_size_(g.ep_size),
        replica_(g.stage->rank() / g.ep_size),
        replicas_(g.stage->size() / g.ep_size) {}

  // A tensor every rank of its stage holds the same copy of: one of them (round-robin over
  // records) writes it. Stacked experts: the ranks of one replica (round-robin) write their
  // slices, one expert per chunk. `held` is this rank's data (null when its stage has none).
  void write(hid_t dataset, const Record& r, const Held* held) {
    const bool ours = r.stage == stage_ && held != nullptr;
    const int64_t turn = next_++;
    const int64_t elems = row_elems(r.shape);
    const int64_t rows = r.experts ? r.shape[0] / ep_size_ : r.shape[0];
    const bool mine = ours && (r.experts ? turn % replicas_ == replica_ : turn % ranks_ == rank_);
    const Tensor host = mine ? host_f32(held->value) : Tensor();
    const int64_t row0 = mine && r.experts ? held->offset : 0;
    for (auto [begin, end] : h5::row_pieces(rows, elems)) {
      const float* data = mine ? host.data<float>() + begin * elems : nullptr;
      h5::write_rows(dataset, xfer_, r.shape, row0 + begin, end - begin, data);
    }
  }

 private:
  hid_t xfer_;
  int stage_, rank_, ranks_, ep_size_, replica_, replicas_;
  int64_t next_ = 0;
};

// A module's three histories (x, w, dy) as [3, len] floats, oldest first, padded with kEmptySlot.
void append_history(const fp8::LinearState& s, int64_t len, std::vector<float>& out) {
  for (const fp8::AmaxHistory* h : {&s.x, &s.w, &s.dy}) {
    const auto& v = h->values();
    const size_t first = v.size() > size_t(len) ? v.size() - size_t(len) : 0;
    int64_t n = 0;
    for (size_t i = first; i < v.size(); ++i, ++n) out.push_back(v[i]);
    for (; n < len; ++n) out.push_back(kEmptySlot);
  }
}

void restore_history(fp8::LinearState& s, int64_t len, const float* rows, int64_t stored_len) {
  fp8::AmaxHistory* histories[3] = {&s.x, &s.w, &s.dy};
  for (int k = 0; k < 3; ++k) {
    *histories[k] = fp8::AmaxHistory(int(len));
    for (int64_t i = 0; i < stored_len; ++i) {
      const float a = rows[k * stored_len + i];
      if (a != kEmptySlot) histories[k]->push(a);
    }
  }
}

// Every rank's delayed-scaling histories, gathered over its stage (they differ per rank: each saw
// its own activations), as records /fp8/<module>: Linear [S, 3, len] one row per rank of the stage,
// experts [replicas, E, 3, len].
void fp8_records(model::CausalLM& model, const parallel::ProcessGroups& g, std::vector<Record>& records,
                 std::map<std::string, Held>& held) {
  struct Dataset {
    std::string name;
    int64_t experts;  // local experts (0: a Linear)
    int64_t len;
  };
  std::vector<float> local;
  std::vector<Dataset> datasets;
  for (model::Linear* l : model.linears()) {
    if (!l->recipe().delayed()) continue;
    append_history(l->state(), l->recipe().amax_history_len, local);
    datasets.push_back({l->name(), 0, l->recipe().amax_history_len});
  }
  for (model::GroupedLinear* l : model.grouped_linears()) {
    if (!l->recipe().delayed()) continue;
    for (const fp8::LinearState& s : l->states()) append_history(s, l->recipe().amax_history_len, local);
    datasets.push_back({l->name(), int64_t(l->states().size()), l->recipe().amax_history_len});
  }
  if (datasets.empty()) return;
  const int64_t ranks = g.stage->size(), per_rank = int64_t(local.size());
  Tensor mine = Tensor::from_vector(local, {per_rank});
  Tensor all = Tensor::empty({ranks * per_rank});
  g.stage->all_gather(mine, all);
  int64_t at = 0;
  for (const Dataset& d : datasets) {
    // Ranks in order are [replica][ep_rank], so the experts' rows concatenate to [replicas, E, 3, len].
    const Shape shape =
        d.experts == 0 ? Shape{ranks, 3, d.len} : Shape{ranks / g.ep_size, d.experts * g.ep_size, 3, d.len};
    const int64_t n = std::max<int64_t>(d.experts, 1) * 3 * d.len;
    Tensor t = Tensor::empty(shape);
    for (int64_t r = 0; r < ranks; ++r)
      std::memcpy(t.data<float>() + r * n, all.data<float>() + r * per_rank + at, size_t(n) * sizeof(float));
    records.push_back({"fp8/" + d.name, shape, false});
    held["fp8/" + d.name] = Held{t, 0};
    at += n;
  }
}

// Reads rows [row0, row0 + local.size(0)) of `dataset` into `target` (any dtype and device).
void read_into(hid_t file, const std::string& dataset_path, const std::string& path, int64_t row0, Tensor target) {
  h5::Handle d = h5::open_dataset(file, dataset_path);
  if (!d.valid())
    throw CheckpointReadError(fmt::format("{}: {}: cannot open: {}", path, dataset_path, h5::take_error_stack()));
  const Shape file_shape = h5::dataset_shape(d.get());
  Tensor host = Tensor::empty(target.shape());
  const int64_t elems = row_elems(file_shape);
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

SaveStats save_checkpoint(const std::string& path, model::CausalLM& model, AdamW* optimizer, const TrainerState& state,
                          const parallel::ProcessGroups& groups) {
  const auto t0 = Clock::now();
  parallel::Communicator& world = *groups.world;
  const bool several = world.size() > 1;
  const std::string tmp = path + ".tmp";
  if (world.rank() == 0) {
    std::error_code ec;
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) throw Error(fmt::format("checkpoint: cannot create {}: {}", parent.string(), ec.message()));
    std::filesystem::remove(tmp, ec);
  }
  if (several) world.barrier();

  MPI_Comm comm = several ? world_comm(world) : MPI_COMM_NULL;
  {
    h5::Handle file = h5::create_file(tmp, several ? &comm : nullptr);
    h5::Handle xfer(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
    DAEDALUS_HDF5_CHECK(xfer.get());
    if (several) DAEDALUS_HDF5_CHECK(H5Pset_dxpl_mpio(xfer.get(), H5FD_MPIO_COLLECTIVE));

    // This rank's records: weights, AdamW moments, fp8 histories (model order).
    std::vector<Record> records;
    std::map<std::string, Held> held;
    const auto add = [&](const std::string& where, const model::Parameter& p, const Tensor& value) {
      records.push_back({where, p.global_shape(), p.expert});
      held[where] = Held{value, p.expert ? p.expert_offset : 0};
    };
    for (const model::Parameter& p : model.parameters().all()) add("model/" + p.name, p, p.var.value());
    if (optimizer != nullptr) {
      for (const Param& op : optimizer->params()) {
        const model::Parameter& p = model.parameters().get(op.name);
        add("optimizer/" + op.name + "/exp_avg", p, optimizer->exp_avg(op.name));
        add("optimizer/" + op.name + "/exp_avg_sq", p, optimizer->exp_avg_sq(op.name));
      }
    }
    fp8_records(model, groups, records, held);
    records = gather_records(std::move(records), groups);

    std::map<std::string, h5::Handle> created;  // groups, created collectively in record order
    const auto group_of = [&](const std::string& dataset) -> hid_t {
      const std::string parent = dataset.substr(0, dataset.rfind('/'));
      auto it = created.find(parent);
      if (it != created.end()) return it->second.get();
      const size_t slash = parent.rfind('/');
      const hid_t above = slash == std::string::npos ? file.get() : created.at(parent.substr(0, slash)).get();
      return created.emplace(parent, h5::create_group(above, parent.substr(slash + 1))).first->second.get();
    };
    for (const char* top : {"model", "optimizer", "fp8"}) created.emplace(top, h5::create_group(file.get(), top));
    if (optimizer != nullptr) h5::write_attr(created.at("optimizer").get(), "step", optimizer->step_count());
    Writer w(xfer.get(), groups);
    for (const Record& r : records) {
      const std::string name = r.path.substr(r.path.rfind('/') + 1);
      h5::Handle d = h5::create_f32_dataset(group_of(r.path), name, r.shape,
                                            h5::chunk_shape(r.shape, /*one_row_per_chunk=*/r.experts));
      const auto it = held.find(r.path);
      w.write(d.get(), r, it == held.end() ? nullptr : &it->second);
    }
    created.clear();
    h5::Handle g = h5::create_group(file.get(), "trainer");
    h5::write_attr(g.get(), "format_version", kCheckpointFormatVersion);
    h5::write_attr(g.get(), "step", state.step);
    h5::write_attr(g.get(), "tokens_seen", state.tokens_seen);
    h5::write_attr(g.get(), "consumed_samples", state.consumed_samples);
    h5::write_attr(g.get(), "skipped_steps", state.skipped_steps);
    h5::write_attr(g.get(), "consecutive_skips", state.consecutive_skips);
    h5::write_attr(g.get(), "world_size", int64_t(world.size()));
    h5::write_attr(g.get(), "expert_parallel", int64_t(groups.ep_size));
    h5::write_attr(g.get(), "pipeline_parallel", int64_t(groups.pp_size));
    h5::write_attr(g.get(), "recipe", state.recipe);
    h5::write_attr(g.get(), "config", state.config);
    // Everything else is on disk before `complete` is written.
    if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0)
      throw Error(fmt::format("checkpoint: cannot flush {}: {}", tmp, h5::take_error_stack()));
    h5::write_attr(g.get(), "complete", int64_t(1));
    g.close();
    xfer.close();
    if (!file.close()) throw Error(fmt::format("checkpoint: cannot close {}: {}", tmp, h5::take_error_stack()));
  }

  SaveStats stats;
  if (world.rank() == 0) {
    fsync_path(tmp, /*directory=*/false);
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw Error(fmt::format("checkpoint: cannot rename {} to {}: {}", tmp, path, ec.message()));
    const std::string dir = std::filesystem::path(path).parent_path().string();
    fsync_path(dir.empty() ? "." : dir, /*directory=*/true);
    stats.bytes = int64_t(std::filesystem::file_size(path));
  }
  if (several) world.barrier();
  stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return stats;
}

TrainerState load_checkpoint(const std::string& path, model::CausalLM& model, AdamW* optimizer,
                             const LoadOptions& options, const Placement& placement, LoadReport* report) {
  h5::Handle file = h5::open_checkpoint(path);
  TrainerState state = h5::read_trainer_state(file.get(), path);
  if (!state.complete)
    throw CheckpointReadError(
        fmt::format("{}: incomplete: no `complete` attribute on /trainer (the save did not finish)", path));

  // Match names and shapes before reading anything.
  h5::Handle model_group = h5::open_group(file.get(), "model");
  if (!model_group.valid()) throw CheckpointReadError(fmt::format("{}: no /model group", path));
  LoadReport r;
  std::set<std::string> in_file;
  for (const std::string& n : h5::list_names(model_group.get())) in_file.insert(n);
  std::vector<const model::Parameter*> to_load;
  for (const model::Parameter& p : model.parameters().all()) {
    if (in_file.erase(p.name) == 0) {
      r.missing.push_back(p.name);
      continue;
    }
    h5::Handle d = h5::open_dataset(model_group.get(), p.name);
    if (!d.valid()) throw CheckpointReadError(fmt::format("{}: /model/{}: not a dataset", path, p.name));
    const Shape file_shape = h5::dataset_shape(d.get()), want = p.global_shape();
    if (file_shape != want) {
      r.mismatched.push_back(
          fmt::format("{}: checkpoint {}, model {}", p.name, shape_str(file_shape), shape_str(want)));
      continue;
    }
    to_load.push_back(&p);
  }
  for (const std::string& n : in_file)
    if (!options.held_elsewhere || !options.held_elsewhere(n)) r.unexpected.push_back(n);
  if (options.strict && !r.clean()) {
    throw InputError(
        fmt::format("{}: the checkpoint does not match this model ({} missing, {} unexpected, {} with another shape; "
                    "checkpoint.strict: false loads what matches):\n{}",
                    path, r.missing.size(), r.unexpected.size(), r.mismatched.size(), r.describe()));
  }
  NoGradGuard no_grad;
  for (const model::Parameter* p : to_load) {
    read_into(file.get(), "/model/" + p->name, path, p->expert ? p->expert_offset : 0, p->var.value());
    ++r.tensors;
  }

  if (optimizer != nullptr && options.optimizer) {
    h5::Handle g = h5::open_group(file.get(), "optimizer");
    const std::optional<int64_t> step = g.valid() ? h5::read_int_attr(g.get(), "step") : std::nullopt;
    if (!step)
      throw InputError(
          fmt::format("{}: no optimizer state (/optimizer step): a weights-only checkpoint "
                      "cannot resume; use checkpoint.init_from",
                      path));
    for (const Param& op : optimizer->params()) {
      const model::Parameter& p = model.parameters().get(op.name);
      for (const char* key : {"exp_avg", "exp_avg_sq"}) {
        const std::string name = "/optimizer/" + op.name + "/" + key;
        h5::Handle d = h5::open_dataset(file.get(), name);
        if (!d.valid())
          throw InputError(fmt::format("{}: {} is missing (optimizer state of another model?)", path, name));
        const Shape file_shape = h5::dataset_shape(d.get());
        if (file_shape != p.global_shape())
          throw InputError(fmt::format("{}: {} has shape {}, this model's {} has {}", path, name, shape_str(file_shape),
                                       op.name, shape_str(p.global_shape())));
        Tensor& moment = key == std::string("exp_avg") ? optimizer->exp_avg(op.name) : optimizer->exp_avg_sq(op.name);
        read_into(file.get(), name, path, p.expert ? p.expert_offset : 0, moment);
      }
    }
    optimizer->set_step_count(*step);
  }

  if (options.fp8) {
    const int replica = placement.rank / placement.ep_size;
    auto read_all = [&](const std::string& name, Shape& shape) -> std::optional<std::vector<float>> {
      h5::Handle d = h5::open_dataset(file.get(), "/fp8/" + name);
      if (!d.valid()) return std::nullopt;
      shape = h5::dataset_shape(d.get());
      std::vector<float> v(size_t(shape_numel(shape)));
      std::string error;
      if (!h5::read_rows(d.get(), shape, 0, shape[0], v.data(), &error))
        throw CheckpointReadError(fmt::format("{}: /fp8/{}: {}", path, name, h5::read_failure(error)));
      return v;
    };
    for (model::Linear* l : model.linears()) {
      Shape s;
      if (!l->recipe().delayed()) continue;
      const auto v = read_all(l->name(), s);
      if (!v || s.size() != 3 || s[1] != 3) continue;
      const int64_t row = placement.rank % s[0];
      restore_history(l->state(), l->recipe().amax_history_len, v->data() + row * 3 * s[2], s[2]);
      ++r.fp8_histories;
    }
    for (model::GroupedLinear* l : model.grouped_linears()) {
      Shape s;
      if (!l->recipe().delayed() || l->states().empty()) continue;
      const auto v = read_all(l->name(), s);
      const model::Parameter& p = model.parameters().get(l->name() + ".weight");
      if (!v || s.size() != 4 || s[1] != p.num_experts || s[2] != 3) continue;
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

}  // namespace daedalus::train
