// safetensors writer and validating reader (format in safetensors.h).
#include "train/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <string_view>

#if !DAEDALUS_MINIMAL  // the GPU-test build has no nlohmann-json
#include <nlohmann/json.hpp>
#endif

#include "autograd/check.h"
#include "fp8/format.h"

namespace daedalus {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so must the host be");

#if DAEDALUS_MINIMAL

void write_safetensors(const std::string& path, const NamedTensors&, const std::map<std::string, std::string>&) {
  DAEDALUS_FAIL("{}: safetensors needs nlohmann-json; this build is DAEDALUS_MINIMAL", path);
}
NamedTensors read_safetensors(const std::string& path) {
  DAEDALUS_FAIL("{}: safetensors needs nlohmann-json; this build is DAEDALUS_MINIMAL", path);
}
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  DAEDALUS_FAIL("{}: safetensors needs nlohmann-json; this build is DAEDALUS_MINIMAL", path);
}
SafetensorsFile::SafetensorsFile(const std::string& path) {
  DAEDALUS_FAIL("{}: safetensors needs nlohmann-json; this build is DAEDALUS_MINIMAL", path);
}
SafetensorsFile::~SafetensorsFile() = default;
Tensor SafetensorsFile::read(const SafetensorsEntry& e, int64_t, int64_t) const {
  DAEDALUS_FAIL("{}: safetensors needs nlohmann-json; this build is DAEDALUS_MINIMAL", e.name);
}
const SafetensorsEntry* SafetensorsFile::find(std::string_view) const { return nullptr; }

#else

namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit

// The dtype codes this reader knows: element size, and the Tensor dtype a read gives (F16 and
// F8_E8M0 have none: they are widened to fp32, exactly).
struct DTypeCode {
  std::string_view code;
  uint64_t size;
  std::optional<DType> dtype;  // the dtype written and read as stored
};
constexpr DTypeCode kCodes[] = {
    {"F32", 4, DType::f32},        {"BF16", 2, DType::bf16},      {"F16", 2, std::nullopt},
    {"F8_E4M3", 1, DType::f8e4m3}, {"F8_E5M2", 1, DType::f8e5m2}, {"F8_E8M0", 1, std::nullopt},
    {"I64", 8, DType::i64},        {"I32", 4, DType::i32},        {"U8", 1, DType::u8}};
constexpr std::string_view kSupported = "F32, BF16, F16, F8_E4M3, F8_E5M2, F8_E8M0, I64, I32, U8";

std::optional<std::string_view> code_of(DType dtype) {
  for (const auto& c : kCodes)
    if (c.dtype == dtype) return c.code;
  return std::nullopt;
}
const DTypeCode* find_code(std::string_view code) {
  for (const auto& c : kCodes)
    if (c.code == code) return &c;
  return nullptr;
}

// IEEE half -> float (every half is a float: exact).
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
  if (exponent == 0x1F) return codec::bits_float(sign | 0x7F800000u | (mantissa << 13));  // inf, NaN
  if (exponent != 0) return codec::bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
  const float magnitude = float(mantissa) * 0x1p-24f;  // subnormal: mantissa * 2^-24, exact
  return sign != 0 ? -magnitude : magnitude;
}

// An open stdio file, closed on scope exit.
class File {
 public:
  File(const std::string& path, const char* mode) : file_(std::fopen(path.c_str(), mode)) {}
  ~File() {
    if (file_ != nullptr) std::fclose(file_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  std::FILE* get() const { return file_; }
  int close() {
    const int rc = std::fclose(file_);
    file_ = nullptr;
    return rc;
  }

 private:
  std::FILE* file_;
};

struct Header {
  std::map<std::string, std::string> metadata;
  std::vector<SafetensorsEntry> entries;  // sorted by data offset
  uint64_t data_start = 0;                // 8 + header length
};

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A non-negative JSON integer (nlohmann parses non-negative literals as unsigned).
bool as_u64(const json& v, uint64_t& out) {
  if (!v.is_number_unsigned()) return false;
  out = v.get<uint64_t>();
  return true;
}

SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const json& info) {
  DAEDALUS_CHECK(info.is_object(), "{}: tensor '{}': header entry is {}, expected an object", path, name,
                 info.type_name());
  for (const char* key : {"dtype", "shape", "data_offsets"})
    DAEDALUS_CHECK(info.contains(key), "{}: tensor '{}': header entry has no \"{}\"", path, name, key);
  SafetensorsEntry e;
  e.name = name;

  const json& dtype = info["dtype"];
  DAEDALUS_CHECK(dtype.is_string(), "{}: tensor '{}': dtype is {}, expected a string", path, name, dtype.type_name());
  const DTypeCode* code = find_code(dtype.get<std::string>());
  DAEDALUS_CHECK(code != nullptr, "{}: tensor '{}': unsupported dtype \"{}\" (supported: {})", path, name,
                 dtype.get<std::string>(), kSupported);
  e.dtype = std::string(code->code);

  const json& shape = info["shape"];
  DAEDALUS_CHECK(shape.is_array(), "{}: tensor '{}': shape is {}, expected an array", path, name, shape.type_name());
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : shape) {
    uint64_t n = 0;
    DAEDALUS_CHECK(as_u64(d, n) && n <= uint64_t(std::numeric_limits<int64_t>::max()),
                   "{}: tensor '{}': shape {} has an entry that is not a non-negative integer", path, name,
                   shape.dump());
    e.shape.push_back(int64_t(n));
    if (n != 0 && numel > std::numeric_limits<uint64_t>::max() / n) overflow = true;
    numel *= n;
  }

  const json& offsets = info["data_offsets"];
  DAEDALUS_CHECK(offsets.is_array() && offsets.size() == 2 && as_u64(offsets[0], e.begin) && as_u64(offsets[1], e.end),
                 "{}: tensor '{}': data_offsets {} is not [begin, end] of non-negative integers", path, name,
                 offsets.dump());
  DAEDALUS_CHECK(e.begin <= e.end, "{}: tensor '{}': data_offsets [{}, {}] end before they begin", path, name, e.begin,
                 e.end);
  const uint64_t elem = code->size;
  const bool fits = !overflow && numel <= std::numeric_limits<uint64_t>::max() / elem;
  DAEDALUS_CHECK(fits && numel * elem == e.end - e.begin,
                 "{}: tensor '{}': {} {} needs {} bytes but data_offsets [{}, {}] span {}", path, name, dtype.dump(),
                 shape.dump(), fits ? fmt::format("{}", numel * elem) : std::string("too many"), e.begin, e.end,
                 e.end - e.begin);
  return e;
}

// Validates the length prefix and the header of a file of `file_size` bytes mapped at `bytes`.
Header read_header(const std::string& path, const unsigned char* bytes, uint64_t file_size) {
  DAEDALUS_CHECK(file_size >= 8, "{}: truncated: {} bytes, shorter than the 8-byte header length", path, file_size);
  const uint64_t n = read_u64_le(bytes);
  DAEDALUS_CHECK(n <= file_size - 8,
                 "{}: header length {} runs past the end of the file ({} bytes): truncated or not safetensors", path, n,
                 file_size);
  DAEDALUS_CHECK(n <= kMaxHeaderBytes, "{}: header length {} exceeds the {}-byte limit", path, n, kMaxHeaderBytes);

  const std::string text(reinterpret_cast<const char*>(bytes) + 8, size_t(n));
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    DAEDALUS_FAIL("{}: header is not valid JSON: {}", path, e.what());
  }
  DAEDALUS_CHECK(j.is_object(), "{}: header is a JSON {}, expected an object", path, j.type_name());

  Header h;
  h.data_start = 8 + n;
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      DAEDALUS_CHECK(value.is_object(), "{}: __metadata__ is {}, expected an object of strings", path,
                     value.type_name());
      for (const auto& [k, v] : value.items()) {
        DAEDALUS_CHECK(v.is_string(), "{}: __metadata__ \"{}\" is {}, expected a string", path, k, v.type_name());
        h.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(path, key, value));
  }

  // The tensors must tile [0, data_size) exactly: in range, no overlap, no holes.
  const uint64_t data_size = file_size - h.data_start;
  std::stable_sort(h.entries.begin(), h.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : h.entries) {
    DAEDALUS_CHECK(e.end <= data_size,
                   "{}: tensor '{}': data_offsets [{}, {}] out of range: the data buffer has {} bytes (truncated?)",
                   path, e.name, e.begin, e.end, data_size);
    DAEDALUS_CHECK(e.begin >= cursor, "{}: tensors '{}' [{}, {}] and '{}' [{}, {}] overlap", path,
                   previous != nullptr ? previous->name : "", previous != nullptr ? previous->begin : 0, cursor, e.name,
                   e.begin, e.end);
    DAEDALUS_CHECK(e.begin == cursor, "{}: tensor '{}': {} unused bytes before its data_offsets [{}, {}]", path, e.name,
                   e.begin - cursor, e.begin, e.end);
    cursor = e.end;
    previous = &e;
  }
  DAEDALUS_CHECK(cursor == data_size, "{}: {} unused bytes after the last tensor (data buffer {} bytes)", path,
                 data_size - cursor, data_size);
  return h;
}

void fsync_directory_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: the rename itself already happened
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string_view> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    DAEDALUS_CHECK(!name.empty() && name != "__metadata__", "{}: invalid tensor name '{}'", path, name);
    DAEDALUS_CHECK(seen.insert(name).second, "{}: tensor '{}' appears twice", path, name);
    DAEDALUS_CHECK(t.defined(), "{}: tensor '{}' is undefined", path, name);
    const auto code = code_of(t.dtype());
    DAEDALUS_CHECK(code.has_value(), "{}: tensor '{}': dtype {} cannot be written", path, name,
                   dtype_name(t.dtype()));
    const uint64_t nbytes = t.nbytes();
    header[name] = {{"dtype", std::string(*code)}, {"shape", t.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const ordered_json::exception& e) {
    DAEDALUS_FAIL("{}: cannot encode the header (tensor names and metadata must be UTF-8): {}", path, e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>(uint64_t(text.size()) >> (8 * i));

  const std::string tmp = path + ".tmp";
  File file(tmp, "wb");
  DAEDALUS_CHECK(file.get() != nullptr, "{}: cannot create: {}", tmp, std::strerror(errno));
  auto write = [&](const void* data, size_t n) {
    if (n == 0 || std::fwrite(data, 1, n, file.get()) == n) return;
    const int err = errno;
    file.close();
    std::remove(tmp.c_str());
    DAEDALUS_FAIL("{}: write failed: {}", tmp, std::strerror(err));
  };
  write(prefix, 8);
  write(text.data(), text.size());
  for (const auto& [name, t] : tensors) {
    const Tensor host = t.to(Device::cpu()).contiguous();
    write(host.data_ptr(), host.nbytes());
  }
  const bool synced = std::fflush(file.get()) == 0 && ::fsync(::fileno(file.get())) == 0;
  const int err = errno;
  const bool closed = file.close() == 0;
  if (!synced || !closed) {
    std::remove(tmp.c_str());
    DAEDALUS_FAIL("{}: write failed: {}", tmp, std::strerror(synced ? errno : err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_err = errno;
    std::remove(tmp.c_str());
    DAEDALUS_FAIL("{}: cannot rename to {}: {}", tmp, path, std::strerror(rename_err));
  }
  fsync_directory_of(path);
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DAEDALUS_CHECK(fd >= 0, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const int stat_err = errno;
  if (!stat_ok || !S_ISREG(st.st_mode)) {
    ::close(fd);
    DAEDALUS_FAIL("{}: cannot read: {}", path, stat_ok ? "not a regular file" : std::strerror(stat_err));
  }
  size_ = uint64_t(st.st_size);
  if (size_ > 0) {
    void* m = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    DAEDALUS_CHECK(m != MAP_FAILED, "{}: cannot map: {}", path, std::strerror(err));
    map_ = static_cast<const unsigned char*>(m);
  } else {
    ::close(fd);
  }
  try {
    Header h = read_header(path, map_, size_);
    metadata_ = std::move(h.metadata);
    entries_ = std::move(h.entries);
    data_start_ = h.data_start;
  } catch (...) {
    if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), size_t(size_));
    throw;
  }
  for (size_t i = 0; i < entries_.size(); ++i) index_[entries_[i].name] = i;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), size_t(size_));
}

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Tensor SafetensorsFile::read(const SafetensorsEntry& e, int64_t row0, int64_t rows) const {
  const DTypeCode* code = find_code(e.dtype);
  DAEDALUS_CHECK(code != nullptr, "{}: tensor '{}': unsupported dtype {}", path_, e.name, e.dtype);
  Shape shape = e.shape;
  const int64_t dim0 = shape.empty() ? 1 : shape[0];
  if (rows < 0) rows = dim0 - row0;
  DAEDALUS_CHECK(row0 >= 0 && rows >= 0 && row0 + rows <= dim0, "{}: tensor '{}' {}: rows [{}, {}) out of range",
                 path_, e.name, shape_str(e.shape), row0, row0 + rows);
  if (!shape.empty()) shape[0] = rows;
  const uint64_t row_bytes = dim0 == 0 ? 0 : (e.end - e.begin) / uint64_t(dim0);
  const unsigned char* src = map_ + data_start_ + e.begin + uint64_t(row0) * row_bytes;
  const uint64_t n = uint64_t(rows) * row_bytes;
  Tensor t = Tensor::empty(shape, code->dtype.value_or(DType::f32), Device::cpu());
  if (code->dtype) {
    if (n > 0) std::memcpy(t.data_ptr(), src, size_t(n));
  } else {
    float* out = t.data<float>();
    const bool half = code->code == "F16";
    const int64_t count = int64_t(n / code->size);
    for (int64_t i = 0; i < count; ++i) {
      if (half) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = half_to_float(h);
      } else {  // F8_E8M0: 2^(code - 127), 0xFF NaN
        out[i] = fp8::e8m0_to_float(src[i]);
      }
    }
  }
  // The copy is made: drop these pages from this process (the page cache keeps the file).
  if (n > 0) {
    const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
    const uintptr_t first = (reinterpret_cast<uintptr_t>(src) + page - 1) / page * page;
    const uintptr_t last = (reinterpret_cast<uintptr_t>(src) + n) / page * page;
    if (last > first) ::madvise(reinterpret_cast<void*>(first), size_t(last - first), MADV_DONTNEED);
  }
  return t;
}

NamedTensors read_safetensors(const std::string& path) {
  const SafetensorsFile file(path);
  NamedTensors out;
  out.reserve(file.entries().size());
  for (const SafetensorsEntry& e : file.entries()) out.emplace_back(e.name, file.read(e));
  return out;
}

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  return SafetensorsFile(path).metadata();
}

#endif  // DAEDALUS_MINIMAL

}  // namespace daedalus
