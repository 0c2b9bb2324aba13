// Byte-level BPE tokenizers read from HuggingFace `tokenizer.json` (the kind GPT-2, DeepSeek-V3,
// Llama 3, Qwen and Kimi K2 ship), giving the ids of HuggingFace `tokenizers`'
// `Tokenizer.encode(text, add_special_tokens=False)`.
//
// The pipeline, as `tokenizers` runs it:
//   text  -> invalid UTF-8 replaced by U+FFFD, one per maximal ill-formed subpart (what Python's
//            bytes.decode("utf-8", "replace") gives the package)
//         -> split around added tokens with normalized: false (leftmost, then longest match)
//         -> normalizer on each remaining piece (none, NFC, Sequence of those)
//         -> split around added tokens with normalized: true
//         -> pre-tokenizer on each remaining piece: Split(regex | string, behavior, invert),
//            Digits, Punctuation, ByteLevel(add_prefix_space, use_regex) last, in a Sequence
//         -> BPE on the bytes of each pre-token (merge ranks, ignore_merges), cached per word
// decode: each id's bytes (the ByteLevel decoder's mapping), concatenated — raw bytes, so a
// cut through a multi-byte character stays byte-exact (`tokenizers` would print U+FFFD there).
//
// Regexes run through PCRE2 (JIT-compiled where the platform has it) with Unicode properties;
// NFC through ICU. Differences from `tokenizers`' Oniguruma regexes: PCRE2 10.42 uses Unicode 14
// tables (code points first assigned after Unicode 14 may fall in other classes), and a pattern
// with \w, \d, \b (whose Unicode meanings differ between the two engines) is refused. Anything
// else not supported (another model type, normalizer or pre-tokenizer, dropout, lstrip on an
// added token, ...) is an InputError naming the file and the JSON path; never a silent difference.
//
// `tokenizer_config.json` beside the file (when present) gives bos_token and eos_token.
//
// Thread safety: a Tokenizer is immutable once loaded; encode through one Encoder per thread
// (an Encoder owns the regex match state and the word cache).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace daedalus::data {

namespace detail {
struct TokenizerModel;  // tokenizer_internal.h
class EncoderState;
}  // namespace detail

class Tokenizer {
 public:
  // Reads `path` (a tokenizer.json) and, if present, tokenizer_config.json in the same directory.
  // InputError naming the file and the JSON path for anything malformed or unsupported.
  static Tokenizer load(const std::string& path);
  // The same from JSON text; the names stand for the files in messages; config_json may be empty.
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json = {},
                             const std::string& name = "tokenizer.json",
                             const std::string& config_name = "tokenizer_config.json");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Convenience: encodes with a fresh Encoder (no cache reuse; use an Encoder for many texts).
  std::vector<int32_t> encode(std::string_view text) const;
  // Bytes of the ids in order; InputError for an id outside [0, vocab_size()) or unassigned.
  // skip_special drops added tokens marked special: true.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The bytes one id decodes to (for streaming output).
  const std::string& token_bytes(int32_t id) const;

  int64_t vocab_size() const;  // 1 + the largest id of the model vocabulary and the added tokens
  // The id of an added token or a vocabulary entry written as its tokenizer.json string, if any.
  std::optional<int32_t> token_id(std::string_view content) const;
  bool is_special(int32_t id) const;
  // From tokenizer_config.json (bos_token / eos_token), if given there.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  const std::string& name() const;  // the path it was loaded from

  const detail::TokenizerModel& model() const { return *model_; }

 private:
  explicit Tokenizer(std::unique_ptr<detail::TokenizerModel> model);
  std::unique_ptr<detail::TokenizerModel> model_;
};

// Per-thread encoding state: PCRE2 match data and JIT stack, reused buffers and a cache of the
// ids of recently seen words. Not thread-safe; the Tokenizer must outlive it.
class Encoder {
 public:
  explicit Encoder(const Tokenizer& tokenizer);
  Encoder(Encoder&&) noexcept;
  ~Encoder();
  // Appends the ids of `text` (any bytes) to `out`.
  void encode(std::string_view text, std::vector<int32_t>& out);
  std::vector<int32_t> encode(std::string_view text) {
    std::vector<int32_t> ids;
    encode(text, ids);
    return ids;
  }

 private:
  std::unique_ptr<detail::EncoderState> state_;
};

}  // namespace daedalus::data
