// `daedalus prepare-data`: corpora -> token shards in llm.c format.
//
//   out_dir/train_000000.bin, train_000001.bin, ...   llm.c shards, at most 100M tokens each
//   out_dir/val_000000.bin                            the LAST val_fraction of the tokens
//   out_dir/summary.json                              inputs, bytes, token counts, shard names
// Without a tokenizer (prepare_data): byte tokens, llm.c version 1 (uint16). Files are concatenated
// in the order given (globs sorted) with one '\n' token between files, so tokens = bytes +
// (files - 1). Train with data.format: llmc, data.train: out_dir/train_*.bin, data.val:
// out_dir/val_*.bin and model.vocab_size >= 256.
// With a tokenizer.json (prepare_tokenized): see there.
// Shards are written as *.tmp and renamed only when the whole run succeeded: an error leaves no
// partial shard behind.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace daedalus::data {

inline constexpr int64_t kMaxShardTokens = 100'000'000;

struct PrepareSummary {
  int64_t files = 0;       // input files after glob expansion
  int64_t bytes = 0;       // their total size (on disk)
  int64_t documents = 0;   // prepare_tokenized: documents encoded
  int64_t text_bytes = 0;  // prepare_tokenized: decompressed bytes read (JSONL lines whole)
  int version = 1;         // llm.c shard version: 1 (uint16 tokens) or 7 (uint32)
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;           // train_tokens + val_tokens = bytes + files - 1
  std::vector<std::string> shards;  // paths written: train shards in order, then the val shard (if any)
};

using PrepareProgress = std::function<void(int64_t done_bytes, int64_t total_bytes)>;

// InputError: val_fraction outside [0, 0.5], a pattern matching nothing, a missing file, a corpus
// of zero bytes, an out_dir that cannot be created. Shard files (train_NNNNNN.bin / val_NNNNNN.bin)
// left in out_dir by an earlier, larger run are removed so a glob sees only this run's shards.
// progress(done_bytes, total_bytes) is called after each chunk read.
PrepareSummary prepare_data(const std::vector<std::string>& inputs, const std::string& out_dir,
                            double val_fraction = 0.01, const PrepareProgress& progress = {},
                            int64_t max_shard_tokens = kMaxShardTokens);

// With a tokenizer: every document is encoded alone, as [BOS] ids EOS (BOS with `bos`; EOS and BOS
// from the tokenizer_config.json beside the tokenizer). A plain text file is one document; in a
// JSONL file (*.jsonl, *.ndjson) each non-blank line is a JSON object whose `text_key` string is
// one. Files may be compressed (.gz, .zst). Shards are llm.c version 1 (uint16) when every id fits
// (vocab <= 65,536), else version 7 (uint32). Documents are encoded on `threads` threads (0: all
// hardware threads) in batches, written in input order. summary.json also names the tokenizer,
// its SHA-256, the vocabulary size and the BOS/EOS ids. InputError, naming file, line and key: a
// line that is not a JSON object, lacks the key or whose value is not a string; no EOS token; as
// for prepare_data.
struct TokenizedOptions {
  std::string tokenizer;  // tokenizer.json
  std::string text_key = "text";
  bool bos = false;
  int threads = 0;
};
PrepareSummary prepare_tokenized(const std::vector<std::string>& inputs, const std::string& out_dir,
                                 double val_fraction, const TokenizedOptions& options,
                                 const PrepareProgress& progress = {}, int64_t max_shard_tokens = kMaxShardTokens);

}  // namespace daedalus::data
