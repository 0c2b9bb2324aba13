// Internal to data/: read-only memory-mapped files, and a token source over a concatenation of
// fixed-width little-endian token runs inside them (llm.c shards, raw text).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/source.h"

namespace daedalus::data::detail {

// The whole file mapped read-only (nothing mapped for an empty file). InputError names the file
// when it does not exist or cannot be opened / mapped.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&&) = delete;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  int64_t size_ = 0;
};

// `count` tokens of `width` bytes (1 = uint8, 2 = uint16, 4 = uint32, little-endian) at `data`.
struct TokenRun {
  const uint8_t* data = nullptr;
  int64_t count = 0;
  int width = 1;
};

// Runs concatenated in order; owns the mappings they point into.
class ConcatSource : public TokenSource {
 public:
  ConcatSource(std::vector<MappedFile> files, std::vector<TokenRun> runs, std::string description);
  int64_t size() const override { return offsets_.back(); }
  void read(int64_t start, int64_t count, int32_t* out) const override;
  std::string describe() const override { return description_; }

 private:
  std::vector<MappedFile> files_;
  std::vector<TokenRun> runs_;
  std::vector<int64_t> offsets_;  // offsets_[i] = first token of run i; back() = total
  std::string description_;
};

// InputError unless [start, start + count) lies inside [0, source.size()).
void check_read_range(const TokenSource& source, int64_t start, int64_t count);

// "llm.c shards data/train_000000.bin .. data/train_000002.bin (3 files, 1.2M tokens)"
std::string describe_files(std::string_view kind, const std::vector<std::string>& files, int64_t tokens);

}  // namespace daedalus::data::detail
