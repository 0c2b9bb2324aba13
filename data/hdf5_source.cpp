// HDF5 token files: a 1-d dataset of any integer type (default "tokens"), read on demand as int32
// (HDF5 converts; values outside int32 saturate, and check_vocab then reports them) through a
// hyperslab of just the requested range. Several files concatenate in order.
#include <sys/stat.h>

#include <algorithm>

#include "autograd/check.h"
#include "data/mapped_file.h"
#include "data/source.h"

#if !DAEDALUS_MINIMAL  // the GPU-test build has no HDF5
#include <hdf5.h>

#include "data/hdf5_handle.h"
#include "data/isolated.h"

namespace daedalus::data {

namespace {

using Handle = H5Handle;

std::string type_class_name(H5T_class_t c) {
  switch (c) {
    case H5T_FLOAT: return "floating-point";
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_BITFIELD: return "bitfield";
    case H5T_OPAQUE: return "opaque";
    case H5T_REFERENCE: return "reference";
    case H5T_VLEN: return "variable-length";
    default: return "non-integer";
  }
}

struct TokenDataset {
  Handle file, dataset;
  int64_t count = 0;
  std::string where;  // "<path>: dataset '<name>'", for messages
};

TokenDataset open_dataset(const std::string& path, const std::string& name) {
  struct stat st {};
  DAEDALUS_CHECK(::stat(path.c_str(), &st) == 0, "{}: no such file", path);
  DAEDALUS_CHECK(S_ISREG(st.st_mode), "{}: not a regular file (a directory, pipe or device?)", path);
  DAEDALUS_CHECK(H5Fis_hdf5(path.c_str()) > 0, "{}: not an HDF5 file", path);
  TokenDataset d;
  d.where = fmt::format("{}: dataset '{}'", path, name);
  d.file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  DAEDALUS_CHECK(d.file.valid(), "{}: cannot open the HDF5 file", path);
  DAEDALUS_CHECK(H5Lexists(d.file.get(), name.c_str(), H5P_DEFAULT) > 0, "{}: no dataset '{}'", path, name);
  d.dataset = Handle(H5Dopen2(d.file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  DAEDALUS_CHECK(d.dataset.valid(), "{}: '{}' is not a dataset", path, name);
  Handle type(H5Dget_type(d.dataset.get()), H5Tclose);
  DAEDALUS_HDF5_CHECK(type.get());
  const H5T_class_t cls = H5Tget_class(type.get());
  DAEDALUS_CHECK(cls == H5T_INTEGER, "{}: dataset '{}' has a {} type; token ids must be integers", path, name,
                 type_class_name(cls));
  Handle space(H5Dget_space(d.dataset.get()), H5Sclose);
  DAEDALUS_HDF5_CHECK(space.get());
  const int rank = H5Sget_simple_extent_ndims(space.get());
  DAEDALUS_CHECK(rank == 1, "{}: dataset '{}' has rank {}; token ids must be a 1-d dataset", path, name, rank);
  hsize_t dim = 0;
  DAEDALUS_HDF5_CHECK(H5Sget_simple_extent_dims(space.get(), &dim, nullptr));
  d.count = int64_t(dim);
  // Every token must be stored. HDF5 1.10 fills what is not from the fill-value message, and reads a
  // damaged one past its buffer (found by scripts/fuzz: an unwritten chunk, AddressSanitizer
  // heap-buffer-overflow in H5Dread); a compact or contiguous dataset smaller than its shape is the
  // same. Token files are written whole, so anything missing is a damaged or unfinished file.
  Handle dcpl(H5Dget_create_plist(d.dataset.get()), H5Pclose);
  DAEDALUS_HDF5_CHECK(dcpl.get());
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout == H5D_CHUNKED) {
    hsize_t chunk = 0, stored = 0;
    DAEDALUS_CHECK(H5Pget_chunk(dcpl.get(), 1, &chunk) == 1 && chunk > 0,
                   "{}: dataset '{}': unreadable chunk shape (a damaged file)", path, name);
    DAEDALUS_CHECK(H5Dget_num_chunks(d.dataset.get(), space.get(), &stored) >= 0,
                   "{}: dataset '{}': its chunk index is unreadable (a damaged file)", path, name);
    const hsize_t want = (dim + chunk - 1) / chunk, bytes = chunk * H5Tget_size(type.get());
    DAEDALUS_CHECK(stored == want, "{}: dataset '{}': {} of its {} chunks are stored (a damaged or unfinished file)",
                   path, name, stored, want);
    // Unfiltered chunks are stored whole; a filtered one takes at least a byte. The first and the
    // last chunk must be where the index says (each lookup is one B-tree descent, not a scan).
    const hsize_t storage = H5Dget_storage_size(d.dataset.get());
    DAEDALUS_CHECK(storage >= (H5Pget_nfilters(dcpl.get()) == 0 ? want * bytes : want),
                   "{}: dataset '{}': {} bytes stored for {} chunks (a damaged file)", path, name, storage, want);
    for (const hsize_t first : {hsize_t(0), (want - 1) * chunk}) {
      if (want == 0) break;
      haddr_t addr = HADDR_UNDEF;
      hsize_t size = 0;
      unsigned mask = 0;
      DAEDALUS_CHECK(H5Dget_chunk_info_by_coord(d.dataset.get(), &first, &mask, &addr, &size) >= 0 &&
                         addr != HADDR_UNDEF && size > 0,
                     "{}: dataset '{}': the chunk at token {} is missing from its index (a damaged file)", path, name,
                     first);
    }
  } else {
    const hsize_t need = dim * H5Tget_size(type.get()), have = H5Dget_storage_size(d.dataset.get());
    DAEDALUS_CHECK(have >= need,
                   "{}: dataset '{}': {} bytes stored for {} tokens of {} bytes (a damaged or unfinished file)", path,
                   name, have, dim, H5Tget_size(type.get()));
  }
  return d;
}

// Opens `path` as open_dataset does (which walks the dataset's chunk index), in a child process
// (data/isolated.h): HDF5 can crash on a damaged file before any check of its own, and a token
// file is input like any other. InputError naming the file for anything wrong with it.
void probe(const std::string& path, const std::string& name) {
  const IsolatedOutcome r = run_isolated(
      [&] {
        open_dataset(path, name);  // with its checks of the layout and the chunk index
      },
      60);
  switch (r.kind) {
    case IsolatedOutcome::Kind::ok: return;
    case IsolatedOutcome::Kind::input_error: throw InputError(r.text);
    case IsolatedOutcome::Kind::error: throw InputError(fmt::format("{}: unreadable HDF5 file: {}", path, r.text));
    case IsolatedOutcome::Kind::crashed:
    case IsolatedOutcome::Kind::timed_out:
      throw InputError(fmt::format("{}: a damaged HDF5 file: reading it in a child process {}", path, r.text));
  }
}

class Hdf5Source final : public TokenSource {
 public:
  Hdf5Source(std::vector<TokenDataset> datasets, std::string description)
      : datasets_(std::move(datasets)), description_(std::move(description)) {
    offsets_.push_back(0);
    for (const TokenDataset& d : datasets_) offsets_.push_back(offsets_.back() + d.count);
  }
  int64_t size() const override { return offsets_.back(); }
  std::string describe() const override { return description_; }

  // Not thread-safe (neither is a parallel HDF5 build): call from one thread at a time.
  void read(int64_t start, int64_t count, int32_t* out) const override {
    detail::check_read_range(*this, start, count);
    size_t r = size_t(std::upper_bound(offsets_.begin(), offsets_.end(), start) - offsets_.begin()) - 1;
    while (count > 0) {
      const int64_t begin = start - offsets_[r];
      const int64_t n = std::min(count, datasets_[r].count - begin);
      if (n > 0) {
        const hid_t dataset = datasets_[r].dataset.get();
        Handle file_space(H5Dget_space(dataset), H5Sclose);
        DAEDALUS_HDF5_CHECK(file_space.get());
        const hsize_t offset = hsize_t(begin), extent = hsize_t(n);
        DAEDALUS_HDF5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &offset, nullptr, &extent, nullptr));
        Handle mem_space(H5Screate_simple(1, &extent, nullptr), H5Sclose);
        DAEDALUS_HDF5_CHECK(mem_space.get());
        // What passed open_dataset's checks can still fail to read (a damaged chunk): bad input.
        DAEDALUS_CHECK(H5Dread(dataset, H5T_NATIVE_INT32, mem_space.get(), file_space.get(), H5P_DEFAULT, out) >= 0,
                       "{}: cannot read tokens {}..{} (a damaged file)", datasets_[r].where, begin, begin + n - 1);
      }
      out += n;
      start += n;
      count -= n;
      ++r;
    }
  }

 private:
  std::vector<TokenDataset> datasets_;
  std::vector<int64_t> offsets_;
  std::string description_;
};

}  // namespace

std::unique_ptr<TokenSource> open_hdf5(const std::vector<std::string>& files, const std::string& dataset) {
  DAEDALUS_CHECK(!files.empty(), "HDF5 token files: no files given");
  // Our messages name the file and dataset; HDF5's own error-stack dump would only add noise.
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  std::vector<TokenDataset> datasets;
  int64_t tokens = 0;
  for (const std::string& path : files) {
    probe(path, dataset);
    datasets.push_back(open_dataset(path, dataset));
    tokens += datasets.back().count;
  }
  std::string description = detail::describe_files(fmt::format("HDF5 dataset '{}' in", dataset), files, tokens);
  return std::make_unique<Hdf5Source>(std::move(datasets), std::move(description));
}

}  // namespace daedalus::data

#else

namespace daedalus::data {
std::unique_ptr<TokenSource> open_hdf5(const std::vector<std::string>& files, const std::string&) {
  DAEDALUS_FAIL("{}: this build of Daedalus has no HDF5 (DAEDALUS_MINIMAL)", files.empty() ? "" : files.front());
}
}  // namespace daedalus::data

#endif
