// prepare-data with a tokenizer: documents from text, JSONL, .gz and .zst files encoded alone as
// [BOS] ids EOS, in input order whatever the thread count; uint32 (llm.c version 7) shards for a
// vocabulary past 65,536; summary.json; bad JSONL lines named by file, line and key with no shard
// left behind.
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/check.h"
#include "data/prepare.h"
#include "data/source.h"
#include "data/tokenizer.h"
#include "tests/testing.h"

namespace daedalus::data {
namespace {

namespace fs = std::filesystem;
using testing::error_of;

const std::string kTokenizer = std::string(DAEDALUS_SOURCE_DIR) + "/tests/tokenizer/deepseek/tokenizer.json";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / (name + "-" + std::to_string(getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  gzclose(f);
}

void write_zst(const std::string& path, const std::string& bytes) {
  std::string out(ZSTD_compressBound(bytes.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), bytes.data(), bytes.size(), 3);
  ASSERT_FALSE(ZSTD_isError(n));
  write(path, out.substr(0, n));
}

std::vector<int32_t> read_tokens(const std::vector<std::string>& shards) {
  auto source = open_llmc(shards);
  std::vector<int32_t> ids(size_t(source->size()));
  source->read(0, source->size(), ids.data());
  return ids;
}

// The independent reference: coreutils' sha256sum.
std::string sha256sum(const std::string& path) {
  std::FILE* p = popen(("sha256sum '" + path + "'").c_str(), "r");
  char hex[65] = {};
  const size_t n = p != nullptr ? std::fread(hex, 1, 64, p) : 0;
  if (p != nullptr) pclose(p);
  return std::string(hex, n);
}

TEST(PrepareTokens, DocumentsFromEveryInputKindInOrder) {
  TempDir dir("daedalus-prep-tok");
  const std::vector<std::string> docs = {"Hello, world!", "第二个文档 with 123456 digits",
                                         "a\n\nb  c",     "emoji 😀 <｜User｜> special",
                                         "zstd text",     "plain text file\n"};
  write(dir / "a.jsonl", nlohmann::json({{"text", docs[0]}, {"id", 1}}).dump() + "\n\n" +
                             nlohmann::json({{"text", docs[1]}}).dump() + "\n");
  write_gz(dir / "b.jsonl.gz", nlohmann::json({{"text", docs[2]}}).dump() + "\n" +
                                   nlohmann::json({{"text", docs[3]}}).dump());  // no final newline
  write_zst(dir / "c.txt.zst", docs[4]);
  write(dir / "d.txt", docs[5]);
  const std::vector<std::string> inputs = {dir / "a.jsonl", dir / "b.jsonl.gz", dir / "c.txt.zst", dir / "d.txt"};

  const Tokenizer tok = Tokenizer::load(kTokenizer);
  std::vector<int32_t> expected;
  for (const std::string& doc : docs) {
    expected.push_back(*tok.bos_id());
    const auto ids = tok.encode(doc);
    expected.insert(expected.end(), ids.begin(), ids.end());
    expected.push_back(*tok.eos_id());
  }

  std::vector<int32_t> previous;
  for (const int threads : {1, 3}) {
    TokenizedOptions o{kTokenizer, "text", /*bos=*/true, threads};
    const PrepareSummary s = prepare_tokenized(inputs, dir / "out", /*val_fraction=*/0.1, o, {}, /*max_shard=*/16);
    EXPECT_EQ(s.documents, 6);
    EXPECT_EQ(s.version, 1);  // vocab 6000: uint16
    EXPECT_EQ(s.train_tokens + s.val_tokens, int64_t(expected.size()));
    EXPECT_EQ(s.val_tokens, int64_t(double(expected.size()) * 0.1));
    std::vector<std::string> shards = s.shards;
    EXPECT_EQ(read_tokens(shards), expected);  // train shards then the val shard: the whole stream
    if (!previous.empty()) {
      EXPECT_EQ(read_tokens(shards), previous);
    }
    previous = read_tokens(shards);
  }
  std::ifstream in(dir / "out/summary.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["documents"].get<int64_t>(), 6);
  EXPECT_EQ(j["tokenizer"].get<std::string>(), kTokenizer);
  EXPECT_EQ(j["tokenizer_sha256"].get<std::string>(), sha256sum(kTokenizer));
  EXPECT_EQ(j["eos_id"].get<int32_t>(), *tok.eos_id());
  EXPECT_FALSE(fs::exists(dir / "out/tokens.tmp"));
}

// A vocabulary past 65,536 ids: version-7 shards, and the llm.c reader returns ids >= 2^16.
TEST(PrepareTokens, LargeVocabularyWritesUint32Shards) {
  TempDir dir("daedalus-prep-v7");
  const std::string json =
      R"({"added_tokens":[{"id":70000,"content":"<big>","special":true,"normalized":false},)"
      R"({"id":70001,"content":"<eos>","special":true,"normalized":false}],)"
      R"("pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":false},)"
      R"("decoder":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[]}})";
  write(dir / "tokenizer.json", json);
  write(dir / "tokenizer_config.json", R"({"eos_token": "<eos>"})");
  write(dir / "doc.txt", "ab<big>a");
  TokenizedOptions o{dir / "tokenizer.json"};
  const PrepareSummary s = prepare_tokenized({dir / "doc.txt"}, dir / "out", 0.0, o);
  EXPECT_EQ(s.version, 7);
  EXPECT_EQ(read_tokens(s.shards), (std::vector<int32_t>{0, 1, 70000, 0, 70001}));
}

TEST(PrepareTokens, BadLinesNameFileLineAndKeyAndLeaveNoShard) {
  TempDir dir("daedalus-prep-bad");
  const std::string good = R"({"text": "fine"})";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"[1, 2]", {"bad.jsonl:3", "expected a JSON object, got array"}},
      {R"({"body": "x"})", {"bad.jsonl:3", "no key \"text\""}},
      {R"({"text": 5})", {"bad.jsonl:3", "key \"text\" is a number, not a string"}},
      {R"({"text": "unterminated)", {"bad.jsonl:3", "not valid JSON"}},
  };
  for (const auto& [line, words] : cases) {
    write(dir / "bad.jsonl", good + "\n" + good + "\n" + line + "\n" + good + "\n");
    const std::string message = error_of([&] {
      prepare_tokenized({dir / "bad.jsonl"}, dir / "out", 0.0, TokenizedOptions{kTokenizer}, {}, /*max_shard=*/2);
    });
    for (const std::string& w : words) EXPECT_NE(message.find(w), std::string::npos) << message;
    for (const auto& entry : fs::directory_iterator(dir.path / "out"))
      ADD_FAILURE() << "left behind: " << entry.path();  // no shard, no .tmp, no summary
  }
  // A corrupt .gz is named too.
  write(dir / "broken.jsonl.gz", "this is not gzip data at all");
  const std::string message =
      error_of([&] { prepare_tokenized({dir / "broken.jsonl.gz"}, dir / "out", 0.0, TokenizedOptions{kTokenizer}); });
  EXPECT_NE(message.find("broken.jsonl.gz"), std::string::npos) << message;
}

}  // namespace
}  // namespace daedalus::data
