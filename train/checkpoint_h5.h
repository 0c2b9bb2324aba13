// HDF5 plumbing for checkpoint files (internal to train/checkpoint*.cpp): owning handles, the
// file-access properties (MPI-IO when several ranks write one file, file locking off for
// NFS/Lustre), chunked fp32 datasets with the Fletcher32 filter, row-range reads and writes,
// attributes, and HDF5's error stack as text for messages.
//
// Datasets are written and read in row ranges of dim 0 with every other dimension whole: a
// stacked expert tensor [E, F, D] in expert rows (each rank its own [offset, offset + local)),
// everything else in pieces of at most kMaxPieceBytes.
#pragma once

#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "data/hdf5_handle.h"
#include "train/checkpoint.h"

namespace daedalus::train::h5 {

using Handle = data::H5Handle;

inline constexpr int64_t kMaxPieceBytes = int64_t(1) << 30;  // one H5Dwrite / H5Dread at most
inline constexpr int64_t kChunkBytes = int64_t(4) << 20;     // target chunk size (one checksum each)
inline constexpr size_t kMaxAttrBytes = size_t(16) << 20;     // a string attribute longer than this is damage

inline constexpr float kEmptySlot = -1.0f;  // an unused amax-history slot in /fp8 (amaxes are >= 0 or NaN)

// Elements per row of dim 0 (1 for a 1-D shape).
inline int64_t row_elems(const Shape& shape) {
  int64_t n = 1;
  for (size_t d = 1; d < shape.size(); ++d) n *= shape[d];
  return n;
}

// Turns off HDF5's automatic error printing (our messages name the file and dataset).
void silence_errors();
// The descriptions on HDF5's error stack, outermost first, joined by "; "; clears the stack. Call
// it right after the failing call: every HDF5 API call (closing a handle too) clears the stack.
std::string take_error_stack();

// File-access properties: MPI-IO over `comm` when given, HDF5's POSIX driver otherwise; file
// locking off unless the user set HDF5_USE_FILE_LOCKING (NFS and Lustre often refuse locks).
Handle file_access(const MPI_Comm* comm);
// Collective over `comm` when given. Error naming the path on failure.
Handle create_file(const std::string& path, const MPI_Comm* comm);
// Read-only, this process alone; an invalid handle when HDF5 cannot open it, with HDF5's
// explanation in *error.
Handle open_file(const std::string& path, std::string* error = nullptr);

// `compact_attributes`: every attribute stays in the group's object header, which HDF5 checksums.
Handle create_group(hid_t parent, const std::string& name, bool compact_attributes = false);
// Invalid when absent; CheckpointReadError (naming `name`) when present but HDF5 cannot open it.
Handle open_group(hid_t parent, const std::string& name);
Handle open_dataset(hid_t parent, const std::string& name);
// CheckpointReadError when HDF5 cannot tell (a damaged link index).
bool exists(hid_t parent, const std::string& name);

// Chunk shape for a dataset: the whole tensor when it is small, else slabs of dim 0 (then dim 1, ...)
// of about kChunkBytes; `one_row_per_chunk` (stacked experts): dim 0 chunked by 1, so every
// expert's slice is its own set of chunks and each rank writes only chunks of its own.
Shape chunk_shape(const Shape& shape, bool one_row_per_chunk);
// fp32 (little-endian) dataset `name` under `parent`: chunked, Fletcher32, never filled.
Handle create_f32_dataset(hid_t parent, const std::string& name, const Shape& shape, const Shape& chunk);

// Row pieces of a tensor with `rows` rows of `row_elems` fp32 each: [begin, end) pairs of at most
// kMaxPieceBytes (at least one row), the same on every rank for the same arguments.
std::vector<std::pair<int64_t, int64_t>> row_pieces(int64_t rows, int64_t row_elems);

// Writes rows [row0, row0 + rows) of dataset `dataset` (global shape `shape`) from `data`; with
// data == nullptr this rank selects nothing (it still joins a collective write).
void write_rows(hid_t dataset, hid_t xfer, const Shape& shape, int64_t row0, int64_t rows, const float* data);
// Reads rows [row0, row0 + rows) as fp32 into `out`; false on failure, with HDF5's explanation
// in *error.
bool read_rows(hid_t dataset, const Shape& shape, int64_t row0, int64_t rows, float* out, std::string* error = nullptr);

// Element ranges [begin, end) of a dataset's row-major flattening (ZeRO-1 shards of the optimizer
// state, checkpoint_h5_elements.cpp): `ranges` ascending and disjoint, `data` their elements back
// to back. The file selection is the union of the boxes that tile each range (a partial first row,
// whole rows, a partial last row, by dimension), so HDF5 visits it in flat order.
// Collective like write_rows: every rank calls write_elements equally often (`ranges` may be empty).
void write_elements(hid_t dataset, hid_t xfer, const Shape& shape,
                    const std::vector<std::pair<int64_t, int64_t>>& ranges, const float* data);
// Reads them into `out`; false on failure, with HDF5's explanation in *error.
bool read_elements(hid_t dataset, const Shape& shape, const std::vector<std::pair<int64_t, int64_t>>& ranges,
                   float* out, std::string* error = nullptr);
// The element ranges of the checkpoint's tensor that a ZeRO-1 rank's `owned` ranges of parameter
// `p` are: shifted by the expert slice's first element for stacked experts.
std::vector<std::pair<int64_t, int64_t>> zero_file_ranges(const model::Parameter& p,
                                                          const std::vector<std::pair<int64_t, int64_t>>& owned);
// Cuts a rank's `ranges` (elements back to back in memory) into `calls` groups of consecutive
// elements, each at most ceil(total / calls): what one write_elements call takes. Group j holds the
// ranges (cut where needed) of memory elements [j * per, (j + 1) * per); some may be empty.
std::vector<std::vector<std::pair<int64_t, int64_t>>> split_ranges(
    const std::vector<std::pair<int64_t, int64_t>>& ranges, int64_t calls);

// The dataset's dimensions ([] for a scalar dataspace).
Shape dataset_shape(hid_t dataset);
// "f32", "f64", "i64", ... or the HDF5 class name.
std::string dataset_type(hid_t dataset);
bool has_fletcher32(hid_t dataset);

void write_attr(hid_t object, const std::string& name, int64_t value);
// UTF-8, fixed length (stored in the object header, not in HDF5's unchecksummed global heap).
void write_attr(hid_t object, const std::string& name, const std::string& value);
// nullopt when absent; CheckpointReadError when present but unreadable. Strings of either kind
// (format 1 wrote variable-length ones).
std::optional<int64_t> read_int_attr(hid_t object, const std::string& name);
std::optional<std::string> read_string_attr(hid_t object, const std::string& name);

// Link names directly under `group`, in name order. CheckpointReadError when HDF5 cannot list them.
std::vector<std::string> list_names(hid_t group);
// Every dataset under `group` (recursively), as paths relative to the file root ("/model/x"), in
// name order; [] when the group is absent. CheckpointReadError when an object does not open.
std::vector<std::string> list_datasets(hid_t file, const std::string& group);

// ---- the checkpoint layout, shared by checkpoint*.cpp ----

// Opens a checkpoint read-only: InputError when the file is missing or not HDF5 (naming it),
// CheckpointReadError when HDF5 cannot open it (truncated or damaged).
Handle open_checkpoint(const std::string& path);
// The /trainer attributes (complete = false when that attribute is absent). CheckpointReadError
// when /trainer or its step is missing; InputError for a format newer than this build reads.
TrainerState read_trainer_state(hid_t file, const std::string& path);
// "Fletcher32 checksum mismatch (the data is corrupt)" or "read error: <HDF5 stack>", from the
// explanation of a failed read.
std::string read_failure(const std::string& error);

// ---- metadata integrity (checkpoint_probe.cpp) ----

// The 64-bit checksum stored as /trainer `checksum` (format 2): of the /trainer values (counters,
// world, recipe, config text), the /optimizer `step` and the manifest (every dataset's path, type,
// shape, chunk shape and filter), so that no value a reader takes from the metadata reaches it
// unverified. Dataset values have their own Fletcher32 checksums.
uint64_t metadata_checksum(hid_t file, const TrainerState& state);

}  // namespace daedalus::train::h5
