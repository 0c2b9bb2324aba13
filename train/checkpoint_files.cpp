// Checkpoint files: names, listing and pruning in a run directory, opening with clear errors,
// the /trainer attributes, and the full-read verification that `daedalus inspect` reports.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <regex>

#include "train/checkpoint.h"
#include "train/checkpoint_h5.h"

namespace daedalus::train {

namespace fs = std::filesystem;

namespace h5 {

Handle open_checkpoint(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw InputError(fmt::format("{}: no such file", path));
  if (S_ISDIR(st.st_mode)) throw InputError(fmt::format("{}: is a directory, not a checkpoint file", path));
  if (!S_ISREG(st.st_mode)) throw InputError(fmt::format("{}: not a regular file (a pipe or device?)", path));
  silence_errors();
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    take_error_stack();
    throw CheckpointReadError(fmt::format("{}: not an HDF5 file", path));
  }
  std::string error;
  Handle file = open_file(path, &error);
  if (!file.valid()) throw CheckpointReadError(fmt::format("{}: cannot be opened: {}", path, error));
  return file;
}

TrainerState read_trainer_state(hid_t file, const std::string& path) {
  Handle g = open_group(file, "trainer");
  if (!g.valid())
    throw CheckpointReadError(fmt::format("{}: no /trainer group (not a Daedalus checkpoint, or damaged)", path));
  TrainerState s;
  const std::optional<int64_t> version = read_int_attr(g.get(), "format_version");
  if (!version) throw CheckpointReadError(fmt::format("{}: /trainer has no format_version attribute", path));
  const std::optional<int64_t> checksum = read_int_attr(g.get(), "checksum");
  if (*version > kCheckpointFormatVersion && !checksum)  // a checksummed file's version is checked below
    throw InputError(fmt::format("{}: checkpoint format {} is newer than this build of Daedalus reads ({})", path,
                                 *version, kCheckpointFormatVersion));
  s.format_version = *version;
  const std::optional<int64_t> step = read_int_attr(g.get(), "step");
  if (!step) throw CheckpointReadError(fmt::format("{}: /trainer has no step attribute", path));
  s.step = *step;
  s.tokens_seen = read_int_attr(g.get(), "tokens_seen").value_or(0);
  s.consumed_samples = read_int_attr(g.get(), "consumed_samples").value_or(0);
  s.skipped_steps = read_int_attr(g.get(), "skipped_steps").value_or(0);
  s.consecutive_skips = read_int_attr(g.get(), "consecutive_skips").value_or(0);
  s.world_size = read_int_attr(g.get(), "world_size").value_or(1);
  s.expert_parallel = read_int_attr(g.get(), "expert_parallel").value_or(1);
  s.recipe = read_string_attr(g.get(), "recipe").value_or("");
  s.config = read_string_attr(g.get(), "config").value_or("");
  s.complete = read_int_attr(g.get(), "complete").value_or(0) == 1;
  // Format 2 on: the checksum of the metadata (format 1 files have none: read as they are).
  if (*version >= 2 || checksum) {
    if (!checksum) throw CheckpointReadError(fmt::format("{}: /trainer has no checksum attribute", path));
    if (uint64_t(*checksum) != metadata_checksum(file, s))
      throw CheckpointReadError(
          fmt::format("{}: metadata checksum mismatch: the counters, config, recipe or dataset list in the file are "
                      "damaged",
                      path));
    if (*version > kCheckpointFormatVersion)
      throw InputError(fmt::format("{}: checkpoint format {} is newer than this build of Daedalus reads ({})", path,
                                   *version, kCheckpointFormatVersion));
  }
  return s;
}

std::string read_failure(const std::string& stack) {
  if (stack.find("Fletcher32") != std::string::npos || stack.find("checksum") != std::string::npos)
    return "Fletcher32 checksum mismatch (the data is corrupt)";
  return "read error: " + stack;
}

}  // namespace h5

std::string checkpoint_path(const std::string& run_dir, int64_t step) {
  return fmt::format("{}/checkpoints/step_{:08d}.h5", run_dir, step);
}

namespace {

// step_<digits>.h5 (or .h5.tmp) -> the step.
std::optional<int64_t> step_of(const std::string& filename, bool tmp) {
  static const std::regex file(R"(step_(\d+)\.h5)"), tmp_file(R"(step_(\d+)\.h5\.tmp)");
  std::smatch m;
  if (!std::regex_match(filename, m, tmp ? tmp_file : file)) return std::nullopt;
  return std::stoll(m[1].str());
}

std::vector<CheckpointFile> list_files(const std::string& run_dir, bool tmp) {
  std::vector<CheckpointFile> out;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec)) {
    if (!e.is_regular_file(ec)) continue;
    if (const auto step = step_of(e.path().filename().string(), tmp)) out.push_back({e.path().string(), *step});
  }
  std::sort(out.begin(), out.end(), [](const CheckpointFile& a, const CheckpointFile& b) { return a.step > b.step; });
  return out;
}

// 64-bit digest of a stream of fp32 values (their bit patterns): independent of how the reads
// are split, so two files with the same values have the same digest whatever their chunking.
struct Digest {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      uint32_t bits = 0;
      std::memcpy(&bits, v + i, sizeof(bits));
      h = (h ^ bits) * 0x100000001b3ull;
      h ^= h >> 29;
    }
  }
};

}  // namespace

std::vector<CheckpointFile> list_checkpoints(const std::string& run_dir) { return list_files(run_dir, false); }

std::vector<std::string> prune_checkpoints(const std::string& run_dir, int64_t keep_last, int64_t step) {
  std::vector<std::string> deleted;
  std::error_code ec;
  int64_t kept = 0;
  for (const CheckpointFile& f : list_files(run_dir, false)) {
    if (f.step > step) continue;
    if (keep_last == 0 || kept < keep_last) {
      ++kept;
      continue;
    }
    if (fs::remove(f.path, ec)) deleted.push_back(f.path);
  }
  for (const CheckpointFile& f : list_files(run_dir, true))
    if (f.step < step && fs::remove(f.path, ec)) deleted.push_back(f.path);
  return deleted;
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  probe_checkpoint(path);
  h5::Handle file = h5::open_checkpoint(path);
  CheckpointInfo info;
  info.state = h5::read_trainer_state(file.get(), path);
  info.file_bytes = int64_t(fs::file_size(path));
  if (h5::Handle g = h5::open_group(file.get(), "optimizer"); g.valid())
    info.optimizer_step = h5::read_int_attr(g.get(), "step");
  for (const char* group : {"model", "optimizer", "fp8"}) {
    for (const std::string& name : h5::list_datasets(file.get(), group)) {
      h5::Handle d = h5::open_dataset(file.get(), name);
      if (!d.valid())
        throw CheckpointReadError(fmt::format("{}: {}: cannot open: {}", path, name, h5::take_error_stack()));
      info.tensors.push_back({name, h5::dataset_shape(d.get()), h5::dataset_type(d.get())});
    }
  }
  return info;
}

Verification verify_checkpoint(const std::string& path, const CheckpointInfo& info) {
  constexpr int64_t kReadBytes = int64_t(64) << 20;
  h5::Handle file = h5::open_checkpoint(path);
  Verification v;
  std::vector<float> buffer;
  for (const TensorInfo& t : info.tensors) {
    h5::Handle d = h5::open_dataset(file.get(), t.path);
    if (!d.valid()) {
      v.problems.push_back(fmt::format("{}: cannot open: {}", t.path, h5::take_error_stack()));
      v.digests.push_back(0);
      continue;
    }
    Digest digest;
    bool ok = true;
    std::string error;
    if (!t.shape.empty() && shape_numel(t.shape) > 0) {
      const int64_t row = shape_numel(t.shape) / t.shape[0];
      const int64_t rows = std::max<int64_t>(1, kReadBytes / (row * int64_t(sizeof(float))));
      for (int64_t r = 0; r < t.shape[0] && ok; r += rows) {
        const int64_t n = std::min(rows, t.shape[0] - r);
        buffer.resize(size_t(n * row));
        ok = h5::read_rows(d.get(), t.shape, r, n, buffer.data(), &error);
        if (ok) digest.add(buffer.data(), n * row);
      }
    }
    if (!ok) v.problems.push_back(fmt::format("{}: {}", t.path, h5::read_failure(error)));
    v.digests.push_back(ok ? digest.h : 0);
    ++v.datasets_read;
  }
  if (!v.problems.empty()) {
    v.verdict = Verdict::corrupt;
  } else if (!info.state.complete) {
    v.verdict = Verdict::incomplete;
    v.problems.push_back("no `complete` attribute on /trainer: the save did not finish");
  }
  return v;
}

std::string_view verdict_name(Verdict v) {
  switch (v) {
    case Verdict::ok: return "OK";
    case Verdict::incomplete: return "INCOMPLETE";
    case Verdict::corrupt: return "CORRUPT";
  }
  return "?";
}

}  // namespace daedalus::train
