// Saving checkpoints (the layout is in checkpoint.h). With several ranks the file is written
// collectively through MPI-IO, and a write can fail on some ranks only (a full disk seen by one
// aggregator): every HDF5 call of the save is a step after which the ranks agree (one all-reduce)
// whether it worked everywhere, so all stop at the same step, close the file, remove the .tmp and
// throw the same SaveError; none is left waiting in a collective another has left.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>

#include "parallel/config_check.h"
#include "train/checkpoint.h"
#include "train/checkpoint_h5.h"

namespace daedalus::train {

namespace {

using Clock = std::chrono::steady_clock;

Tensor host_f32(const Tensor& t) {
  Tensor h = t.to(Device::cpu());
  if (h.dtype() != DType::f32) h = h.to(DType::f32);
  return h.contiguous();
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
  if (fd < 0) throw Error(fmt::format("cannot open {} to fsync it: {}", path, std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int fsync_errno = errno;
  ::close(fd);
  // Some file systems cannot fsync a directory (EINVAL); the file itself must sync.
  if (rc != 0 && !(directory && fsync_errno == EINVAL))
    throw Error(fmt::format("fsync {} failed: {}", path, std::strerror(fsync_errno)));
}

// HDF5's explanation of a failed write, with the cause said plainly when the file system is full
// (MPI-IO reports ENOSPC as a generic I/O error) or the file hit the size limit (ulimit -f).
std::string explain(const std::string& message, const std::string& dir) {
  if (message.find("No space left") != std::string::npos || message.find("File too large") != std::string::npos)
    return message;
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) == 0) {
    const double free_bytes = double(fs.f_bavail) * double(fs.f_frsize);
    if (free_bytes < double(h5::kChunkBytes) * 2)
      return fmt::format("No space left on device ({:.1f} MB free in {}): {}", free_bytes / 1e6, dir, message);
  }
  return message;
}

// Bytes a checkpoint of `model` (and `optimizer`) takes at most: the fp32 values, HDF5's object
// headers and chunk indexes (about 300 bytes per dataset in practice: 4 KB allowed), and 256 KB
// for the rest.
int64_t size_bound(model::CausalLM& model, const AdamW* optimizer, const parallel::ProcessGroups& g) {
  int64_t values = 0, datasets = 0;
  for (const model::Parameter& p : model.parameters().all()) {
    const int64_t n = shape_numel(p.global_shape());
    values += n;
    ++datasets;
    if (optimizer != nullptr && p.trainable) {
      values += 2 * n;
      datasets += 3;  // two moments and their group
    }
  }
  // /fp8: Linear [world, 3, len], experts [replicas, E, 3, len].
  for (model::Linear* l : model.linears())
    if (l->recipe().delayed()) values += int64_t(g.world->size()) * 3 * l->recipe().amax_history_len;
  for (model::GroupedLinear* l : model.grouped_linears())
    if (l->recipe().delayed())
      values += int64_t(g.world->size()) * int64_t(l->states().size()) * 3 * l->recipe().amax_history_len;
  return 4 * values + 4096 * datasets + (int64_t(256) << 10);
}

// Reserves `bytes` for `path` beyond its end (fallocate, KEEP_SIZE): a disk that cannot hold the
// checkpoint fails here, before any collective write, instead of inside HDF5 on some ranks (whose
// internal barriers would then wait for the others). File systems without fallocate skip it.
void reserve(const std::string& path, int64_t bytes) {
  rlimit limit{};  // fallocate does not check the file-size limit (ulimit -f): writes would fail late
  if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && rlim_t(bytes) > limit.rlim_cur)
    throw Error(fmt::format("File too large: {} may need {:.1f} MB, over the file-size limit of {:.1f} MB (ulimit -f)",
                            path, double(bytes) / 1e6, double(limit.rlim_cur) / 1e6));
  const int fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) throw Error(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  const int rc = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, bytes);
  const int e = errno;
  ::close(fd);
  if (rc != 0 && e != EOPNOTSUPP && e != ENOSYS)
    throw Error(fmt::format("cannot reserve {:.1f} MB for {}: {}", double(bytes) / 1e6, path, std::strerror(e)));
}

// Gives back what reserve() set aside past the file's end.
void release_reserve(const std::string& path, int64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) return;
  struct stat st {};
  if (::fstat(fd, &st) == 0) ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size, bytes);
  ::close(fd);
}

// The save's collective HDF5 calls, each followed by an agreement across the world.
class Steps {
 public:
  Steps(parallel::Communicator& world, std::string dir) : world_(world), dir_(std::move(dir)) {}
  template <class F>
  void run(F&& step) {
    if (failed_) return;
    bool ok = true;
    std::string message;
    try {
      step();
    } catch (const std::exception& e) {
      ok = false;
      message = explain(e.what(), dir_);
    }
    std::string agreed = message;
    if (!parallel::agree(world_, ok, &agreed)) {
      failed_ = true;
      message_ = ok ? agreed : message;  // this rank's own error first
    }
  }
  bool failed() const { return failed_; }
  const std::string& message() const { return message_; }

 private:
  parallel::Communicator& world_;
  std::string dir_;
  bool failed_ = false;
  std::string message_;
};

// Collective writes of one file: every rank calls every method in the same order.
class Writer {
 public:
  Writer(hid_t xfer, const parallel::ProcessGroups& g, Steps& steps)
      : xfer_(xfer),
        steps_(steps),
        rank_(g.world->rank()),
        world_(g.world->size()),
        replica_(g.world->rank() / g.ep_size),
        replicas_(g.world->size() / g.ep_size) {}

  // A tensor every rank holds the same copy of: one rank (round-robin over tensors) writes it.
  void replicated(hid_t group, const std::string& name, const Tensor& value) {
    const Shape shape = value.shape();
    const bool mine = next_++ % world_ == rank_;
    write(group, name, shape, h5::chunk_shape(shape, /*one_row_per_chunk=*/false), mine ? host_f32(value) : Tensor(),
          0, shape[0]);
  }

  // This rank's slice [offset, offset + local) of a stacked expert tensor of `num_experts`: the
  // ranks of one replica (round-robin over tensors) write their slices, one expert per chunk.
  void experts(hid_t group, const std::string& name, const Tensor& local, int64_t offset, int64_t num_experts) {
    Shape shape = local.shape();
    shape[0] = num_experts;
    const bool mine = next_++ % replicas_ == replica_;
    write(group, name, shape, h5::chunk_shape(shape, /*one_row_per_chunk=*/true), mine ? host_f32(local) : Tensor(),
          offset, local.size(0));
  }

  // ZeRO-1: every rank writes the element ranges `file_ranges` of the dataset (global `shape`) from
  // `data` (their elements back to back); the ranges of all ranks together tile the tensor.
  void sharded(hid_t group, const std::string& name, const Shape& shape, const std::vector<ElementRange>& file_ranges,
               const Tensor& data) {
    h5::Handle d;
    steps_.run([&] {
      d = h5::create_f32_dataset(group, name, shape, h5::chunk_shape(shape, /*one_row_per_chunk=*/false));
    });
    const Tensor host = host_f32(data);
    const float* base = host.numel() > 0 ? host.data<float>() : nullptr;  // a rank may own none of it
    // Every rank makes the same number of (collective) calls, each under kMaxPieceBytes.
    const int64_t calls =
        std::max<int64_t>(1, (shape_numel(shape) * 4 + h5::kMaxPieceBytes - 1) / h5::kMaxPieceBytes);
    int64_t at = 0;
    for (const auto& ranges : h5::split_ranges(file_ranges, calls)) {
      steps_.run([&] { h5::write_elements(d.get(), xfer_, shape, ranges, base == nullptr ? nullptr : base + at); });
      for (const auto& [b, e] : ranges) at += e - b;
    }
  }

 private:
  // Creates `name` [shape] and writes rows [row0, row0 + rows) from `host` (undefined: this rank
  // writes nothing but joins every collective call).
  void write(hid_t group, const std::string& name, const Shape& shape, const Shape& chunk, const Tensor& host,
             int64_t row0, int64_t rows) {
    h5::Handle d;
    steps_.run([&] { d = h5::create_f32_dataset(group, name, shape, chunk); });
    const int64_t elems = h5::row_elems(shape);
    for (auto [begin, end] : h5::row_pieces(rows, elems)) {
      const float* data = host.defined() ? host.data<float>() + begin * elems : nullptr;
      steps_.run([&] { h5::write_rows(d.get(), xfer_, shape, row0 + begin, end - begin, data); });
    }
  }

  hid_t xfer_;
  Steps& steps_;
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
    for (; n < len; ++n) out.push_back(h5::kEmptySlot);
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


void write_trainer(hid_t file, const TrainerState& written, Steps& steps) {
  h5::Handle g;
  steps.run([&] { g = h5::create_group(file, "trainer", /*compact_attributes=*/true); });
  const std::pair<const char*, int64_t> numbers[] = {{"format_version", written.format_version},
                                                     {"step", written.step},
                                                     {"tokens_seen", written.tokens_seen},
                                                     {"consumed_samples", written.consumed_samples},
                                                     {"skipped_steps", written.skipped_steps},
                                                     {"consecutive_skips", written.consecutive_skips},
                                                     {"world_size", written.world_size},
                                                     {"expert_parallel", written.expert_parallel}};
  for (const auto& [name, value] : numbers) steps.run([&] { h5::write_attr(g.get(), name, value); });
  steps.run([&] { h5::write_attr(g.get(), "recipe", written.recipe); });
  steps.run([&] { h5::write_attr(g.get(), "config", written.config); });
  steps.run([&] { h5::write_attr(g.get(), "checksum", int64_t(h5::metadata_checksum(file, written))); });
  // Everything else is on disk before `complete` is written.
  steps.run([&] {
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) throw Error("cannot flush: " + h5::take_error_stack());
  });
  steps.run([&] { h5::write_attr(g.get(), "complete", int64_t(1)); });
}

}  // namespace

SaveStats save_checkpoint(const std::string& path, model::CausalLM& model, AdamW* optimizer, const TrainerState& state,
                          const parallel::ProcessGroups& groups) {
  const auto t0 = Clock::now();
  parallel::Communicator& world = *groups.world;
  const bool several = world.size() > 1;
  const std::string tmp = path + ".tmp";
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? "." : parent.string();
  Steps steps(world, dir);
  steps.run([&] {
    if (world.rank() != 0) return;
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error(fmt::format("cannot create {}: {}", dir, ec.message()));
    std::filesystem::remove(tmp, ec);
  });

  MPI_Comm comm = several ? world_comm(world) : MPI_COMM_NULL;
  {
    h5::Handle file, xfer;
    steps.run([&] {
      file = h5::create_file(tmp, several ? &comm : nullptr);
      xfer = h5::Handle(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
      DAEDALUS_HDF5_CHECK(xfer.get());
      if (several) DAEDALUS_HDF5_CHECK(H5Pset_dxpl_mpio(xfer.get(), H5FD_MPIO_COLLECTIVE));
    });
    const int64_t bound = size_bound(model, optimizer, groups);
    steps.run([&] {
      if (world.rank() == 0) reserve(tmp, bound);
    });
    Writer w(xfer.get(), groups, steps);
    {
      h5::Handle g;
      steps.run([&] { g = h5::create_group(file.get(), "model"); });
      for (const model::Parameter& p : model.parameters().all()) {
        if (p.expert) {
          w.experts(g.get(), p.name, p.var.value(), p.expert_offset, p.num_experts);
        } else {
          w.replicated(g.get(), p.name, p.var.value());
        }
      }
    }
    {
      h5::Handle g;
      steps.run([&] { g = h5::create_group(file.get(), "optimizer"); });
      if (optimizer != nullptr) {
        steps.run([&] { h5::write_attr(g.get(), "step", optimizer->step_count()); });
        for (const Param& op : optimizer->params()) {
          const model::Parameter& p = model.parameters().get(op.name);
          h5::Handle pg;
          steps.run([&] { pg = h5::create_group(g.get(), op.name); });
          const std::pair<const char*, Tensor*> moments[] = {{"exp_avg", &optimizer->exp_avg(op.name)},
                                                             {"exp_avg_sq", &optimizer->exp_avg_sq(op.name)}};
          for (const auto& [key, t] : moments) {
            if (op.owned) {  // ZeRO-1: each rank its shard
              w.sharded(pg.get(), key, p.global_shape(), h5::zero_file_ranges(p, *op.owned), *t);
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
      h5::Handle g;
      steps.run([&] { g = h5::create_group(file.get(), "fp8"); });
      write_fp8(g.get(), model, groups, w);
    }
    TrainerState written = state;
    written.format_version = kCheckpointFormatVersion;
    written.world_size = world.size();
    written.expert_parallel = groups.ep_size;
    write_trainer(file.get(), written, steps);
    xfer.close();
    // Closing flushes what is left (collectively): a failure here is a failed save too. After an
    // earlier failure the file is abandoned: emptied first, so that the close's last flush finds
    // space (a close that fails leaves HDF5 a half-closed file it crashes on at exit).
    if (file.valid()) {
      if (steps.failed() && world.rank() == 0) (void)::truncate(tmp.c_str(), 0);
      steps.run([&] {
        if (!file.close()) throw Error("cannot close: " + h5::take_error_stack());
      });
      file.close();
    }
    if (world.rank() == 0) release_reserve(tmp, bound);
  }

  SaveStats stats;
  steps.run([&] {
    if (world.rank() != 0) return;
    fsync_path(tmp, /*directory=*/false);
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw Error(fmt::format("cannot rename {} to {}: {}", tmp, path, ec.message()));
    fsync_path(dir, /*directory=*/true);
    stats.bytes = int64_t(std::filesystem::file_size(path));
  });
  if (steps.failed()) {
    if (world.rank() == 0) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);  // its space back; the previous checkpoints are untouched
    }
    throw SaveError(fmt::format("checkpoint: saving {} failed: {}", path, steps.message()));
  }
  stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return stats;
}

}  // namespace daedalus::train
