// Saving and loading checkpoints (the layout is in checkpoint.h; files, verification and the
// resume choice are checkpoint_files.cpp).
#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
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

// Collective writes of one file: every rank calls every method in the same order.
class Writer {
 public:
  Writer(hid_t xfer, const parallel::ProcessGroups& g)
      : xfer_(xfer),
        rank_(g.world->rank()),
        world_(g.world->size()),
        replica_(g.world->rank() / g.ep_size),
        replicas_(g.world->size() / g.ep_size) {}

  // A tensor every rank holds the same copy of: one rank (round-robin over tensors) writes it.
  void replicated(hid_t group, const std::string& name, const Tensor& value) {
    const Shape shape = value.shape();
    h5::Handle d = h5::create_f32_dataset(group, name, shape, h5::chunk_shape(shape, /*one_row_per_chunk=*/false));
    const bool mine = next_++ % world_ == rank_;
    const Tensor host = mine ? host_f32(value) : Tensor();
    for (auto [begin, end] : h5::row_pieces(shape[0], row_elems(shape))) {
      const float* data = mine ? host.data<float>() + begin * row_elems(shape) : nullptr;
      h5::write_rows(d.get(), xfer_, shape, begin, end - begin, data);
    }
  }

  // This rank's slice [offset, offset + local) of a stacked expert tensor of `num_experts`: the
  // ranks of one replica (round-robin over tensors) write their slices, one expert per chunk.
  void experts(hid_t group, const std::string& name, const Tensor& local, int64_t offset, int64_t num_experts) {
    Shape shape = local.shape();
    shape[0] = num_experts;
    h5::Handle d = h5::create_f32_dataset(group, name, shape, h5::chunk_shape(shape, /*one_row_per_chunk=*/true));
    const bool mine = next_++ % replicas_ == replica_;
    const Tensor host = mine ? host_f32(local) : Tensor();
    for (auto [begin, end] : h5::row_pieces(local.size(0), row_elems(shape))) {
      const float* data = mine ? host.data<float>() + begin * row_elems(shape) : nullptr;
      h5::write_rows(d.get(), xfer_, shape, offset + begin, end - begin, data);
    }
  }

  // ZeRO-1: every rank writes the element ranges `file_ranges` of the dataset (global `shape`) from
  // `data` (their elements back to back); the ranges of all ranks together tile the tensor.
  void sharded(hid_t group, const std::string& name, const Shape& shape, const std::vector<ElementRange>& file_ranges,
               const Tensor& data) {
    h5::Handle d = h5::create_f32_dataset(group, name, shape, h5::chunk_shape(shape, /*one_row_per_chunk=*/false));
    const Tensor host = host_f32(data);
    // Every rank makes the same number of (collective) calls, each under kMaxPieceBytes.
    const int64_t calls = std::max<int64_t>(1, (shape_numel(shape) * 4 + h5::kMaxPieceBytes - 1) / h5::kMaxPieceBytes);
    const float* base = host.numel() > 0 ? host.data<float>() : nullptr;  // a rank may own none of it
    int64_t at = 0;
    for (const auto& ranges : h5::split_ranges(file_ranges, calls)) {
      h5::write_elements(d.get(), xfer_, shape, ranges, base == nullptr ? nullptr : base + at);
      for (const auto& [b, e] : ranges) at += e - b;
    }
  }

 private:
  hid_t xfer_;
  int rank_, world_, replica_, replicas_;
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

// Every rank's delayed-scaling histories, gathered (they differ per rank: each saw its own
// activations), and written as /fp8/<module>: Linear [world, 3, len], experts [replicas, E, 3, len].
void write_fp8(hid_t group, model::CausalLM& model, const parallel::ProcessGroups& g, Writer& w) {
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
  const int64_t world = g.world->size(), per_rank = int64_t(local.size());
  Tensor mine = Tensor::from_vector(local, {per_rank});
  Tensor all = Tensor::empty({world * per_rank});
  g.world->all_gather(mine, all);
  int64_t at = 0;
  for (const Dataset& d : datasets) {
    // Ranks in order are [replica][ep_rank], so the experts' rows concatenate to [replicas, E, 3, len].
    const Shape shape =
        d.experts == 0 ? Shape{world, 3, d.len} : Shape{world / g.ep_size, d.experts * g.ep_size, 3, d.len};
    const int64_t n = std::max<int64_t>(d.experts, 1) * 3 * d.len;
    Tensor t = Tensor::empty(shape);
    for (int64_t r = 0; r < world; ++r)
      std::memcpy(t.data<float>() + r * n, all.data<float>() + r * per_rank + at, size_t(n) * sizeof(float));
    w.replicated(group, d.name, t);
    at += n;
  }
}

// The element ranges of the checkpoint's tensor that a ZeRO-1 rank's `owned` ranges of parameter
// `p` are: shifted by the expert slice's first element for stacked experts.
std::vector<ElementRange> file_ranges(const model::Parameter& p, const std::vector<ElementRange>& owned) {
  const int64_t shift = p.expert ? p.expert_offset * row_elems(p.global_shape()) : 0;
  std::vector<ElementRange> out;
  for (const auto& [b, e] : owned) out.emplace_back(b + shift, e + shift);
  return out;
}

// Reads the element ranges `ranges` of `dataset` into `target` (their elements back to back).
void read_ranges_into(hid_t file, const std::string& dataset_path, const std::string& path,
                      const std::vector<ElementRange>& ranges, Tensor target) {
  h5::Handle d = h5::open_dataset(file, dataset_path);
  if (!d.valid())
    throw CheckpointReadError(fmt::format("{}: {}: cannot open: {}", path, dataset_path, h5::take_error_stack()));
  const Shape file_shape = h5::dataset_shape(d.get());
  if (target.numel() == 0) return;  // this rank owns none of it
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
    Writer w(xfer.get(), groups);

    {
      h5::Handle g = h5::create_group(file.get(), "model");
      for (const model::Parameter& p : model.parameters().all()) {
        if (p.expert) {
          w.experts(g.get(), p.name, p.var.value(), p.expert_offset, p.num_experts);
        } else {
          w.replicated(g.get(), p.name, p.var.value());
        }
      }
    }
    {
      h5::Handle g = h5::create_group(file.get(), "optimizer");
      if (optimizer != nullptr) {
        h5::write_attr(g.get(), "step", optimizer->step_count());
        for (const Param& op : optimizer->params()) {
          const model::Parameter& p = model.parameters().get(op.name);
          h5::Handle pg = h5::create_group(g.get(), op.name);
          const std::pair<const char*, Tensor*> moments[] = {{"exp_avg", &optimizer->exp_avg(op.name)},
                                                             {"exp_avg_sq", &optimizer->exp_avg_sq(op.name)}};
          for (const auto& [key, t] : moments) {
            if (op.owned) {  // ZeRO-1: each rank its shard
              w.sharded(pg.get(), key, p.global_shape(), file_ranges(p, *op.owned), *t);
            } else if (p.expert) {
              w.experts(pg.get(), key, *t, p.expert_offset, p.num_experts);
            } else {
              w.replicated(pg.get(), key, *t);
            }
          }
        }
      }
    }
    {
      h5::Handle g = h5::create_group(file.get(), "fp8");
      write_fp8(g.get(), model, groups, w);
    }
    h5::Handle g = h5::create_group(file.get(), "trainer");
    h5::write_attr(g.get(), "format_version", kCheckpointFormatVersion);
    h5::write_attr(g.get(), "step", state.step);
    h5::write_attr(g.get(), "tokens_seen", state.tokens_seen);
    h5::write_attr(g.get(), "consumed_samples", state.consumed_samples);
    h5::write_attr(g.get(), "skipped_steps", state.skipped_steps);
    h5::write_attr(g.get(), "consecutive_skips", state.consecutive_skips);
    h5::write_attr(g.get(), "world_size", int64_t(world.size()));
    h5::write_attr(g.get(), "expert_parallel", int64_t(groups.ep_size));
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
  r.unexpected.assign(in_file.begin(), in_file.end());
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
        if (op.owned) {  // ZeRO-1: this rank's shard, whatever layout wrote the file
          read_ranges_into(file.get(), name, path, file_ranges(p, *op.owned), moment);
        } else {
          read_into(file.get(), name, path, p.expert ? p.expert_offset : 0, moment);
        }
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
