// Internal to data/: the llm.c shards one prepare-data run writes, all or nothing.
//
// A ShardSet splits one token stream into DIR/PREFIX_000000.bin, PREFIX_000001.bin, ... of at most
// max_tokens tokens, llm.c version 1 (uint16, magic 20240520) or version 7 (uint32, magic
// 20240801). Every shard is written as NAME.tmp; commit() renames them all once the whole run has
// succeeded, and a ShardSet destroyed before commit() removes its .tmp files, so an error never
// leaves a partial shard (nor a partial set) behind.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace daedalus::data::detail {

class ShardSet {
 public:
  ShardSet(std::string dir, std::string prefix, int version, int64_t max_tokens);
  ~ShardSet();
  ShardSet(const ShardSet&) = delete;
  ShardSet& operator=(const ShardSet&) = delete;

  void append(const uint8_t* bytes, int64_t n);                     // byte tokens
  void append(const int32_t* ids, int64_t n);                       // ids, each in [0, 2^16) for version 1
  void finish();                                                    // closes the open shard (still .tmp)
  void commit();                                                    // renames every .tmp to its name
  const std::vector<std::string>& names() const { return names_; }  // file names, in order

 private:
  template <typename T>
  void append_tokens(const T* tokens, int64_t n);
  void open_next();
  void close_current();
  void check(bool ok);

  std::string dir_, prefix_;
  int version_;
  int64_t max_tokens_;
  std::vector<std::string> names_;
  std::FILE* file_ = nullptr;
  int64_t count_ = 0;  // tokens in the open shard
  std::vector<uint8_t> buffer_;
  bool committed_ = false;
};

// n tokens as little-endian integers of `width` bytes into out (resized to n · width): 2 = uint16
// (each token < 2^16, asserted), 4 = uint32. The shards' and the temporary token file's layout.
void pack_tokens(const uint8_t* tokens, int64_t n, int width, std::vector<uint8_t>& out);
void pack_tokens(const int32_t* tokens, int64_t n, int width, std::vector<uint8_t>& out);

// Removes train_NNNNNN.bin / val_NNNNNN.bin files in dir that are not in `keep` (shards of an
// earlier, larger run: a glob must see only this run's).
void remove_stale_shards(const std::string& dir, const std::vector<std::string>& keep);

}  // namespace daedalus::data::detail
