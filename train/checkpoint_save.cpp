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

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "parallel/config_check.h"
#include "parallel/grad_sync.h"
#include "train/checkpoint.h"
#include "train/checkpoint_h5.h"

namespace daedalus::train {

namespace {

using Clock = std::chrono::steady_clock;
using parallel::ElementRange;

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

// One dataset of the file. HDF5 creates datasets collectively, so every rank walks the same list
// of records in the same order, including the tensors of other pipeline stages (their names and
// shapes come from those stages: gather_records); only the ranks of the record's stage write data.
struct Record {
  // replicated: one copy per rank of the stage; experts: stacked, each EP rank a slice of rows;
  // sharded: ZeRO-1 moments, each rank of the stage its element ranges.
  enum class Kind : char { replicated = 'r', experts = 'e', sharded = 's' };
  std::string path;  // "model/<name>", "optimizer/<name>/exp_avg", "fp8/<module>"
  Shape shape;       // the whole tensor (stacked experts: all of them)
  Kind kind = Kind::replicated;
  int stage = 0;  // the first pipeline stage holding it: its ranks write it
};

// This rank's data for a record it holds: the tensor; for stacked experts its first expert; for
// ZeRO-1 moments the element ranges of the whole tensor its elements are (back to back).
struct Held {
  Tensor value;
  int64_t offset = 0;
  std::vector<ElementRange> ranges;
};

// Records of every stage, in stage order, each path once (a shared embedding is written by the
// first stage). Collective over groups.pipeline; each rank passes its own stage's records.
std::vector<Record> gather_records(std::vector<Record> mine, const parallel::ProcessGroups& g) {
  for (Record& r : mine) r.stage = g.pp_stage;
  if (g.pp_size == 1) return mine;
  std::string text;  // one line per record: path \t experts \t dims,
  for (const Record& r : mine) {
    text += fmt::format("{}\t{}\t", r.path, char(r.kind));
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
      r.kind = Record::Kind(t[tab1 + 1]);
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

// Bytes a checkpoint of these records takes at most: the fp32 values, HDF5's object headers and
// chunk indexes (about 300 bytes per dataset in practice: 4 KB allowed, one more per group), and
// 256 KB for the rest.
int64_t size_bound(const std::vector<Record>& records) {
  int64_t values = 0;
  for (const Record& r : records) values += shape_numel(r.shape);
  return 4 * values + 2 * 4096 * int64_t(records.size()) + (int64_t(256) << 10);
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

// Collective writes of one file: every rank calls write() for every record, in the same order.
class Writer {
 public:
  Writer(hid_t xfer, const parallel::ProcessGroups& g, Steps& steps)
      : xfer_(xfer),
        steps_(steps),
        stage_(g.pp_stage),
        rank_(g.stage->rank()),
        ranks_(g.stage->size()),
        ep_size_(g.ep_size),
        replica_(g.stage->rank() / g.ep_size),
        replicas_(g.stage->size() / g.ep_size) {}

  // Creates the record's dataset under `group`. A tensor every rank of its stage holds the same
  // copy of: one of them (round-robin over records) writes it. Stacked experts: the ranks of one
  // replica (round-robin) write their slices, one expert per chunk. ZeRO-1 moments: every rank of
  // the stage writes the element ranges it owns. `held` is this rank's data (null when its stage
  // has none); every rank joins every collective call.
  void write(hid_t group, const std::string& name, const Record& r, const Held* held) {
    const bool ours = r.stage == stage_ && held != nullptr;
    if (r.kind == Record::Kind::sharded) return write_sharded(group, name, r, ours ? held : nullptr);
    const bool experts = r.kind == Record::Kind::experts;
    const int64_t turn = next_++;
    const bool mine = ours && (experts ? turn % replicas_ == replica_ : turn % ranks_ == rank_);
    const Tensor host = mine ? host_f32(held->value) : Tensor();
    const int64_t row0 = mine && experts ? held->offset : 0;
    const int64_t rows = experts ? r.shape[0] / ep_size_ : r.shape[0];
    h5::Handle d;
    steps_.run([&] {
      d = h5::create_f32_dataset(group, name, r.shape, h5::chunk_shape(r.shape, /*one_row_per_chunk=*/experts));
    });
    const int64_t elems = h5::row_elems(r.shape);
    for (const auto& piece : h5::row_pieces(rows, elems)) {
      // (not a structured binding: clang before 16 cannot capture one in a lambda)
      const int64_t begin = piece.first, count = piece.second - piece.first;
      const float* data = mine ? host.data<float>() + begin * elems : nullptr;
      steps_.run([&] { h5::write_rows(d.get(), xfer_, r.shape, row0 + begin, count, data); });
    }
  }

 private:
  // ZeRO-1: the ranks of the record's stage write their element ranges (their elements back to
  // back in `held`); the ranges of the stage's ranks together tile the tensor. Every rank makes the
  // same number of collective calls, each under kMaxPieceBytes.
  void write_sharded(hid_t group, const std::string& name, const Record& r, const Held* held) {
    h5::Handle d;
    steps_.run([&] {
      d = h5::create_f32_dataset(group, name, r.shape, h5::chunk_shape(r.shape, /*one_row_per_chunk=*/false));
    });
    const Tensor host = held != nullptr ? host_f32(held->value) : Tensor();
    const float* base = host.defined() && host.numel() > 0 ? host.data<float>() : nullptr;  // may own none
    const int64_t calls =
        std::max<int64_t>(1, (shape_numel(r.shape) * 4 + h5::kMaxPieceBytes - 1) / h5::kMaxPieceBytes);
    int64_t at = 0;
    for (const auto& ranges : h5::split_ranges(held != nullptr ? held->ranges : std::vector<ElementRange>{}, calls)) {
      steps_.run([&] { h5::write_elements(d.get(), xfer_, r.shape, ranges, base == nullptr ? nullptr : base + at); });
      for (const auto& [b, e] : ranges) at += e - b;
    }
  }

  hid_t xfer_;
  Steps& steps_;
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
    for (; n < len; ++n) out.push_back(h5::kEmptySlot);
  }
}
// Every rank's delayed-scaling histories, gathered over its stage (they differ per rank: each saw
// its own activations), as records /fp8/<module>: Linear [S, 3, len] one row per rank of the
// stage, experts [replicas, E, 3, len].
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
    records.push_back({"fp8/" + d.name, shape, Record::Kind::replicated});
    held["fp8/" + d.name] = Held{t, 0, {}};
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
                                                     {"expert_parallel", written.expert_parallel},
                                                     {"pipeline_parallel", written.pipeline_parallel}};
  for (const auto& number : numbers) steps.run([&] { h5::write_attr(g.get(), number.first, number.second); });
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
    // This rank's records (weights, AdamW moments, fp8 histories, model order), then every stage's.
    std::vector<Record> records;
    std::map<std::string, Held> held;
    const auto add = [&](const std::string& where, const model::Parameter& p, const Tensor& value) {
      records.push_back({where, p.global_shape(), p.expert ? Record::Kind::experts : Record::Kind::replicated});
      held[where] = Held{value, p.expert ? p.expert_offset : 0, {}};
    };
    for (const model::Parameter& p : model.parameters().all()) add("model/" + p.name, p, p.var.value());
    if (optimizer != nullptr) {
      for (const Param& op : optimizer->params()) {
        const model::Parameter& p = model.parameters().get(op.name);
        const std::pair<const char*, Tensor*> moments[] = {{"exp_avg", &optimizer->exp_avg(op.name)},
                                                           {"exp_avg_sq", &optimizer->exp_avg_sq(op.name)}};
        for (const auto& [key, moment] : moments) {
          const std::string where = "optimizer/" + op.name + "/" + key;
          if (op.owned) {  // ZeRO-1: this rank's shard
            records.push_back({where, p.global_shape(), Record::Kind::sharded});
            held[where] = Held{*moment, 0, h5::zero_file_ranges(p, *op.owned)};
          } else {
            add(where, p, *moment);
          }
        }
      }
    }
    fp8_records(model, groups, records, held);
    records = gather_records(std::move(records), groups);

    const int64_t bound = size_bound(records);
    steps.run([&] {
      if (world.rank() == 0) reserve(tmp, bound);
    });
    std::map<std::string, h5::Handle> created;  // groups, created collectively in record order
    const auto group_of = [&](const std::string& group) -> hid_t {
      auto it = created.find(group);
      if (it != created.end()) return it->second.get();
      const size_t slash = group.rfind('/');
      const hid_t above = slash == std::string::npos ? file.get() : created.at(group.substr(0, slash)).get();
      h5::Handle g;
      steps.run([&] { g = h5::create_group(above, group.substr(slash + 1)); });
      return created.emplace(group, std::move(g)).first->second.get();
    };
    for (const char* top : {"model", "optimizer", "fp8"}) group_of(top);
    if (optimizer != nullptr)
      steps.run([&] { h5::write_attr(created.at("optimizer").get(), "step", optimizer->step_count()); });
    Writer w(xfer.get(), groups, steps);
    for (const Record& r : records) {
      const size_t slash = r.path.rfind('/');
      const auto it = held.find(r.path);
      w.write(group_of(r.path.substr(0, slash)), r.path.substr(slash + 1), r, it == held.end() ? nullptr : &it->second);
    }
    created.clear();
    TrainerState written = state;
    written.format_version = kCheckpointFormatVersion;
    written.world_size = world.size();
    written.expert_parallel = groups.ep_size;
    written.pipeline_parallel = groups.pp_size;
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
