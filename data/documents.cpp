// Corpus files as byte streams (plain, gzip through zlib, zstd) and lines (see documents.h).
#include "data/documents.h"

#include <zlib.h>
#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "autograd/check.h"

namespace daedalus::data {

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string without_compression(const std::string& path) {
  if (ends_with(path, ".gz")) return path.substr(0, path.size() - 3);
  if (ends_with(path, ".zst")) return path.substr(0, path.size() - 4);
  return path;
}

class PlainStream : public ByteStream {
 public:
  explicit PlainStream(const std::string& path) : path_(path), file_(std::fopen(path.c_str(), "rb")) {
    DAEDALUS_CHECK(file_ != nullptr, "{}: cannot open: {}", path, std::strerror(errno));
  }
  ~PlainStream() override { std::fclose(file_); }
  size_t read(char* buffer, size_t n) override {
    const size_t got = std::fread(buffer, 1, n, file_);
    DAEDALUS_CHECK(got > 0 || !std::ferror(file_), "{}: read failed: {}", path_, std::strerror(errno));
    position_ += int64_t(got);
    return got;
  }
  int64_t position() const override { return position_; }

 private:
  std::string path_;
  std::FILE* file_;
  int64_t position_ = 0;
};

class GzipStream : public ByteStream {
 public:
  explicit GzipStream(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    DAEDALUS_CHECK(file_ != nullptr, "{}: cannot open: {}", path, std::strerror(errno));
    gzbuffer(file_, 1 << 18);
  }
  ~GzipStream() override { gzclose(file_); }
  size_t read(char* buffer, size_t n) override {
    const int got = gzread(file_, buffer, unsigned(std::min<size_t>(n, 1u << 30)));
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    DAEDALUS_CHECK(got >= 0 && (code == Z_OK || code == Z_BUF_ERROR), "{}: corrupt gzip data: {}", path_, message);
    DAEDALUS_CHECK(got > 0 || code == Z_OK, "{}: truncated gzip data (the stream ends mid-member)", path_);
    return size_t(got);
  }
  int64_t position() const override { return int64_t(gzoffset(file_)); }

 private:
  std::string path_;
  gzFile file_;
};

class ZstdStream : public ByteStream {
 public:
  explicit ZstdStream(const std::string& path) : raw_(path), path_(path), context_(ZSTD_createDCtx()) {
    DAEDALUS_CHECK(context_ != nullptr, "{}: cannot create a zstd context", path);
    input_.resize(ZSTD_DStreamInSize());
  }
  ~ZstdStream() override { ZSTD_freeDCtx(context_); }
  size_t read(char* buffer, size_t n) override {
    ZSTD_outBuffer out{buffer, n, 0};
    while (out.pos == 0) {
      if (in_.pos == in_.size) {
        const size_t got = raw_.read(input_.data(), input_.size());
        if (got == 0) {
          DAEDALUS_CHECK(last_ == 0, "{}: truncated zstd data (the last frame is incomplete)", path_);
          return 0;
        }
        in_ = {input_.data(), got, 0};
      }
      last_ = ZSTD_decompressStream(context_, &out, &in_);
      DAEDALUS_CHECK(!ZSTD_isError(last_), "{}: corrupt zstd data: {}", path_, ZSTD_getErrorName(last_));
    }
    return out.pos;
  }
  int64_t position() const override { return raw_.position(); }

 private:
  PlainStream raw_;
  std::string path_;
  ZSTD_DCtx* context_;
  std::vector<char> input_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  size_t last_ = 0;  // 0 when the last frame was complete
};

}  // namespace

bool is_jsonl(const std::string& path) {
  const std::string name = without_compression(path);
  return ends_with(name, ".jsonl") || ends_with(name, ".ndjson");
}

std::unique_ptr<ByteStream> open_byte_stream(const std::string& path) {
  if (ends_with(path, ".gz")) return std::make_unique<GzipStream>(path);
  if (ends_with(path, ".zst")) return std::make_unique<ZstdStream>(path);
  return std::make_unique<PlainStream>(path);
}

std::string read_whole(const std::string& path) {
  auto stream = open_byte_stream(path);
  std::string text;
  std::vector<char> buffer(1 << 20);
  while (const size_t n = stream->read(buffer.data(), buffer.size())) text.append(buffer.data(), n);
  return text;
}

LineReader::LineReader(const std::string& path) : stream_(open_byte_stream(path)) {}

bool LineReader::next(std::string_view& line) {
  constexpr size_t kChunk = 1 << 20;
  for (;;) {
    const size_t newline = buffer_.find('\n', begin_);
    if (newline != std::string::npos || (eof_ && begin_ < buffer_.size())) {
      const size_t end = newline == std::string::npos ? buffer_.size() : newline;
      line = std::string_view(buffer_).substr(begin_, end - begin_);
      begin_ = newline == std::string::npos ? buffer_.size() : newline + 1;
      ++line_number_;
      return true;
    }
    if (eof_) return false;
    buffer_.erase(0, begin_);  // keep the partial line, read more after it
    begin_ = 0;
    const size_t old = buffer_.size();
    buffer_.resize(old + kChunk);
    const size_t got = stream_->read(buffer_.data() + old, kChunk);
    buffer_.resize(old + got);
    eof_ = got == 0;
  }
}

nlohmann::json parse_object_line(std::string_view line, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    DAEDALUS_FAIL("{}: not valid JSON: {}", where, e.what());
  }
  DAEDALUS_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
  return j;
}

}  // namespace daedalus::data
