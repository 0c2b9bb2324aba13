// Token sources: where training tokens come from, behind one interface.
//
//   llm.c shards   header of 256 int32 (magic 20240520 version 1 with uint16 tokens, or magic
//                  20240801 version 7 with uint32 tokens; header[2] = token count), memory-mapped
//   HDF5           a 1-d integer dataset (default "/tokens") in an HDF5 file
//   text           raw UTF-8 files through the byte-level tokenizer (token = byte, vocab 256)
//   synthetic      a seeded sparse Markov chain with a known entropy rate
// Several files of one kind concatenate in the order given. Every error names the file and what
// is wrong (InputError: exit code 1 from the CLI).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace daedalus::data {

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  virtual int64_t size() const = 0;  // number of tokens
  // Copies tokens [start, start + count) into out; InputError when the range is outside [0, size()).
  virtual void read(int64_t start, int64_t count, int32_t* out) const = 0;
  virtual std::string describe() const = 0;  // e.g. "llm.c shards data/train_*.bin (3 files, 1.2M tokens)"
};

// Expands files and glob patterns in order (patterns sorted); an InputError names a pattern that
// matches nothing or a file that does not exist.
std::vector<std::string> expand_inputs(const std::vector<std::string>& patterns);

std::unique_ptr<TokenSource> open_llmc(const std::vector<std::string>& files);
std::unique_ptr<TokenSource> open_hdf5(const std::vector<std::string>& files, const std::string& dataset = "tokens");
std::unique_ptr<TokenSource> open_text(const std::vector<std::string>& files);
// Text through a tokenizer: each file one document followed by EOS, encoded into memory
// (tokenized_text.cpp).
class Tokenizer;
std::unique_ptr<TokenSource> open_text(const std::vector<std::string>& files, const Tokenizer& tokenizer);

// Tokens [begin, end) of `source` as a source of their own (e.g. a held-out tail of a synthetic
// stream for validation). `source` must outlive it; InputError for a range outside the source.
std::unique_ptr<TokenSource> slice_of(const TokenSource& source, int64_t begin, int64_t end);

// Checks every token is in [0, vocab_size); InputError naming the source, position and id.
void check_vocab(const TokenSource& source, int64_t vocab_size);

// A sparse random Markov chain of order `order` over `vocab` tokens: each context (the last `order`
// tokens) allows `branching` distinct next tokens with Dirichlet(1, ..., 1) probabilities, all drawn
// from Philox keyed by `seed` (identical on every machine); `tokens` tokens are sampled into memory
// at construction. entropy_rate_nats() is the chain's entropy rate H = sum_c pi(c) H(P(.|c)), pi the
// stationary distribution of the contexts (computed from the transition table by power iteration,
// not estimated from the sample): the loss floor of any model that sees at least `order` tokens of
// context, in nats per token. Limits: order <= 3 and vocab^order <= 2^22 contexts (InputError
// otherwise); construction is milliseconds up to ~10^5 contexts, ~20 s at 2^22.
struct SyntheticSpec {
  int64_t vocab = 256;
  int order = 1;
  int branching = 4;
  int64_t tokens = 1 << 20;
  uint64_t seed = 1234;
};
class SyntheticSource;
std::unique_ptr<SyntheticSource> open_synthetic(const SyntheticSpec& spec);

class SyntheticSource : public TokenSource {
 public:
  virtual double entropy_rate_nats() const = 0;
};

// llm.c shard writer: version 1 (uint16 tokens, ids < 65536) or version 7 (uint32 tokens).
void write_llmc_shard(const std::string& path, const std::vector<int32_t>& tokens, int version = 1);

}  // namespace daedalus::data
