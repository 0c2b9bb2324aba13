// The encoding pipeline (added tokens, normalizer, pre-tokenizer, BPE with a word cache) and
// decoding. Loading is in tokenizer_load.cpp.
#include "data/tokenizer.h"

#include <algorithm>

#include "autograd/check.h"
#include "data/tokenizer_internal.h"

namespace daedalus::data {

namespace detail {

namespace {

constexpr size_t kCachedWordBytes = 64;     // longer words are rare: encoded every time
constexpr size_t kCacheEntries = 1u << 18;  // the cache is cleared when it holds this many words

}  // namespace

void TokenMatcher::build(std::vector<AddedToken> tokens) {
  std::sort(tokens.begin(), tokens.end(), [](const AddedToken& a, const AddedToken& b) {
    if (a.content[0] != b.content[0]) return uint8_t(a.content[0]) < uint8_t(b.content[0]);
    return a.content.size() > b.content.size();
  });
  tokens_ = std::move(tokens);
  by_first_.fill({0, 0});
  for (size_t i = 0; i < tokens_.size(); ++i) {
    auto& range = by_first_[uint8_t(tokens_[i].content[0])];
    if (range.first == range.second) range.first = int(i);
    range.second = int(i) + 1;
  }
}

std::pair<size_t, int> TokenMatcher::find(std::string_view text, size_t from) const {
  for (size_t pos = from; pos < text.size(); ++pos) {
    const auto [begin, end] = by_first_[uint8_t(text[pos])];
    for (int i = begin; i < end; ++i)  // longest first: the leftmost-longest match
      if (text.substr(pos).starts_with(tokens_[size_t(i)].content)) return {pos, i};
  }
  return {std::string_view::npos, -1};
}

namespace {

// Calls piece(text) for the text between the matches of `tokens` in `text` and appends the ids of
// the matches to out, in order.
template <typename Piece>
void split_added(const TokenMatcher& tokens, std::string_view text, std::vector<int32_t>& out, Piece&& piece) {
  if (tokens.empty()) {
    piece(text);
    return;
  }
  size_t pos = 0;
  while (pos < text.size()) {
    const auto [at, index] = tokens.find(text, pos);
    if (index < 0) break;
    if (at > pos) piece(text.substr(pos, at - pos));
    out.push_back(tokens.token(index).id);
    pos = at + tokens.token(index).content.size();
  }
  if (pos < text.size()) piece(text.substr(pos));
}

}  // namespace

void EncoderState::encode(std::string_view text, std::vector<int32_t>& out) {
  if (!is_valid_utf8(text)) {
    lossy_ = replace_invalid_utf8(text);
    text = lossy_;
  }
  split_added(model_.raw_tokens, text, out, [&](std::string_view piece) { encode_normalized(piece, out); });
}

void EncoderState::encode_normalized(std::string_view text, std::vector<int32_t>& out) {
  if (model_.normalizer == Normalizer::nfc && nfc(text, normalized_)) text = normalized_;
  split_added(model_.normalized_tokens, text, out, [&](std::string_view piece) { encode_piece(piece, out); });
}

// Pre-tokenizes one piece (the steps in order, each over every piece of the one before) and
// encodes its words.
void EncoderState::encode_piece(std::string_view piece, std::vector<int32_t>& out) {
  pieces_.assign(1, piece);
  prefixed_.clear();
  for (const SplitStep& step : model_.pre_tokenizer) {
    next_.clear();
    for (const std::string_view p : pieces_) {
      if (step.regex) {
        apply_split(step, p, match_, matches_, next_);
      } else if (p.starts_with(' ')) {  // ByteLevel's add_prefix_space
        next_.push_back(p);
      } else {
        next_.push_back(prefixed_.emplace_back(" ").append(p));
      }
    }
    pieces_.swap(next_);
  }
  for (const std::string_view word : pieces_) encode_word(word, out);
}

void EncoderState::encode_word(std::string_view word, std::vector<int32_t>& out) {
  if (word.size() > kCachedWordBytes) {
    model_.bpe.encode_word(word, bpe_, out);
    return;
  }
  const auto hit = cache_.find(word);
  if (hit != cache_.end()) {
    out.insert(out.end(), cache_ids_.begin() + hit->second.first, cache_ids_.begin() + hit->second.second);
    return;
  }
  const size_t first = out.size();
  model_.bpe.encode_word(word, bpe_, out);
  if (cache_.size() >= kCacheEntries) {
    cache_.clear();
    cache_ids_.clear();
  }
  const auto begin = uint32_t(cache_ids_.size());
  cache_ids_.insert(cache_ids_.end(), out.begin() + int64_t(first), out.end());
  cache_.emplace(std::string(word), std::make_pair(begin, uint32_t(cache_ids_.size())));
}

}  // namespace detail

Tokenizer::Tokenizer(std::unique_ptr<detail::TokenizerModel> model) : model_(std::move(model)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const { return Encoder(*this).encode(text); }

const std::string& Tokenizer::token_bytes(int32_t id) const {
  DAEDALUS_CHECK(id >= 0 && id < vocab_size() && model_->id_assigned[size_t(id)],
                 "{}: token id {} is not in the vocabulary (size {})", model_->name, id, vocab_size());
  return model_->id_bytes[size_t(id)];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string text;
  for (const int32_t id : ids) {
    const std::string& bytes = token_bytes(id);
    if (!(skip_special && model_->id_special[size_t(id)])) text += bytes;
  }
  return text;
}

int64_t Tokenizer::vocab_size() const { return int64_t(model_->id_bytes.size()); }

std::optional<int32_t> Tokenizer::token_id(std::string_view content) const {
  const auto it = model_->by_content.find(content);
  if (it == model_->by_content.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && model_->id_special[size_t(id)] != 0;
}

std::optional<int32_t> Tokenizer::bos_id() const { return model_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return model_->eos; }
const std::string& Tokenizer::name() const { return model_->name; }

Encoder::Encoder(const Tokenizer& tokenizer) : state_(std::make_unique<detail::EncoderState>(tokenizer.model())) {}
Encoder::Encoder(Encoder&&) noexcept = default;
Encoder::~Encoder() = default;

void Encoder::encode(std::string_view text, std::vector<int32_t>& out) { state_->encode(text, out); }

}  // namespace daedalus::data
