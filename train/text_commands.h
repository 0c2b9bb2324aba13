// The text commands of the CLI: `daedalus tokenize` (stdin text <-> ids through a tokenizer.json)
// and `daedalus prepare-data` (corpora -> llm.c shards). main.cpp parses the options; these do the
// work and print the results.
#pragma once

#include <cstdio>
#include <string>

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

}  // namespace daedalus::train
