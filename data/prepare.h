// `daedalus prepare-data`: raw text files -> byte-level token shards in llm.c format.
//
//   out_dir/train_000000.bin, train_000001.bin, ...   llm.c version 1 (uint16), at most 100M tokens each
//   out_dir/val_000000.bin                            the LAST val_fraction of the tokens
//   out_dir/summary.json                              inputs, bytes, token counts, shard names
// Files are concatenated in the order given (globs sorted) with one '\n' token between files, so
// tokens = bytes + (files - 1). Train with data.format: llmc, data.train: out_dir/train_*.bin,
// data.val: out_dir/val_*.bin and model.vocab_size >= 256.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace daedalus::data {

inline constexpr int64_t kMaxShardTokens = 100'000'000;

struct PrepareSummary {
  int64_t files = 0;  // input files after glob expansion
  int64_t bytes = 0;  // their total size
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;           // train_tokens + val_tokens = bytes + files - 1
  std::vector<std::string> shards;  // paths written: train shards in order, then the val shard (if any)
};

// InputError: val_fraction outside [0, 0.5], a pattern matching nothing, a missing file, a corpus
// of zero bytes, an out_dir that cannot be created. Shard files (train_NNNNNN.bin / val_NNNNNN.bin)
// left in out_dir by an earlier, larger run are removed so a glob sees only this run's shards.
// progress(done_bytes, total_bytes) is called after each chunk read.
PrepareSummary prepare_data(const std::vector<std::string>& inputs, const std::string& out_dir,
                            double val_fraction = 0.01,
                            const std::function<void(int64_t done_bytes, int64_t total_bytes)>& progress = {},
                            int64_t max_shard_tokens = kMaxShardTokens);

}  // namespace daedalus::data
