// safetensors writer and validating reader (format in safetensors.h).
#include "train/safetensors.h"

#include <fcntl.h>
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

#else

namespace {

using nlohmann::json;
using nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit

struct DTypeCode {
  DType dtype;
  std::string_view code;
};
constexpr DTypeCode kCodes[] = {
    {DType::f32, "F32"}, {DType::bf16, "BF16"}, {DType::i64, "I64"}, {DType::i32, "I32"}, {DType::u8, "U8"}};
constexpr std::string_view kSupported = "F32, BF16, I64, I32, U8";

std::optional<std::string_view> code_of(DType dtype) {
  for (const auto& c : kCodes)
    if (c.dtype == dtype) return c.code;
  return std::nullopt;
}
std::optional<DType> dtype_of_code(std::string_view code) {
  for (const auto& c : kCodes)
    if (c.code == code) return c.dtype;
  return std::nullopt;
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

// One tensor's header entry; offsets are relative to the start of the data buffer.
struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

struct Header {
  std::map<std::string, std::string> metadata;
  std::vector<Entry> entries;  // sorted by data offset
  uint64_t data_start = 0;     // 8 + header length
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

Entry parse_entry(const std::string& path, const std::string& name, const json& info) {
  DAEDALUS_CHECK(info.is_object(), "{}: tensor '{}': header entry is {}, expected an object", path, name,
                 info.type_name());
  for (const char* key : {"dtype", "shape", "data_offsets"})
    DAEDALUS_CHECK(info.contains(key), "{}: tensor '{}': header entry has no \"{}\"", path, name, key);
  Entry e;
  e.name = name;

  const json& dtype = info["dtype"];
  DAEDALUS_CHECK(dtype.is_string(), "{}: tensor '{}': dtype is {}, expected a string", path, name, dtype.type_name());
  const auto parsed = dtype_of_code(dtype.get<std::string>());
  DAEDALUS_CHECK(parsed.has_value(), "{}: tensor '{}': unsupported dtype \"{}\" (supported: {})", path, name,
                 dtype.get<std::string>(), kSupported);
  e.dtype = *parsed;

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
  const uint64_t elem = dtype_size(e.dtype);
  const bool fits = !overflow && numel <= std::numeric_limits<uint64_t>::max() / elem;
  DAEDALUS_CHECK(fits && numel * elem == e.end - e.begin,
                 "{}: tensor '{}': {} {} needs {} bytes but data_offsets [{}, {}] span {}", path, name, dtype.dump(),
                 shape.dump(), fits ? fmt::format("{}", numel * elem) : std::string("too many"), e.begin, e.end,
                 e.end - e.begin);
  return e;
}

// Reads and validates the length prefix and the header of an open file of `file_size` bytes.
Header read_header(const std::string& path, std::FILE* file, uint64_t file_size) {
  DAEDALUS_CHECK(file_size >= 8, "{}: truncated: {} bytes, shorter than the 8-byte header length", path, file_size);
  unsigned char prefix[8];
  DAEDALUS_CHECK(std::fread(prefix, 1, 8, file) == 8, "{}: read failed: {}", path, std::strerror(errno));
  const uint64_t n = read_u64_le(prefix);
  DAEDALUS_CHECK(n <= file_size - 8,
                 "{}: header length {} runs past the end of the file ({} bytes): truncated or not safetensors", path, n,
                 file_size);
  DAEDALUS_CHECK(n <= kMaxHeaderBytes, "{}: header length {} exceeds the {}-byte limit", path, n, kMaxHeaderBytes);

  std::string text(size_t(n), '\0');
  DAEDALUS_CHECK(n == 0 || std::fread(text.data(), 1, size_t(n), file) == size_t(n), "{}: read failed: {}", path,
                 std::strerror(errno));
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
  std::stable_sort(h.entries.begin(), h.entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : h.entries) {
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

uint64_t file_size_of(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  DAEDALUS_CHECK(!ec, "{}: cannot read: {}", path, ec.message());
  return uint64_t(size);
}

Header open_and_read_header(const std::string& path, File& file) {
  DAEDALUS_CHECK(file.get() != nullptr, "{}: cannot open: {}", path, std::strerror(errno));
  return read_header(path, file.get(), file_size_of(path));
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
    DAEDALUS_CHECK(code.has_value(),
                   "{}: tensor '{}': dtype {} cannot be written (supported: fp32, bf16, int64, int32, uint8)", path, name,
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

NamedTensors read_safetensors(const std::string& path) {
  File file(path, "rb");
  const Header h = open_and_read_header(path, file);
  NamedTensors out;
  out.reserve(h.entries.size());
  for (const Entry& e : h.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype, Device::cpu());
    const size_t n = size_t(e.end - e.begin);
    if (n > 0) {
      DAEDALUS_CHECK(::fseeko(file.get(), off_t(h.data_start + e.begin), SEEK_SET) == 0 &&
                         std::fread(t.data_ptr(), 1, n, file.get()) == n,
                     "{}: tensor '{}': read failed: {}", path, e.name, std::strerror(errno));
    }
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  File file(path, "rb");
  return open_and_read_header(path, file).metadata;
}

#endif  // DAEDALUS_MINIMAL

}  // namespace daedalus
