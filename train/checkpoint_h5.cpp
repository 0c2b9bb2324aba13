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
  return text.empty() ? std::string("no detail from HDF5") : text;
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

Handle create_group(hid_t parent, const std::string& name) {
  return check(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
               "cannot create group " + name);
}

bool exists(hid_t parent, const std::string& name) { return H5Lexists(parent, name.c_str(), H5P_DEFAULT) > 0; }

Handle open_group(hid_t parent, const std::string& name) {
  if (!exists(parent, name)) return {};
  return Handle(H5Gopen2(parent, name.c_str(), H5P_DEFAULT), H5Gclose);
}

Handle open_dataset(hid_t parent, const std::string& name) {
  if (!exists(parent, name)) return {};
  return Handle(H5Dopen2(parent, name.c_str(), H5P_DEFAULT), H5Dclose);
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
  DAEDALUS_HDF5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  DAEDALUS_HDF5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  Handle space = check(H5Screate(H5S_SCALAR), H5Sclose, "H5Screate");
  Handle attr = check(H5Acreate2(object, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                      "cannot create attribute " + name);
  const char* text = value.c_str();
  if (H5Awrite(attr.get(), type.get(), &text) < 0) fail("cannot write attribute " + name);
}

std::optional<int64_t> read_int_attr(hid_t object, const std::string& name) {
  if (H5Aexists(object, name.c_str()) <= 0) return std::nullopt;
  Handle attr(H5Aopen(object, name.c_str(), H5P_DEFAULT), H5Aclose);
  int64_t value = 0;
  if (!attr.valid() || H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) return std::nullopt;
  return value;
}

std::optional<std::string> read_string_attr(hid_t object, const std::string& name) {
  if (H5Aexists(object, name.c_str()) <= 0) return std::nullopt;
  Handle attr(H5Aopen(object, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return std::nullopt;
  Handle file_type(H5Aget_type(attr.get()), H5Tclose);
  if (!file_type.valid() || H5Tget_class(file_type.get()) != H5T_STRING) return std::nullopt;
  Handle type = check(H5Tcopy(H5T_C_S1), H5Tclose, "H5Tcopy");
  DAEDALUS_HDF5_CHECK(H5Tset_cset(type.get(), H5Tget_cset(file_type.get())));  // HDF5 does not convert ASCII <-> UTF-8
  if (H5Tis_variable_str(file_type.get()) > 0) {
    DAEDALUS_HDF5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
    char* text = nullptr;
    if (H5Aread(attr.get(), type.get(), &text) < 0 || text == nullptr) return std::nullopt;
    std::string value(text);
    H5free_memory(text);
    return value;
  }
  const size_t size = H5Tget_size(file_type.get());
  DAEDALUS_HDF5_CHECK(H5Tset_size(type.get(), size + 1));
  std::string value(size + 1, '\0');
  if (H5Aread(attr.get(), type.get(), value.data()) < 0) return std::nullopt;
  value.resize(value.find('\0'));
  return value;
}

namespace {

herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

// H5Lvisit callback: keeps the names of datasets (opening the object: the same call in every HDF5
// version, unlike the versioned H5O_info structs).
herr_t collect_dataset(hid_t group, const char* name, const H5L_info_t* info, void* out) {
  if (info->type != H5L_TYPE_HARD) return 0;
  Handle object(H5Oopen(group, name, H5P_DEFAULT), H5Oclose);
  if (object.valid() && H5Iget_type(object.get()) == H5I_DATASET)
    static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

}  // namespace

std::vector<std::string> list_names(hid_t group) {
  std::vector<std::string> names;
  DAEDALUS_HDF5_CHECK(H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_name, &names));
  return names;
}

std::vector<std::string> list_datasets(hid_t file, const std::string& group) {
  std::vector<std::string> names;
  Handle g = open_group(file, group);
  if (!g.valid()) return names;
  if (H5Lvisit(g.get(), H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names) < 0) fail("cannot list " + group);
  for (std::string& n : names) n = "/" + group + "/" + n;
  return names;
}

}  // namespace daedalus::train::h5
