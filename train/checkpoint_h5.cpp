// HDF5 plumbing for checkpoint files (see checkpoint_h5.h).
#include "train/checkpoint_h5.h"

#include <algorithm>
#include <cstdlib>

#include "autograd/check.h"

namespace daedalus::train::h5 {

namespace {

// H5Ewalk2 callback: appends each error's description.
herr_t collect_error(unsigned, const H5E_error2_t* e, void* out) {
  auto* text = static_cast<std::string*>(out);
  if (e->desc != nullptr && *e->desc != '\0') {
    if (!text->empty()) *text += "; ";
    *text += e->desc;
  }
  return 0;
}

[[noreturn]] void fail(const std::string& what) { throw Error(what + ": " + take_error_stack()); }

Handle check(hid_t id, herr_t (*close)(hid_t), const std::string& what) {
  if (id < 0) fail(what);
  return Handle(id, close);
}

// Selects rows [row0, row0 + rows) of `shape` on `space`.
void select_rows(hid_t space, const Shape& shape, int64_t row0, int64_t rows) {
  std::vector<hsize_t> start(shape.size(), 0), count(shape.begin(), shape.end());
  start[0] = hsize_t(row0);
  count[0] = hsize_t(rows);
  DAEDALUS_HDF5_CHECK(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
}

Handle memory_space(const Shape& shape, int64_t rows) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  dims[0] = hsize_t(std::max<int64_t>(rows, 1));
  return check(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose, "H5Screate_simple");
}

}  // namespace

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string take_error_stack() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &text);
  H5Eclear2(H5E_DEFAULT);
  if (text.empty()) return "no detail from HDF5";
  // A checksum that failed says it all; the twenty frames above it add nothing for a user.
  if (text.find("incorrect metadata checksum") != std::string::npos)
    return "HDF5 metadata checksum mismatch (incorrect metadata checksum: the file is damaged)";
  return text;
}

Handle file_access(const MPI_Comm* comm) {
  silence_errors();
  Handle fapl = check(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "H5Pcreate(H5P_FILE_ACCESS)");
  if (comm != nullptr) {
    DAEDALUS_HDF5_CHECK(H5Pset_fapl_mpio(fapl.get(), *comm, MPI_INFO_NULL));
    DAEDALUS_HDF5_CHECK(H5Pset_coll_metadata_write(fapl.get(), 1));
  }
  // HDF5 >= 1.10.7 locks files on open, which NFS and Lustre mounts often refuse ("unable to lock
  // file"). A checkpoint is written once, under a temporary name, then renamed: locking buys
  // nothing. The environment variable, when set, overrides this property (HDF5's own rule).
  if (std::getenv("HDF5_USE_FILE_LOCKING") == nullptr)
    DAEDALUS_HDF5_CHECK(H5Pset_file_locking(fapl.get(), /*use_file_locking=*/0, /*ignore_when_disabled=*/1));
  return fapl;
}

Handle create_file(const std::string& path, const MPI_Comm* comm) {
  Handle fapl = file_access(comm);
  // The HDF5 1.10 file format: compact chunk indexes (one chunk, or a fixed array) instead of a
  // 2 KB B-tree per dataset. Readable by HDF5 >= 1.10 (h5py, h5dump of the last years).
  DAEDALUS_HDF5_CHECK(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110));
  return check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose, "cannot create " + path);
}

Handle open_file(const std::string& path, std::string* error) {
  Handle fapl = file_access(nullptr);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  if (!file.valid() && error != nullptr) *error = take_error_stack();
  return file;
}

Handle create_group(hid_t parent, const std::string& name, bool compact_attributes) {
  Handle gcpl = check(H5Pcreate(H5P_GROUP_CREATE), H5Pclose, "H5Pcreate(H5P_GROUP_CREATE)");
  // Attributes in the object header itself (HDF5 moves more than 8 to a fractal heap, where text
  // over 4 KB is stored unchecksummed): the header's checksum then covers every value.
  if (compact_attributes) DAEDALUS_HDF5_CHECK(H5Pset_attr_phase_change(gcpl.get(), 1000, 0));
  return check(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose,
               "cannot create group " + name);
}

bool exists(hid_t parent, const std::string& name) {
  const htri_t e = H5Lexists(parent, name.c_str(), H5P_DEFAULT);
  if (e < 0) throw CheckpointReadError(fmt::format("{}: cannot look it up: {}", name, take_error_stack()));
  return e > 0;
}

Handle open_group(hid_t parent, const std::string& name) {
  if (!exists(parent, name)) return {};
  Handle g(H5Gopen2(parent, name.c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.valid()) throw CheckpointReadError(fmt::format("{}: cannot open the group: {}", name, take_error_stack()));
  return g;
}

Handle open_dataset(hid_t parent, const std::string& name) {
  if (!exists(parent, name)) return {};
  Handle d(H5Dopen2(parent, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.valid()) throw CheckpointReadError(fmt::format("{}: cannot open the dataset: {}", name, take_error_stack()));
  return d;
}

Shape chunk_shape(const Shape& shape, bool one_row_per_chunk) {
  Shape chunk = shape;
  for (int64_t& c : chunk) c = std::max<int64_t>(c, 1);
  if (one_row_per_chunk && !chunk.empty()) chunk[0] = 1;
  // Halve the leading splittable dimension until a chunk is about kChunkBytes (HDF5's limit is 4 GiB).
  auto bytes = [&] { return shape_numel(chunk) * int64_t(sizeof(float)); };
  for (size_t d = 0; d < chunk.size() && bytes() > kChunkBytes; ++d) {
    const int64_t rest = bytes() / chunk[d];
    chunk[d] = std::max<int64_t>(1, kChunkBytes / rest);
  }
  return chunk;
}

Handle create_f32_dataset(hid_t parent, const std::string& name, const Shape& shape, const Shape& chunk) {
  DAEDALUS_ASSERT(!shape.empty() && shape.size() == chunk.size());
  std::vector<hsize_t> dims(shape.begin(), shape.end()), cdims(chunk.begin(), chunk.end());
  Handle space = check(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose, "H5Screate_simple");
  Handle dcpl = check(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "H5Pcreate(H5P_DATASET_CREATE)");
  DAEDALUS_HDF5_CHECK(H5Pset_chunk(dcpl.get(), int(cdims.size()), cdims.data()));
  DAEDALUS_HDF5_CHECK(H5Pset_fletcher32(dcpl.get()));
  DAEDALUS_HDF5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER));
  return check(H5Dcreate2(parent, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
               H5Dclose, "cannot create dataset " + name);
}

std::vector<std::pair<int64_t, int64_t>> row_pieces(int64_t rows, int64_t row_elems) {
  const int64_t row_bytes = std::max<int64_t>(row_elems, 1) * int64_t(sizeof(float));
  const int64_t step = std::max<int64_t>(1, kMaxPieceBytes / row_bytes);
  std::vector<std::pair<int64_t, int64_t>> pieces;
  for (int64_t r = 0; r < rows; r += step) pieces.emplace_back(r, std::min(rows, r + step));
  return pieces;
}

void write_rows(hid_t dataset, hid_t xfer, const Shape& shape, int64_t row0, int64_t rows, const float* data) {
  Handle file_space = check(H5Dget_space(dataset), H5Sclose, "H5Dget_space");
  Handle mem = memory_space(shape, rows);
  static const float dummy = 0;  // H5Dwrite wants a buffer even when nothing is selected
  if (data == nullptr || rows == 0) {
    DAEDALUS_HDF5_CHECK(H5Sselect_none(file_space.get()));
    DAEDALUS_HDF5_CHECK(H5Sselect_none(mem.get()));
    data = &dummy;
  } else {
    select_rows(file_space.get(), shape, row0, rows);
  }
  if (H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem.get(), file_space.get(), xfer, data) < 0) fail("H5Dwrite");
}

bool read_rows(hid_t dataset, const Shape& shape, int64_t row0, int64_t rows, float* out, std::string* error) {
  if (rows == 0) return true;
  Handle file_space = check(H5Dget_space(dataset), H5Sclose, "H5Dget_space");
  select_rows(file_space.get(), shape, row0, rows);
  Handle mem = memory_space(shape, rows);
  if (H5Dread(dataset, H5T_NATIVE_FLOAT, mem.get(), file_space.get(), H5P_DEFAULT, out) >= 0) return true;
  if (error != nullptr) *error = take_error_stack();  // before the handles close (which clears it)
  return false;
}

Shape dataset_shape(hid_t dataset) {
  Handle space = check(H5Dget_space(dataset), H5Sclose, "H5Dget_space");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  DAEDALUS_HDF5_CHECK(rank);
  std::vector<hsize_t> dims(size_t(rank), 0);
  if (rank > 0) DAEDALUS_HDF5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return Shape(dims.begin(), dims.end());
}

std::string dataset_type(hid_t dataset) {
  Handle type = check(H5Dget_type(dataset), H5Tclose, "H5Dget_type");
  const size_t bytes = H5Tget_size(type.get());
  switch (H5Tget_class(type.get())) {
    case H5T_FLOAT: return fmt::format("f{}", 8 * bytes);
    case H5T_INTEGER: return fmt::format("{}{}", H5Tget_sign(type.get()) == H5T_SGN_NONE ? "u" : "i", 8 * bytes);
    case H5T_STRING: return "string";
    default: return "other";
  }
}

bool has_fletcher32(hid_t dataset) {
  Handle dcpl = check(H5Dget_create_plist(dataset), H5Pclose, "H5Dget_create_plist");
  unsigned flags = 0;
  size_t nelmts = 0;
  char name[32];
  unsigned config = 0;
  return H5Pget_filter_by_id2(dcpl.get(), H5Z_FILTER_FLETCHER32, &flags, &nelmts, nullptr, sizeof(name), name,
                              &config) >= 0;
}

void write_attr(hid_t object, const std::string& name, int64_t value) {
  Handle space = check(H5Screate(H5S_SCALAR), H5Sclose, "H5Screate");
  Handle attr = check(H5Acreate2(object, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                      "cannot create attribute " + name);
  if (H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) < 0) fail("cannot write attribute " + name);
}

void write_attr(hid_t object, const std::string& name, const std::string& value) {
  Handle type = check(H5Tcopy(H5T_C_S1), H5Tclose, "H5Tcopy");
  DAEDALUS_HDF5_CHECK(H5Tset_size(type.get(), std::max<size_t>(value.size(), 1)));
  DAEDALUS_HDF5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLPAD));
  DAEDALUS_HDF5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  Handle space = check(H5Screate(H5S_SCALAR), H5Sclose, "H5Screate");
  Handle attr = check(H5Acreate2(object, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                      "cannot create attribute " + name);
  std::string padded = value;
  padded.resize(std::max<size_t>(value.size(), 1), '\0');
  if (H5Awrite(attr.get(), type.get(), padded.data()) < 0) fail("cannot write attribute " + name);
}

namespace {

// Whether `object` has attribute `name`; CheckpointReadError when HDF5 cannot tell.
bool has_attr(hid_t object, const std::string& name) {
  const htri_t e = H5Aexists(object, name.c_str());
  if (e < 0) throw CheckpointReadError(fmt::format("attribute {}: cannot look it up: {}", name, take_error_stack()));
  return e > 0;
}

[[noreturn]] void unreadable_attr(const std::string& name) {
  throw CheckpointReadError(fmt::format("attribute {}: unreadable: {}", name, take_error_stack()));
}

}  // namespace

std::optional<int64_t> read_int_attr(hid_t object, const std::string& name) {
  if (!has_attr(object, name)) return std::nullopt;
  Handle attr(H5Aopen(object, name.c_str(), H5P_DEFAULT), H5Aclose);
  int64_t value = 0;
  if (!attr.valid() || H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) unreadable_attr(name);
  return value;
}

std::optional<std::string> read_string_attr(hid_t object, const std::string& name) {
  if (!has_attr(object, name)) return std::nullopt;
  Handle attr(H5Aopen(object, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) unreadable_attr(name);
  Handle file_type(H5Aget_type(attr.get()), H5Tclose);
  if (!file_type.valid()) unreadable_attr(name);
  if (H5Tget_class(file_type.get()) != H5T_STRING)
    throw CheckpointReadError(fmt::format("attribute {}: not a string", name));
  Handle type = check(H5Tcopy(H5T_C_S1), H5Tclose, "H5Tcopy");
  DAEDALUS_HDF5_CHECK(H5Tset_cset(type.get(), H5Tget_cset(file_type.get())));  // HDF5 does not convert ASCII <-> UTF-8
  if (H5Tis_variable_str(file_type.get()) > 0) {  // format 1 (global heap: no checksum)
    DAEDALUS_HDF5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
    char* text = nullptr;
    if (H5Aread(attr.get(), type.get(), &text) < 0 || text == nullptr) unreadable_attr(name);
    std::string value(text);
    H5free_memory(text);
    return value;
  }
  const size_t size = H5Tget_size(file_type.get());
  if (size == 0 || size > kMaxAttrBytes)
    throw CheckpointReadError(fmt::format("attribute {}: implausible string size {}", name, size));
  DAEDALUS_HDF5_CHECK(H5Tset_size(type.get(), size + 1));
  std::string value(size + 1, '\0');
  if (H5Aread(attr.get(), type.get(), value.data()) < 0) unreadable_attr(name);
  value.resize(value.find('\0'));
  return value;
}

namespace {

herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

struct Collected {
  std::vector<std::string> names;
  std::string error;  // the first object that would not open
};

// H5Lvisit callback: keeps the names of datasets (opening the object: the same call in every HDF5
// version, unlike the versioned H5O_info structs). An object that does not open stops the walk.
herr_t collect_dataset(hid_t group, const char* name, const H5L_info_t* info, void* out) {
  auto* c = static_cast<Collected*>(out);
  if (info->type != H5L_TYPE_HARD) {
    c->error = fmt::format("{}: not a hard link", name);
    return -1;
  }
  Handle object(H5Oopen(group, name, H5P_DEFAULT), H5Oclose);
  if (!object.valid()) {
    c->error = fmt::format("{}: cannot open: {}", name, take_error_stack());
    return -1;
  }
  if (H5Iget_type(object.get()) == H5I_DATASET) c->names.emplace_back(name);
  return 0;
}

}  // namespace

std::vector<std::string> list_names(hid_t group) {
  std::vector<std::string> names;
  if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_name, &names) < 0)
    throw CheckpointReadError(fmt::format("cannot list the group: {}", take_error_stack()));
  return names;
}

std::vector<std::string> list_datasets(hid_t file, const std::string& group) {
  Collected c;
  Handle g = open_group(file, group);
  if (!g.valid()) return c.names;
  if (H5Lvisit(g.get(), H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &c) < 0)
    throw CheckpointReadError(fmt::format("/{}: cannot list: {}", group, c.error.empty() ? take_error_stack() : c.error));
  for (std::string& n : c.names) n = "/" + group + "/" + n;
  return c.names;
}

}  // namespace daedalus::train::h5
