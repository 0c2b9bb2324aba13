// prepare-data: byte-tokenize text files into llm.c version-1 shards plus a summary.json.
// Streams: each input is memory-mapped and copied in chunks straight into the open shard.
#include "data/prepare.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#if !DAEDALUS_MINIMAL  // the GPU-test build has no nlohmann-json
#include <nlohmann/json.hpp>
#define DAEDALUS_HAVE_JSON 1
#endif

#include "autograd/check.h"
#include "data/mapped_file.h"
#include "data/source.h"

namespace daedalus::data {

namespace {

constexpr int32_t kMagicV1 = 20240520;
constexpr int64_t kChunkBytes = 16 << 20;

// One llm.c version-1 shard written to path.tmp, header patched with the count, renamed on finish.
class ShardWriter {
 public:
  explicit ShardWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    file_ = std::fopen(tmp_.c_str(), "wb");
    DAEDALUS_CHECK(file_ != nullptr, "{}: cannot create: {}", tmp_, std::strerror(errno));
    write_header();
  }
  ~ShardWriter() {
    if (file_ != nullptr) {
      std::fclose(file_);
      std::remove(tmp_.c_str());
    }
  }
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void append(const uint8_t* bytes, int64_t n) {
    buffer_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) buffer_[size_t(i)] = uint16_t(bytes[i]);  // little-endian host
    check(n == 0 || std::fwrite(buffer_.data(), 2, size_t(n), file_) == size_t(n));
    count_ += n;
  }
  int64_t count() const { return count_; }

  void finish() {
    check(std::fseek(file_, 0, SEEK_SET) == 0);
    write_header();
    const bool ok = std::fclose(file_) == 0;
    file_ = nullptr;
    if (!ok) std::remove(tmp_.c_str());
    DAEDALUS_CHECK(ok, "{}: write failed: {}", tmp_, std::strerror(errno));
    DAEDALUS_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, "{}: cannot rename to {}: {}", tmp_, path_,
                   std::strerror(errno));
  }

 private:
  void write_header() {
    int32_t header[256] = {};
    header[0] = kMagicV1;
    header[1] = 1;
    header[2] = int32_t(count_);
    check(std::fwrite(header, sizeof(header), 1, file_) == 1);
  }
  void check(bool ok) { DAEDALUS_CHECK(ok, "{}: write failed: {}", tmp_, std::strerror(errno)); }

  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
  int64_t count_ = 0;
  std::vector<uint16_t> buffer_;
};

// Splits one token stream into prefix_000000.bin, prefix_000001.bin, ... of at most max_tokens.
class ShardedOutput {
 public:
  ShardedOutput(std::string dir, std::string prefix, int64_t max_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), max_tokens_(max_tokens) {}

  void append(const uint8_t* bytes, int64_t n) {
    while (n > 0) {
      if (!writer_) {
        names_.push_back(fmt::format("{}_{:06d}.bin", prefix_, names_.size()));
        writer_ = std::make_unique<ShardWriter>((std::filesystem::path(dir_) / names_.back()).string());
      }
      const int64_t take = std::min(n, max_tokens_ - writer_->count());
      writer_->append(bytes, take);
      bytes += take;
      n -= take;
      if (writer_->count() == max_tokens_) close();
    }
  }
  void close() {
    if (writer_) writer_->finish();
    writer_.reset();
  }
  const std::vector<std::string>& names() const { return names_; }

 private:
  std::string dir_, prefix_;
  int64_t max_tokens_;
  std::unique_ptr<ShardWriter> writer_;
  std::vector<std::string> names_;
};

}  // namespace

PrepareSummary prepare_data(const std::vector<std::string>& inputs, const std::string& out_dir, double val_fraction,
                            const std::function<void(int64_t, int64_t)>& progress, int64_t max_shard_tokens) {
  DAEDALUS_CHECK(val_fraction >= 0.0 && val_fraction <= 0.5, "prepare-data: --val-fraction {} is outside [0, 0.5]",
                 val_fraction);
  DAEDALUS_CHECK(max_shard_tokens > 0, "prepare-data: shard size {} must be positive", max_shard_tokens);
  DAEDALUS_CHECK(!inputs.empty(), "prepare-data: no --input given");
  const std::vector<std::string> files = expand_inputs(inputs);

  std::vector<detail::MappedFile> mapped;
  PrepareSummary summary;
  for (const std::string& path : files) {
    mapped.emplace_back(path);
    summary.bytes += mapped.back().size();
  }
  summary.files = int64_t(files.size());
  DAEDALUS_CHECK(summary.bytes > 0, "{}: the text corpus is empty (every file has 0 bytes)",
                 detail::describe_files("prepare-data inputs", files, 0));

  const int64_t total = summary.bytes + summary.files - 1;  // one '\n' between consecutive files
  int64_t val = int64_t(std::floor(double(total) * val_fraction));
  if (val_fraction > 0 && val == 0 && total >= 2) val = 1;  // a requested val split is never empty
  summary.val_tokens = val;
  summary.train_tokens = total - val;

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  DAEDALUS_CHECK(!ec && std::filesystem::is_directory(out_dir), "{}: cannot create the output directory: {}", out_dir,
                 ec ? ec.message() : "exists and is not a directory");

  ShardedOutput train(out_dir, "train", max_shard_tokens), valid(out_dir, "val", max_shard_tokens);
  int64_t position = 0, done = 0;  // tokens routed so far, input bytes read so far
  auto emit = [&](const uint8_t* bytes, int64_t n) {
    const int64_t to_train = std::clamp(summary.train_tokens - position, int64_t(0), n);
    train.append(bytes, to_train);
    valid.append(bytes + to_train, n - to_train);
    position += n;
  };
  const uint8_t newline = '\n';
  for (size_t f = 0; f < mapped.size(); ++f) {
    if (f > 0) emit(&newline, 1);
    for (int64_t off = 0; off < mapped[f].size(); off += kChunkBytes) {
      const int64_t n = std::min(kChunkBytes, mapped[f].size() - off);
      emit(mapped[f].data() + off, n);
      done += n;
      if (progress) progress(done, summary.bytes);
    }
  }
  train.close();
  valid.close();
  DAEDALUS_ASSERT(position == total);

  // Remove shards of an earlier run that this one did not overwrite.
  std::set<std::string> written(train.names().begin(), train.names().end());
  written.insert(valid.names().begin(), valid.names().end());
  const std::regex shard_name("(train|val)_[0-9]{6}\\.bin");
  for (const auto& entry : std::filesystem::directory_iterator(out_dir)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, shard_name) && !written.count(name)) std::filesystem::remove(entry.path());
  }

  for (const std::string& name : train.names())
    summary.shards.push_back((std::filesystem::path(out_dir) / name).string());
  for (const std::string& name : valid.names())
    summary.shards.push_back((std::filesystem::path(out_dir) / name).string());

#ifdef DAEDALUS_HAVE_JSON
  nlohmann::json j;
  j["format"] = "llm.c version 1 (uint16 tokens)";
  j["tokenizer"] = "bytes";
  j["vocab_size"] = 256;
  j["inputs"] = files;
  j["files"] = summary.files;
  j["bytes"] = summary.bytes;
  j["separator"] = "\n";
  j["tokens"] = total;
  j["train_tokens"] = summary.train_tokens;
  j["val_tokens"] = summary.val_tokens;
  j["val_fraction"] = val_fraction;
  j["train_shards"] = train.names();
  j["val_shards"] = valid.names();
  const std::string json_path = (std::filesystem::path(out_dir) / "summary.json").string();
  std::ofstream out(json_path);
  out << j.dump(2) << "\n";
  out.close();
  DAEDALUS_CHECK(out.good(), "{}: write failed", json_path);
#endif
  return summary;
}

}  // namespace daedalus::data
