// The text commands of the CLI: `daedalus tokenize` (stdin text <-> ids through a tokenizer.json)
// and `daedalus prepare-data` (corpora -> llm.c shards). main.cpp parses the options; these do the
// work and print the results.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace daedalus::data {
class Tokenizer;
}

namespace daedalus::train {

struct TokenizeOptions {
  std::string tokenizer;  // path to tokenizer.json
  bool decode = false;    // ids in, text out
  bool json = false;      // encode: {"ids": [...], "tokens": [...]}; decode: {"text": ...}
};

// Encode: all of `in` (any bytes) -> ids separated by spaces and a newline on `out`.
// Decode: ids (whitespace-separated, or a JSON array, or {"ids": [...]}) -> the raw bytes.
// InputError (exit 1) for a bad tokenizer file or an id that is not a token.
void run_tokenize(const TokenizeOptions& options, std::FILE* in, std::FILE* out);

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out;
  double val_fraction = 0.01;
  std::string tokenizer;  // empty: byte tokens (data::prepare_data), else data::prepare_tokenized
  std::string text_key = "text";
  bool bos = false;
  int threads = 0;
};

// Runs prepare-data with a progress bar on a terminal (percent, MB read, MB/s) and prints the
// summary line.
void run_prepare_data(const PrepareOptions& options);

// How `generate` turns the prompt into ids and new ids into text: through the run's tokenizer.json
// (data.tokenizer) when it names one, else byte tokens (printable ASCII shown, '?' otherwise).
class PromptCodec {
 public:
  explicit PromptCodec(const std::string& tokenizer_path);  // "": bytes
  ~PromptCodec();
  // The prompt's ids; with chat, DeepSeek-V3's chat format of one user turn, ending with
  // <｜Assistant｜> (InputError without a tokenizer).
  std::vector<int64_t> encode(const std::string& prompt, bool chat) const;
  std::string text(int64_t id) const;   // what one generated id prints (its raw bytes with a tokenizer)
  std::string text(const std::vector<int64_t>& ids) const;  // the ids' texts, concatenated
  int64_t stop_token(bool chat) const;  // EOS for chat (the turn ends there), else -1
  bool has_tokenizer() const { return tokenizer_ != nullptr; }

 private:
  std::unique_ptr<data::Tokenizer> tokenizer_;
};

}  // namespace daedalus::train
