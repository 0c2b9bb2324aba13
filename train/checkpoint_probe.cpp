// Metadata integrity of checkpoint files: the /trainer checksum over everything a reader takes
// from the metadata, and the probe that opens a candidate's whole metadata in a child process
// before this process reads it (a damaged file cannot crash the trainer, inspect or export).
#include <fmt/format.h>

#include "parallel/config_check.h"
#include "train/checkpoint.h"
#include "train/checkpoint_h5.h"
#include "train/isolated.h"

namespace daedalus::train {

namespace {

// The canonical text the checksum hashes: length-prefixed fields, so no two field sequences
// produce the same text.
struct Canon {
  std::string text;
  void field(std::string_view s) { text += fmt::format("{}:{};", s.size(), s); }
  void number(int64_t v) { text += fmt::format("{};", v); }
};

Shape chunk_of(hid_t dataset) {
  h5::Handle dcpl(H5Dget_create_plist(dataset), H5Pclose);
  if (!dcpl.valid() || H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return {};
  hsize_t dims[32];
  const int rank = H5Pget_chunk(dcpl.get(), 32, dims);
  if (rank < 0) throw CheckpointReadError(fmt::format("cannot read the chunk shape: {}", h5::take_error_stack()));
  return Shape(dims, dims + rank);
}

// Everything a reader uses, short of the data: opens every object and walks every chunk index.
void read_metadata(const std::string& path) {
  h5::Handle file = h5::open_checkpoint(path);
  const TrainerState s = h5::read_trainer_state(file.get(), path);  // verifies the checksum
  for (const char* group : {"model", "optimizer", "fp8"}) {
    if (!h5::open_group(file.get(), group).valid())
      throw CheckpointReadError(fmt::format("{}: no /{} group", path, group));
    for (const std::string& name : h5::list_datasets(file.get(), group)) {
      h5::Handle d = h5::open_dataset(file.get(), name);
      if (!d.valid()) throw CheckpointReadError(fmt::format("{}: {}: vanished while listed", path, name));
      h5::dataset_shape(d.get());
      h5::dataset_type(d.get());
      if (s.format_version >= 2 && !h5::has_fletcher32(d.get()))
        throw CheckpointReadError(fmt::format("{}: {}: no Fletcher32 checksum filter", path, name));
      h5::Handle space(H5Dget_space(d.get()), H5Sclose);
      hsize_t chunks = 0;
      if (!space.valid() || H5Dget_num_chunks(d.get(), space.get(), &chunks) < 0)
        throw CheckpointReadError(
            fmt::format("{}: {}: cannot read the chunk index: {}", path, name, h5::take_error_stack()));
    }
  }
}

// In the child: damage (CheckpointReadError, or any HDF5 failure) leaves as a plain Error naming the
// file, bad input (a missing file, a newer format) as InputError.
void check_metadata(const std::string& path) {
  try {
    read_metadata(path);
  } catch (const CheckpointReadError& e) {
    const std::string m = e.what();
    throw Error(m.rfind(path, 0) == 0 ? m : fmt::format("{}: {}", path, m));
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: {}", path, e.what()));
  }
}

}  // namespace

namespace h5 {

uint64_t metadata_checksum(hid_t file, const TrainerState& s) {
  Canon h;
  h.field("daedalus checkpoint metadata");
  for (int64_t v : {s.format_version, s.step, s.tokens_seen, s.consumed_samples, s.skipped_steps,
                    s.consecutive_skips, s.world_size, s.expert_parallel})
    h.number(v);
  h.field(s.recipe);
  h.field(s.config);
  Handle optimizer = open_group(file, "optimizer");
  const std::optional<int64_t> step = optimizer.valid() ? read_int_attr(optimizer.get(), "step") : std::nullopt;
  h.number(step.has_value() ? 1 : 0);
  h.number(step.value_or(0));
  for (const char* group : {"model", "optimizer", "fp8"}) {
    h.field(group);
    for (const std::string& name : list_datasets(file, group)) {
      Handle d = open_dataset(file, name);
      if (!d.valid()) throw CheckpointReadError(fmt::format("{}: vanished while listed", name));
      h.field(name);
      h.field(dataset_type(d.get()));
      for (const Shape& shape : {dataset_shape(d.get()), chunk_of(d.get())}) {
        h.number(int64_t(shape.size()));
        for (int64_t x : shape) h.number(x);
      }
      h.number(has_fletcher32(d.get()) ? 1 : 0);
    }
  }
  return parallel::fnv1a_64(h.text);
}

}  // namespace h5

void probe_checkpoint(const std::string& path) {
  const IsolatedOutcome r = run_isolated([&] { check_metadata(path); }, kProbeTimeoutS);
  switch (r.kind) {
    case IsolatedOutcome::Kind::ok: return;
    case IsolatedOutcome::Kind::input_error: throw InputError(r.text);
    case IsolatedOutcome::Kind::error: throw CheckpointReadError(r.text);
    case IsolatedOutcome::Kind::crashed:
    case IsolatedOutcome::Kind::timed_out:
      throw CheckpointReadError(
          fmt::format("{}: damaged metadata: reading it in a child process {}", path, r.text));
  }
}

}  // namespace daedalus::train
