// llm.c shard sets written all or nothing (see shard_writer.h).
#include "data/shard_writer.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>
#include <set>

#include "autograd/check.h"

namespace daedalus::data::detail {

namespace {

constexpr int32_t kMagicV1 = 20240520;
constexpr int32_t kMagicV7 = 20240801;

std::string path_of(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

}  // namespace

ShardSet::ShardSet(std::string dir, std::string prefix, int version, int64_t max_tokens)
    : dir_(std::move(dir)), prefix_(std::move(prefix)), version_(version), max_tokens_(max_tokens) {
  DAEDALUS_ASSERT(version == 1 || version == 7);
  DAEDALUS_CHECK(max_tokens > 0 && max_tokens <= INT32_MAX, "prepare-data: shard size {} outside [1, 2^31)",
                 max_tokens);
}

ShardSet::~ShardSet() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_)
    for (const std::string& name : names_) std::remove((path_of(dir_, name) + ".tmp").c_str());
}

void ShardSet::check(bool ok) {
  DAEDALUS_CHECK(ok, "{}.tmp: write failed: {}", path_of(dir_, names_.back()), std::strerror(errno));
}

void ShardSet::open_next() {
  names_.push_back(fmt::format("{}_{:06d}.bin", prefix_, names_.size()));
  const std::string tmp = path_of(dir_, names_.back()) + ".tmp";
  file_ = std::fopen(tmp.c_str(), "wb");
  DAEDALUS_CHECK(file_ != nullptr, "{}: cannot create: {}", tmp, std::strerror(errno));
  count_ = 0;
  const int32_t header[256] = {};
  check(std::fwrite(header, sizeof(header), 1, file_) == 1);  // patched with the count on close
}

void ShardSet::close_current() {
  if (file_ == nullptr) return;
  int32_t header[256] = {};
  header[0] = version_ == 1 ? kMagicV1 : kMagicV7;
  header[1] = version_;
  header[2] = int32_t(count_);
  check(std::fseek(file_, 0, SEEK_SET) == 0 && std::fwrite(header, sizeof(header), 1, file_) == 1);
  const bool ok = std::fclose(file_) == 0;
  file_ = nullptr;
  check(ok);
}

template <typename T>
void ShardSet::append_tokens(const T* tokens, int64_t n) {
  const int width = version_ == 1 ? 2 : 4;
  while (n > 0) {
    if (file_ == nullptr) open_next();
    const int64_t take = std::min(n, max_tokens_ - count_);
    pack_tokens(tokens, take, width, buffer_);
    check(take == 0 || std::fwrite(buffer_.data(), buffer_.size(), 1, file_) == 1);
    count_ += take;
    tokens += take;
    n -= take;
    if (count_ == max_tokens_) close_current();
  }
}

namespace {

template <typename T>
void pack(const T* tokens, int64_t n, int width, std::vector<uint8_t>& out) {
  out.resize(size_t(n * width));
  for (int64_t i = 0; i < n; ++i) {
    const auto v = uint32_t(tokens[i]);  // little-endian host (static_assert in source.cpp)
    if (width == 2) {
      DAEDALUS_ASSERT(v < 65536);
      const auto u = uint16_t(v);
      std::memcpy(out.data() + 2 * i, &u, 2);
    } else {
      std::memcpy(out.data() + 4 * i, &v, 4);
    }
  }
}

}  // namespace

void pack_tokens(const uint8_t* tokens, int64_t n, int width, std::vector<uint8_t>& out) {
  pack(tokens, n, width, out);
}
void pack_tokens(const int32_t* tokens, int64_t n, int width, std::vector<uint8_t>& out) {
  pack(tokens, n, width, out);
}

void ShardSet::append(const uint8_t* bytes, int64_t n) { append_tokens(bytes, n); }
void ShardSet::append(const int32_t* ids, int64_t n) { append_tokens(ids, n); }

void ShardSet::finish() { close_current(); }

void ShardSet::commit() {
  finish();
  for (const std::string& name : names_) {
    const std::string path = path_of(dir_, name);
    DAEDALUS_CHECK(std::rename((path + ".tmp").c_str(), path.c_str()) == 0, "{}.tmp: cannot rename to {}: {}", path,
                   path, std::strerror(errno));
  }
  committed_ = true;
}

void remove_stale_shards(const std::string& dir, const std::vector<std::string>& keep) {
  const std::set<std::string> written(keep.begin(), keep.end());
  const std::regex shard_name("(train|val)_[0-9]{6}\\.bin");
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, shard_name) && !written.count(name)) std::filesystem::remove(entry.path());
  }
}

}  // namespace daedalus::data::detail
