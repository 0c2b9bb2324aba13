// llm.c token shards: a header of 256 little-endian int32 (header[0] magic, header[1] version,
// header[2] token count), then the tokens. Magic 20240520 / version 1: uint16 tokens (GPT-2
// vocab); magic 20240801 / version 7: uint32 tokens (Llama-3 vocab). Files are memory-mapped.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "autograd/check.h"
#include "data/mapped_file.h"
#include "data/source.h"

namespace daedalus::data {

namespace {

constexpr int64_t kHeaderInts = 256;
constexpr int64_t kHeaderBytes = kHeaderInts * 4;
constexpr int32_t kMagicV1 = 20240520;  // version 1, uint16 tokens
constexpr int32_t kMagicV7 = 20240801;  // version 7, uint32 tokens

// Validates one shard; returns its token run (width 2 or 4).
detail::TokenRun validate_shard(const detail::MappedFile& file) {
  const std::string& path = file.path();
  DAEDALUS_CHECK(file.size() >= kHeaderBytes, "{}: truncated llm.c shard: {} bytes, smaller than the {}-byte header",
                 path, file.size(), kHeaderBytes);
  int32_t header[3];
  std::memcpy(header, file.data(), sizeof(header));
  const int32_t magic = header[0], version = header[1], count = header[2];
  DAEDALUS_CHECK(magic == kMagicV1 || magic == kMagicV7,
                 "{}: not an llm.c token shard: magic {} (expected {} for version 1 or {} for version 7)", path, magic,
                 kMagicV1, kMagicV7);
  const int expected_version = magic == kMagicV1 ? 1 : 7;
  DAEDALUS_CHECK(version == expected_version, "{}: llm.c magic {} with version {} (expected version {})", path, magic,
                 version, expected_version);
  DAEDALUS_CHECK(count >= 0, "{}: llm.c header gives a negative token count {}", path, count);
  const int width = version == 1 ? 2 : 4;
  const int64_t expected = kHeaderBytes + int64_t(count) * width;
  DAEDALUS_CHECK(file.size() >= expected,
                 "{}: truncated llm.c shard: the header says {} tokens ({} bytes with the header), the file has {} "
                 "bytes",
                 path, count, expected, file.size());
  DAEDALUS_CHECK(file.size() == expected,
                 "{}: file size does not match the llm.c header: {} tokens of {} bytes need {} bytes, the file has "
                 "{} bytes ({} extra)",
                 path, count, width, expected, file.size(), file.size() - expected);
  return {file.data() + kHeaderBytes, count, width};
}

}  // namespace

std::unique_ptr<TokenSource> open_llmc(const std::vector<std::string>& files) {
  DAEDALUS_CHECK(!files.empty(), "llm.c shards: no files given");
  std::vector<detail::MappedFile> mapped;
  std::vector<detail::TokenRun> runs;
  int64_t tokens = 0;
  for (const std::string& path : files) {
    mapped.emplace_back(path);
    runs.push_back(validate_shard(mapped.back()));
    tokens += runs.back().count;
  }
  std::string description = detail::describe_files("llm.c shards", files, tokens);
  return std::make_unique<detail::ConcatSource>(std::move(mapped), std::move(runs), std::move(description));
}

void write_llmc_shard(const std::string& path, const std::vector<int32_t>& tokens, int version) {
  DAEDALUS_CHECK(version == 1 || version == 7, "{}: llm.c shard version {} (expected 1 or 7)", path, version);
  DAEDALUS_CHECK(tokens.size() <= size_t(INT32_MAX), "{}: {} tokens exceed an llm.c shard's int32 count", path,
                 tokens.size());
  const int64_t limit = version == 1 ? 65536 : (int64_t(1) << 32);
  for (size_t i = 0; i < tokens.size(); ++i)
    DAEDALUS_CHECK(tokens[i] >= 0 && int64_t(tokens[i]) < limit,
                   "{}: token {} has id {}, outside [0, {}) of llm.c version {} ({} tokens)", path, i, tokens[i], limit,
                   version, version == 1 ? "uint16" : "uint32");

  int32_t header[kHeaderInts] = {};
  header[0] = version == 1 ? kMagicV1 : kMagicV7;
  header[1] = version;
  header[2] = int32_t(tokens.size());
  std::vector<uint8_t> body(tokens.size() * (version == 1 ? 2 : 4));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (version == 1) {
      const uint16_t v = uint16_t(tokens[i]);
      std::memcpy(body.data() + 2 * i, &v, 2);
    } else {
      const uint32_t v = uint32_t(tokens[i]);
      std::memcpy(body.data() + 4 * i, &v, 4);
    }
  }

  // Written beside the target and renamed: a reader never sees a half-written shard.
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  DAEDALUS_CHECK(f != nullptr, "{}: cannot create: {}", tmp, std::strerror(errno));
  bool ok = std::fwrite(header, sizeof(header), 1, f) == 1;
  ok = ok && (body.empty() || std::fwrite(body.data(), body.size(), 1, f) == 1);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) std::remove(tmp.c_str());
  DAEDALUS_CHECK(ok, "{}: write failed: {}", tmp, std::strerror(errno));
  DAEDALUS_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "{}: cannot rename to {}: {}", tmp, path,
                 std::strerror(errno));
}

}  // namespace daedalus::data
