// Internal to data/tokenizer*.cpp: the loaded tokenizer (what tokenizer.json describes, compiled
// for encoding) and the pieces each stage of the pipeline is built from.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace daedalus::data::detail {

// ---- text (tokenizer_text.cpp) --------------------------------------------------------------------

// True when `text` is well-formed UTF-8 (no surrogates, no overlongs, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view text);
// `text` with every maximal ill-formed subpart replaced by U+FFFD (Unicode's recommended practice,
// as Python's errors="replace" and Rust's from_utf8_lossy do).
std::string replace_invalid_utf8(std::string_view text);
// Appends code point cp as UTF-8.
void append_utf8(std::string& out, uint32_t cp);

// NFC through ICU: out = NFC(text) (text well-formed UTF-8). Returns false, leaving out untouched,
// when text is already in NFC (the common case: no copy).
bool nfc(std::string_view text, std::string& out);

// GPT-2's byte <-> character alphabet of the ByteLevel pre-tokenizer and decoder: printable
// Latin-1 bytes map to themselves, the other 68 to U+0100.. in byte order.
uint32_t byte_char(uint8_t byte);
// The byte whose character is cp, or -1 when cp is not in the alphabet.
int char_byte(uint32_t cp);

// ---- regex splits (tokenizer_split.cpp) ------------------------------------------------------

// tokenizers' SplitDelimiterBehavior.
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

// A compiled PCRE2 pattern (UTF, Unicode properties; JIT where available). Thread-safe to match
// from several threads, each with its own MatchState.
class Regex {
 public:
  // InputError naming `where` (file and JSON path) when the pattern does not compile or uses a
  // construct whose meaning differs from Oniguruma's (\w \W \d \D \b \B, \S inside a class).
  Regex(std::string_view pattern, bool literal, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  void* code() const { return code_; }  // pcre2_code_8*
  bool jit() const { return jit_; }

 private:
  void* code_ = nullptr;
  bool jit_ = false;
};

// One pre-tokenizer step: split by a regex, or prepend a space (ByteLevel's add_prefix_space).
struct SplitStep {
  std::shared_ptr<const Regex> regex;  // null: the prefix-space step
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
};

// Per-thread PCRE2 state (match data, JIT stack).
class MatchState {
 public:
  MatchState();
  ~MatchState();
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
  // Appends to `matches` the [begin, end) byte ranges of the non-overlapping matches of `regex`
  // in `text`, left to right, with Oniguruma's find_iter rule for empty matches (one right after
  // the previous match is skipped).
  void find_all(const Regex& regex, std::string_view text, std::vector<std::pair<int64_t, int64_t>>& matches);

 private:
  void* data_ = nullptr;     // pcre2_match_data_8*
  void* context_ = nullptr;  // pcre2_match_context_8*
  void* stack_ = nullptr;    // pcre2_jit_stack_8*
};

// Applies one regex split step to `piece`: appends the resulting pieces (non-empty views into
// `piece`) to `out`, in order.
void apply_split(const SplitStep& step, std::string_view piece, MatchState& state,
                 std::vector<std::pair<int64_t, int64_t>>& scratch, std::vector<std::string_view>& out);

// ---- BPE (tokenizer_bpe.cpp) -----------------------------------------------------------------

// (left id, right id) -> (rank, merged id), open addressing on 64-bit keys.
class MergeTable {
 public:
  void build(const std::vector<std::array<int32_t, 3>>& merges);  // {left, right, merged} by rank
  // Rank and merged id of the pair, or rank -1.
  std::pair<int32_t, int32_t> find(int32_t left, int32_t right) const {
    if (slots_.empty()) return {-1, -1};
    const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> shift_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.rank < 0) return {-1, -1};
      if (s.key == key) return {s.rank, s.merged};
    }
  }

 private:
  struct Slot {
    uint64_t key = 0;
    int32_t rank = -1;
    int32_t merged = -1;
  };
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  int shift_ = 64;
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Reusable buffers of one word's merge loop.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours in the linked list; -1 at the ends
    bool removed;
  };
  struct Candidate {
    int32_t rank, pos, merged;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

struct BpeModel {
  std::array<int32_t, 256> byte_id{};  // id of each single byte; -1 when its character is not in the vocab
  MergeTable merges;
  StringIdMap by_bytes;  // vocab entries whose characters are all in the byte alphabet, as bytes
  bool ignore_merges = false;
  // Appends the ids of one pre-token (raw bytes) to out.
  void encode_word(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& out) const;
};

// ---- the whole tokenizer (tokenizer_load.cpp builds it) --------------------------------------

struct AddedToken {
  std::string content;  // as matched: normalized already for normalized tokens
  int32_t id = 0;
  bool special = false;
};

// Leftmost-longest matching of a set of literal strings.
class TokenMatcher {
 public:
  void build(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  // The first match at or after `from`: {position, token index}, or position npos.
  std::pair<size_t, int> find(std::string_view text, size_t from) const;
  const AddedToken& token(int index) const { return tokens_[size_t(index)]; }

 private:
  std::vector<AddedToken> tokens_;                   // sorted by first byte, then longest first
  std::array<std::pair<int, int>, 256> by_first_{};  // [begin, end) into tokens_ per first byte
};

enum class Normalizer { none, nfc };

struct TokenizerModel {
  std::string name;
  Normalizer normalizer = Normalizer::none;
  TokenMatcher raw_tokens;         // added tokens with normalized: false
  TokenMatcher normalized_tokens;  // added tokens with normalized: true
  std::vector<SplitStep> pre_tokenizer;
  BpeModel bpe;
  std::vector<std::string> id_bytes;  // decode: the bytes of each id (empty for an unassigned id)
  std::vector<uint8_t> id_assigned;
  std::vector<uint8_t> id_special;
  StringIdMap by_content;  // tokenizer.json strings of vocab entries and added tokens
  std::optional<int32_t> bos, eos;
};

// Encoder internals (tokenizer.cpp).
class EncoderState {
 public:
  explicit EncoderState(const TokenizerModel& model) : model_(model) {}
  void encode(std::string_view text, std::vector<int32_t>& out);

 private:
  void encode_normalized(std::string_view text, std::vector<int32_t>& out);
  void encode_piece(std::string_view piece, std::vector<int32_t>& out);
  void encode_word(std::string_view word, std::vector<int32_t>& out);

  const TokenizerModel& model_;
  MatchState match_;
  std::string lossy_, normalized_;
  std::vector<std::string_view> pieces_, next_;
  std::vector<std::pair<int64_t, int64_t>> matches_;
  std::deque<std::string> prefixed_;  // pieces with ByteLevel's prefix space, for this call
  BpeScratch bpe_;
  // Word cache: word bytes -> [begin, end) in cache_ids_; cleared when it grows past a bound.
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>> cache_;
  std::vector<int32_t> cache_ids_;
};

}  // namespace daedalus::data::detail
