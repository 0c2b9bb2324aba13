// HDF5 checkpoints: one file per checkpoint holding the model, the optimizer, the FP8 recipe state
// and the trainer's counters (CONTRACT.md "Checkpoint"; the user's guide is docs/checkpoints.md).
//
//   /model/<HF name>                      fp32 master weights and buffers (router biases); routed
//                                          experts stacked [E, ...] in global expert order
//   /optimizer/<name>/exp_avg, exp_avg_sq  AdamW moments (stored fp32 whatever state_dtype is);
//                                          attribute `step` on /optimizer
//   /fp8/<module>                         delayed-scaling amax histories, rows (x, w, dy):
//                                          Linear [world, 3, len] one row per rank,
//                                          experts [replicas, E, 3, len]; unused slots hold -1
//   /trainer (attributes)                 step, tokens_seen, consumed_samples, config (YAML),
//                                          world_size, expert_parallel, recipe, format_version,
//                                          skipped_steps, consecutive_skips, checksum (of all the
//                                          metadata), complete (last)
// Every dataset is chunked with the Fletcher32 filter; every attribute lives in a checksummed
// object header and `checksum` covers the metadata a reader uses, so no bit of a checkpoint
// reaches a reader unverified. A file is written as <path>.tmp, fsynced, then renamed.
//
// Saving is collective over the world: with several ranks one file is written through MPI-IO,
// each rank writing only its expert slices, and each replicated tensor written by one rank
// (round-robin); with ZeRO-1 every rank writes the element ranges of the moments it owns (the same
// full-shape datasets); no rank gathers the model. Loading is per rank (HDF5's POSIX driver): each reads
// the tensors it holds by name, and its own slice of the stacked experts, so a checkpoint loads at
// any world size and expert-parallel size.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "model/causal_lm.h"
#include "parallel/communicator.h"
#include "train/optimizer.h"

namespace daedalus::train {

// 2: text attributes fixed-length in /trainer's checksummed object header, /trainer `checksum`
// over all metadata (checkpoint_h5.h metadata_checksum). 1: variable-length text, no checksum.
inline constexpr int64_t kCheckpointFormatVersion = 2;

// A checkpoint that cannot be used as it is: unreadable or truncated, incomplete (no `complete`
// attribute), or a dataset failing its Fletcher32 checksum. Bad input (exit 1); `resume: auto`
// skips such a file and takes an older one.
class CheckpointReadError : public InputError {
 public:
  using InputError::InputError;
};

// A save that failed on some rank (a full disk, a file-size limit): with several ranks every rank
// throws it together, after the ranks agreed on the failure (no rank is left in a collective), with
// the .tmp removed. A runtime failure (exit 2).
class SaveError : public Error {
 public:
  using Error::Error;
};

// The /trainer attributes.
struct TrainerState {
  int64_t step = 0;  // optimizer steps taken
  int64_t tokens_seen = 0;
  int64_t consumed_samples = 0;  // the train loader's position (data/loader.h)
  int64_t skipped_steps = 0;     // non-finite steps skipped so far, and how many of them in a row
  int64_t consecutive_skips = 0;
  std::string config;  // resolved YAML (to_yaml)
  int64_t world_size = 1;
  int64_t expert_parallel = 1;
  std::string recipe;
  int64_t format_version = kCheckpointFormatVersion;
  bool complete = false;
};

struct SaveStats {
  int64_t bytes = 0;
  double seconds = 0;
};

// Writes `path` (collective over groups.world; every rank passes the same path and state). The
// optimizer may be null (weights only). SaveError on every rank when the file cannot be written.
SaveStats save_checkpoint(const std::string& path, model::CausalLM& model, AdamW* optimizer, const TrainerState& state,
                          const parallel::ProcessGroups& groups);

// Where this process sits, for reading its slices: the fp8 histories are per rank.
struct Placement {
  int rank = 0;
  int world_size = 1;
  int ep_size = 1;
};

struct LoadOptions {
  bool optimizer = true;  // read /optimizer into the AdamW passed in (resume)
  bool fp8 = true;        // restore amax histories of delayed-scaling modules that have them
  // Missing, unexpected or differently shaped /model tensors: an InputError listing them (true) or
  // a report, loading the tensors that match (false). The optimizer is always strict.
  bool strict = true;
  // Whether the message for a mismatch may suggest `checkpoint.strict: false` (init_from only:
  // resuming is always strict).
  bool strict_settable = false;
};

struct LoadReport {
  int64_t tensors = 0;                  // /model tensors loaded
  std::vector<std::string> missing;     // in the model, not in the file
  std::vector<std::string> unexpected;  // in the file, not in the model
  std::vector<std::string> mismatched;  // "name: file [a, b], model [c, d]"
  int64_t fp8_histories = 0;            // modules whose histories were restored
  bool clean() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string describe() const;  // one line per problem
};

// Reads `path` into `model` (and `optimizer` when given and options.optimizer). Returns the
// /trainer attributes. InputError naming the file for a missing file, a non-HDF5 file, a newer
// format or a model of another shape (strict); CheckpointReadError for an unreadable, incomplete or
// corrupt one (nothing is guaranteed about the model's values then: load another checkpoint).
TrainerState load_checkpoint(const std::string& path, model::CausalLM& model, AdamW* optimizer,
                             const LoadOptions& options, const Placement& placement, LoadReport* report = nullptr);

// Reads the whole metadata of `path` (open, /trainer and its checksum, every group, dataset and
// chunk index; no data) in a child process (train/isolated.h), so that HDF5 crashing or hanging on
// damaged metadata cannot take this process down. Returns when it all reads; CheckpointReadError
// naming the file and the damage otherwise (also "crashed with signal 11"); InputError for a
// missing file or a format newer than this build. load_checkpoint and read_checkpoint_info call it.
void probe_checkpoint(const std::string& path);
inline constexpr double kProbeTimeoutS = 300;  // metadata only: seconds even for thousands of datasets

// ---- files (checkpoint_files.cpp) ----

// <run_dir>/checkpoints/step_00000100.h5
std::string checkpoint_path(const std::string& run_dir, int64_t step);

struct CheckpointFile {
  std::string path;
  int64_t step = 0;
};
// Files named step_<digits>.h5 in <run_dir>/checkpoints, newest (highest step) first.
std::vector<CheckpointFile> list_checkpoints(const std::string& run_dir);

// After a save at `step`: deletes the oldest step_*.h5 so that `keep_last` files with step <= `step`
// remain (0 keeps all), and leftover *.tmp of earlier steps. Files of later steps (an abandoned
// future after resuming from an older checkpoint) are left alone. Returns the deleted paths.
std::vector<std::string> prune_checkpoints(const std::string& run_dir, int64_t keep_last, int64_t step);

// The /trainer attributes and the list of datasets, without reading any data. InputError for a
// missing or non-HDF5 file; CheckpointReadError when HDF5 cannot open it (truncated, damaged).
struct TensorInfo {
  std::string path;  // "/model/model.norm.weight"
  Shape shape;
  std::string dtype;  // "f32"
};
struct CheckpointInfo {
  TrainerState state;
  std::optional<int64_t> optimizer_step;
  std::vector<TensorInfo> tensors;  // /model, then /optimizer, then /fp8, each in name order
  int64_t file_bytes = 0;
};
CheckpointInfo read_checkpoint_info(const std::string& path);

// A full read of every dataset (Fletcher32 verified chunk by chunk) with a digest of each.
enum class Verdict : uint8_t { ok, incomplete, corrupt };
struct Verification {
  Verdict verdict = Verdict::ok;
  std::vector<std::string> problems;  // why it is not ok, one line each
  std::vector<uint64_t> digests;      // per info.tensors entry (0 when unreadable): 64-bit hash of the fp32 values
  int64_t datasets_read = 0;
};
Verification verify_checkpoint(const std::string& path, const CheckpointInfo& info);
std::string_view verdict_name(Verdict v);  // "OK", "INCOMPLETE", "CORRUPT"

// ---- `daedalus inspect` (checkpoint_inspect.cpp) ----

// Prints the summary (step, recipe, config summary, parameter counts, every tensor with its shape
// and digest) and the integrity verdict to `out`. Returns 0 when the verdict is OK, 1 otherwise.
int inspect_checkpoint(const std::string& path, std::FILE* out);

}  // namespace daedalus::train
