// `daedalus tokenize` (see text_commands.h).
#include "train/text_commands.h"

#include <fmt/ranges.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "data/tokenizer.h"

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

}  // namespace daedalus::train
