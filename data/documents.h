// Reading corpus files as documents, for prepare-data (and the chat reader): a plain text file is
// one document; a JSONL file (*.jsonl, *.ndjson) holds one JSON object per line. Either may be
// compressed: *.gz (zlib) or *.zst (zstd), decompressed as it streams.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace daedalus::data {

// JSONL by name (the compression suffix aside): *.jsonl, *.ndjson; anything else is text.
bool is_jsonl(const std::string& path);

// A file's bytes, decompressed by its suffix (.gz, .zst), in order.
class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Up to n bytes into buffer; 0 at the end. InputError naming the file on corrupt or truncated
  // compressed data.
  virtual size_t read(char* buffer, size_t n) = 0;
  virtual int64_t position() const = 0;  // bytes of the file on disk consumed so far (for progress)
};
std::unique_ptr<ByteStream> open_byte_stream(const std::string& path);

// The whole (decompressed) file.
std::string read_whole(const std::string& path);

// Lines of a file (any line ending: the '\n' is dropped, a '\r' before it kept), numbered from 1.
class LineReader {
 public:
  explicit LineReader(const std::string& path);
  // The next line, valid until the next call; false at the end of the file.
  bool next(std::string_view& line);
  int64_t line_number() const { return line_number_; }
  int64_t position() const { return stream_->position(); }

 private:
  std::unique_ptr<ByteStream> stream_;
  std::string buffer_;
  size_t begin_ = 0;  // start of the unread part of buffer_
  bool eof_ = false;
  int64_t line_number_ = 0;
};

// One JSONL line as a JSON object; InputError "where: not valid JSON: ..." or "where: expected a
// JSON object, got array" (where = "file:line").
nlohmann::json parse_object_line(std::string_view line, const std::string& where);

}  // namespace daedalus::data
