// `daedalus tokenize` and `daedalus prepare-data` (see text_commands.h).
#include "train/text_commands.h"

#include <fmt/ranges.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "data/chat.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "train/generate.h"

namespace daedalus::train {

namespace {

std::string read_all(std::FILE* in) {
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), in)) > 0) text.append(buffer, n);
  return text;
}

// Ids from "1 2 3", "[1, 2, 3]" or {"ids": [1, 2, 3]}.
std::vector<int32_t> parse_ids(const std::string& text) {
  size_t first = 0;
  while (first < text.size() && std::isspace(uint8_t(text[first]))) ++first;
  std::vector<int32_t> ids;
  if (first < text.size() && (text[first] == '[' || text[first] == '{')) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      DAEDALUS_FAIL("tokenize --decode: stdin is not valid JSON: {}", e.what());
    }
    const nlohmann::json& list = j.is_object() && j.contains("ids") ? j["ids"] : j;
    DAEDALUS_CHECK(list.is_array(), "tokenize --decode: expected a JSON array of ids or {{\"ids\": [...]}}");
    for (size_t i = 0; i < list.size(); ++i) {
      DAEDALUS_CHECK(list[i].is_number_integer(), "tokenize --decode: ids[{}] is {}, not an integer", i,
                     list[i].dump());
      ids.push_back(int32_t(list[i].get<int64_t>()));
    }
    return ids;
  }
  size_t pos = first;
  while (pos < text.size()) {
    size_t end = pos;
    while (end < text.size() && !std::isspace(uint8_t(text[end]))) ++end;
    const std::string word = text.substr(pos, end - pos);
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    DAEDALUS_CHECK(used == word.size() && id >= 0 && id <= INT32_MAX,
                   "tokenize --decode: \"{}\" (id number {}) is not a token id", word, ids.size());
    ids.push_back(int32_t(id));
    pos = end;
    while (pos < text.size() && std::isspace(uint8_t(text[pos]))) ++pos;
  }
  return ids;
}

}  // namespace

void run_tokenize(const TokenizeOptions& options, std::FILE* in, std::FILE* out) {
  const data::Tokenizer tokenizer = data::Tokenizer::load(options.tokenizer);
  const std::string input = read_all(in);
  using nlohmann::json;
  const auto text_json = [](const std::string& bytes) {
    return json(bytes).dump(-1, ' ', false, json::error_handler_t::replace);  // invalid UTF-8 -> U+FFFD
  };
  if (options.decode) {
    const std::string text = tokenizer.decode(parse_ids(input));
    if (options.json)
      fmt::print(out, "{{\"text\": {}}}\n", text_json(text));
    else
      std::fwrite(text.data(), 1, text.size(), out);
    return;
  }
  const std::vector<int32_t> ids = tokenizer.encode(input);
  if (options.json) {
    std::vector<std::string> tokens;
    for (const int32_t id : ids) tokens.push_back(text_json(tokenizer.token_bytes(id)));
    fmt::print(out, "{{\"ids\": [{}], \"tokens\": [{}]}}\n", fmt::join(ids, ", "), fmt::join(tokens, ", "));
  } else {
    fmt::print(out, "{}\n", fmt::join(ids, " "));
  }
}

namespace {

// "[#########           ]  45%  1.2 / 2.8 MB  5.3 MB/s" on a terminal, redrawn in place (at most
// ten times a second); nothing otherwise.
class ProgressBar {
 public:
  void operator()(int64_t done, int64_t total) {
    static const bool tty = isatty(fileno(stderr)) != 0;
    if (!tty || total <= 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    constexpr int kWidth = 30;
    const double f = std::min(1.0, double(done) / double(total));
    const int filled = int(f * kWidth);
    const double seconds = std::chrono::duration<double>(now - start_).count();
    fmt::print(stderr, "\r[{}{}] {:3.0f}%  {:.1f} / {:.1f} MB  {:.1f} MB/s{}", std::string(size_t(filled), '#'),
               std::string(size_t(kWidth - filled), ' '), 100 * f, double(done) / 1e6, double(total) / 1e6,
               seconds > 0 ? double(done) / 1e6 / seconds : 0.0, done >= total ? "\n" : "");
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_{};
};

}  // namespace

void run_prepare_data(const PrepareOptions& o) {
  ProgressBar bar;
  const auto progress = [&](int64_t done, int64_t total) { bar(done, total); };
  const auto start = std::chrono::steady_clock::now();
  const data::PrepareSummary s = o.tokenizer.empty()
                                     ? data::prepare_data(o.inputs, o.out, o.val_fraction, progress)
                                     : data::prepare_tokenized(o.inputs, o.out, o.val_fraction,
                                                               {o.tokenizer, o.text_key, o.bos, o.threads}, progress);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto train_shards = std::count_if(s.shards.begin(), s.shards.end(), [](const std::string& path) {
    return path.find("/train_") != std::string::npos;
  });
  const std::string documents = o.tokenizer.empty() ? "" : fmt::format(" ({} documents)", s.documents);
  fmt::print("prepared {} files, {} bytes{} -> {} train tokens in {} shard(s), {} validation tokens, in {}\n", s.files,
             s.bytes, documents, s.train_tokens, train_shards, s.val_tokens, o.out);
  if (!o.tokenizer.empty())
    fmt::print("tokenizer {}: llm.c version {} shards; {:.1f} MB of text in {:.1f} s ({:.2f} MB/s)\n", o.tokenizer,
               s.version, double(s.text_bytes) / 1e6, seconds,
               seconds > 0 ? double(s.text_bytes) / 1e6 / seconds : 0.0);
}

PromptCodec::PromptCodec(const std::string& tokenizer_path) {
  if (!tokenizer_path.empty()) tokenizer_ = std::make_unique<data::Tokenizer>(data::Tokenizer::load(tokenizer_path));
}

PromptCodec::~PromptCodec() = default;

std::vector<int64_t> PromptCodec::encode(const std::string& prompt, bool chat) const {
  if (!tokenizer_) {
    DAEDALUS_CHECK(!chat, "generate --chat: the run's config names no data.tokenizer (add --set data.tokenizer=FILE)");
    return std::vector<int64_t>(reinterpret_cast<const unsigned char*>(prompt.data()),
                                reinterpret_cast<const unsigned char*>(prompt.data()) + prompt.size());
  }
  data::Encoder encoder(*tokenizer_);
  const std::vector<int32_t> ids =
      chat ? data::ChatFormat(*tokenizer_).prompt({{"user", prompt}}, encoder) : encoder.encode(prompt);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::string PromptCodec::text(int64_t id) const {
  if (!tokenizer_) return bytes_to_text({id});
  return tokenizer_->token_bytes(int32_t(id));
}

std::string PromptCodec::text(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) out += text(id);
  return out;
}

int64_t PromptCodec::stop_token(bool chat) const {
  return chat && tokenizer_ && tokenizer_->eos_id() ? *tokenizer_->eos_id() : -1;
}

}  // namespace daedalus::train
