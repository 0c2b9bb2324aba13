// Raw text through a tokenizer.json, for data.format text with data.tokenizer: each file is one
// document, encoded alone and followed by EOS (as prepare-data does), held in memory. Large
// corpora belong in shards (`daedalus prepare-data --tokenizer`, data.format llmc).
#include "autograd/check.h"
#include "data/documents.h"
#include "data/mapped_file.h"
#include "data/source.h"
#include "data/tokenizer.h"

namespace daedalus::data {

namespace {

class MemorySource : public TokenSource {
 public:
  MemorySource(std::vector<int32_t> tokens, std::string description)
      : tokens_(std::move(tokens)), description_(std::move(description)) {}
  int64_t size() const override { return int64_t(tokens_.size()); }
  void read(int64_t start, int64_t count, int32_t* out) const override {
    detail::check_read_range(*this, start, count);
    std::copy(tokens_.begin() + start, tokens_.begin() + start + count, out);
  }
  std::string describe() const override { return description_; }

 private:
  std::vector<int32_t> tokens_;
  std::string description_;
};

}  // namespace

std::unique_ptr<TokenSource> open_text(const std::vector<std::string>& files, const Tokenizer& tokenizer) {
  DAEDALUS_CHECK(!files.empty(), "text corpus: no files given");
  DAEDALUS_CHECK(tokenizer.eos_id(), "{}: no eos_token (tokenizer_config.json beside it must name one)",
                 tokenizer.name());
  Encoder encoder(tokenizer);
  std::vector<int32_t> tokens;
  for (const std::string& path : files) {
    encoder.encode(read_whole(path), tokens);
    tokens.push_back(*tokenizer.eos_id());
  }
  std::string description =
      detail::describe_files("text", files, int64_t(tokens.size())) + " through " + tokenizer.name();
  return std::make_unique<MemorySource>(std::move(tokens), std::move(description));
}

}  // namespace daedalus::data
