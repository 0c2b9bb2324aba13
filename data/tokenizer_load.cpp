// Reading tokenizer.json (and tokenizer_config.json beside it) into a TokenizerModel. Every field
// that changes the ids is read or refused: an InputError names the file and the JSON path
// (e.g. "tokenizer.json: pre_tokenizer.pretokenizers[1].behavior: unknown behavior \"Foo\"").
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "autograd/check.h"
#include "data/tokenizer.h"
#include "data/tokenizer_internal.h"

namespace daedalus::data {

namespace {

using detail::SplitBehavior;
using detail::SplitStep;
using nlohmann::json;

// GPT-2's pre-tokenization regex: ByteLevel's split when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A JSON node with its path, for messages.
struct Node {
  const json& value;
  std::string path;  // "model.merges[3]"; empty for the root
  const std::string& file;

  std::string where() const { return path.empty() ? file : fmt::format("{}: {}", file, path); }
  Node at(const std::string& key) const {
    const std::string sub = path.empty() ? key : path + "." + key;
    static const json null_value;
    const auto it = value.is_object() ? value.find(key) : value.end();
    return {it == value.end() ? null_value : *it, sub, file};
  }
  Node at(size_t i) const { return {value[i], fmt::format("{}[{}]", path, i), file}; }
  bool missing() const { return value.is_null(); }
  [[noreturn]] void fail(const std::string& what) const { DAEDALUS_FAIL("{}: {}", where(), what); }
  void expect(bool ok, std::string_view expected) const {
    if (!ok) fail(fmt::format("expected {}, got {}", expected, value.is_null() ? "nothing" : value.dump()));
  }
  const json& object() const {
    expect(value.is_object(), "an object");
    return value;
  }
  const json& array() const {
    expect(value.is_array(), "an array");
    return value;
  }
  std::string string() const {
    expect(value.is_string(), "a string");
    return value.get<std::string>();
  }
  bool boolean(std::optional<bool> fallback = std::nullopt) const {
    if (missing() && fallback) return *fallback;
    expect(value.is_boolean(), "true or false");
    return value.get<bool>();
  }
  int32_t id() const {
    expect(value.is_number_integer() && value.get<int64_t>() >= 0 && value.get<int64_t>() < (int64_t(1) << 31),
           "a token id (an integer in [0, 2^31))");
    return int32_t(value.get<int64_t>());
  }
  std::string type() const { return at("type").string(); }
  // Fails unless the node is missing/null or equal to `allowed`.
  void only(const json& allowed, std::string_view why) const {
    if (!missing() && value != allowed) fail(fmt::format("{} is not supported ({})", value.dump(), why));
  }
};

json parse(std::string_view text, const std::string& name) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    DAEDALUS_FAIL("{}: not valid JSON: {}", name, e.what());
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DAEDALUS_CHECK(in.good(), "{}: cannot open the tokenizer file", path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A vocabulary string's bytes through the ByteLevel alphabet; nullopt when a character is not in it.
std::optional<std::string> alphabet_bytes(const std::string& token) {
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    const auto b = uint8_t(token[i]);
    const int len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    for (int k = 1; k < len && i + size_t(k) < token.size(); ++k)
      cp = (cp << 6) | (uint8_t(token[i + size_t(k)]) & 0x3F);
    const int byte = detail::char_byte(cp);
    if (byte < 0) return std::nullopt;
    bytes += char(byte);
    i += size_t(len);
  }
  return bytes;
}

detail::Normalizer read_normalizer(const Node& node) {
  if (node.missing()) return detail::Normalizer::none;
  node.object();
  const std::string type = node.type();
  if (type == "NFC") return detail::Normalizer::nfc;
  if (type == "Sequence") {
    const Node list = node.at("normalizers");
    detail::Normalizer result = detail::Normalizer::none;
    for (size_t i = 0; i < list.array().size(); ++i)
      if (read_normalizer(list.at(i)) == detail::Normalizer::nfc) result = detail::Normalizer::nfc;  // NFC∘NFC = NFC
    return result;
  }
  node.at("type").fail(
      fmt::format("normalizer \"{}\" is not supported (supported: NFC, Sequence of them, null)", type));
}

SplitBehavior read_behavior(const Node& node, SplitBehavior fallback) {
  if (node.missing()) return fallback;
  const std::string name = node.string();
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  node.fail(fmt::format("unknown split behavior \"{}\"", name));
}

SplitStep regex_step(std::string_view pattern, bool literal, const std::string& where, SplitBehavior behavior,
                     bool invert = false) {
  return {std::make_shared<const detail::Regex>(pattern, literal, where), behavior, invert};
}

// Appends the steps of one pre-tokenizer; `byte_level` is set once a ByteLevel step is read
// (it must be the last one: later steps would see its mapped characters).
void read_pre_tokenizer(const Node& node, std::vector<SplitStep>& steps, bool& byte_level) {
  node.object();
  const std::string type = node.type();
  if (byte_level) node.fail("a pre-tokenizer after ByteLevel is not supported (ByteLevel must come last)");
  if (type == "Sequence") {
    const Node list = node.at("pretokenizers");
    for (size_t i = 0; i < list.array().size(); ++i) read_pre_tokenizer(list.at(i), steps, byte_level);
  } else if (type == "Split") {
    const Node pattern = node.at("pattern");
    pattern.object();
    const bool literal = pattern.value.contains("String");
    const Node source = pattern.at(literal ? "String" : "Regex");
    steps.push_back(regex_step(source.string(), literal, source.where(),
                               read_behavior(node.at("behavior"), SplitBehavior::isolated),
                               node.at("invert").boolean(false)));
  } else if (type == "ByteLevel") {
    byte_level = true;
    if (node.at("add_prefix_space").boolean(true)) steps.push_back(SplitStep{});  // the prefix-space step
    if (node.at("use_regex").boolean(true))
      steps.push_back(
          regex_step(kGpt2Pattern, /*literal=*/false, node.where() + " (GPT-2 regex)", SplitBehavior::isolated));
  } else if (type == "Digits") {
    // tokenizers: char::is_numeric (categories Nd, Nl, No) matched char by char; individual_digits
    // isolates each, else runs are kept together (Contiguous).
    const bool individual = node.at("individual_digits").boolean(false);
    steps.push_back(regex_step(individual ? "\\p{N}" : "\\p{N}+", false, node.where(), SplitBehavior::isolated));
  } else if (type == "Punctuation") {
    // tokenizers: is_ascii_punctuation || Unicode punctuation (P*), one character per match.
    steps.push_back(regex_step("[\\p{P}$+<=>^`|~]", false, node.where(),
                               read_behavior(node.at("behavior"), SplitBehavior::isolated)));
  } else {
    node.at("type").fail(fmt::format(
        "pre-tokenizer \"{}\" is not supported (supported: Sequence, Split, ByteLevel, Digits, Punctuation)", type));
  }
}

void read_model(const Node& model, detail::TokenizerModel& m, std::vector<std::string>& id_strings) {
  model.object();
  const Node type = model.at("type");
  if (!type.missing() && type.string() != "BPE")
    type.fail(fmt::format("model type \"{}\" is not supported (only byte-level BPE)", type.string()));
  model.at("dropout").only(json(), "dropout makes encoding random");
  model.at("unk_token").only(json(), "byte-level BPE needs no unknown token");
  model.at("continuing_subword_prefix").only(json(), "not used by byte-level BPE");
  model.at("end_of_word_suffix").only(json(), "not used by byte-level BPE");
  model.at("byte_fallback").only(json(false), "byte-level BPE covers every byte");
  m.bpe.ignore_merges = model.at("ignore_merges").boolean(false);

  const Node vocab = model.at("vocab");
  detail::StringIdMap by_string;
  for (const auto& [token, value] : vocab.object().items()) {
    const int32_t id = Node{value, vocab.path + "[" + json(token).dump() + "]", model.file}.id();
    by_string[token] = id;
    if (size_t(id) >= id_strings.size()) id_strings.resize(size_t(id) + 1);
    id_strings[size_t(id)] = token;
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    detail::append_utf8(ch, detail::byte_char(uint8_t(b)));
    const auto it = by_string.find(ch);
    m.bpe.byte_id[size_t(b)] = it == by_string.end() ? -1 : it->second;
  }
  for (const auto& [token, id] : by_string)
    if (const auto bytes = alphabet_bytes(token)) m.bpe.by_bytes.emplace(*bytes, id);

  // merges: "left right" strings (tokenizers < 0.20) or [left, right] pairs.
  const Node merges = model.at("merges");
  std::vector<std::array<int32_t, 3>> table;
  table.reserve(merges.array().size());
  for (size_t i = 0; i < merges.value.size(); ++i) {
    const Node merge = merges.at(i);
    std::string left, right;
    if (merge.value.is_string()) {
      const std::string s = merge.string();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        merge.fail("expected \"left right\" (two tokens and one space)");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else {
      merge.expect(merge.value.is_array() && merge.value.size() == 2, "a merge: \"left right\" or [left, right]");
      left = merge.at(size_t{0}).string();
      right = merge.at(size_t{1}).string();
    }
    auto lookup = [&](const std::string& token) {
      const auto it = by_string.find(token);
      if (it == by_string.end()) merge.fail(fmt::format("token {} is not in model.vocab", json(token).dump()));
      return it->second;
    };
    table.push_back({lookup(left), lookup(right), lookup(left + right)});
  }
  m.bpe.merges.build(table);
  for (auto& [token, id] : by_string) m.by_content.emplace(token, id);
}

void read_added_tokens(const Node& list, detail::TokenizerModel& m, std::vector<std::string>& id_strings,
                       std::vector<detail::AddedToken>& raw, std::vector<detail::AddedToken>& normalized) {
  if (list.missing()) return;
  for (size_t i = 0; i < list.array().size(); ++i) {
    const Node token = list.at(i);
    token.object();
    detail::AddedToken added;
    added.id = token.at("id").id();
    added.content = token.at("content").string();
    if (added.content.empty()) token.at("content").fail("an added token cannot be empty");
    added.special = token.at("special").boolean(false);
    for (const char* flag : {"single_word", "lstrip", "rstrip"})
      token.at(flag).only(json(false), "only plain matches of added tokens are implemented");
    const bool is_normalized = token.at("normalized").boolean(!added.special);
    if (size_t(added.id) >= id_strings.size()) id_strings.resize(size_t(added.id) + 1);
    id_strings[size_t(added.id)] = added.content;
    m.by_content[added.content] = added.id;
    if (m.id_special.size() <= size_t(added.id)) m.id_special.resize(size_t(added.id) + 1);
    m.id_special[size_t(added.id)] = added.special;
    if (is_normalized && m.normalizer == detail::Normalizer::nfc) {
      std::string composed;
      if (detail::nfc(added.content, composed)) added.content = composed;
    }
    (is_normalized ? normalized : raw).push_back(std::move(added));
  }
}

// bos_token / eos_token of tokenizer_config.json: a string, {"content": ...} or null.
std::optional<int32_t> config_token(const Node& node, const detail::TokenizerModel& m) {
  if (node.missing()) return std::nullopt;
  const std::string content = node.value.is_object() ? node.at("content").string() : node.string();
  const auto it = m.by_content.find(content);
  if (it == m.by_content.end()) node.fail(fmt::format("token {} is not in the tokenizer", json(content).dump()));
  return it->second;
}

}  // namespace

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json, const std::string& name,
                               const std::string& config_name) {
  const json root_value = parse(tokenizer_json, name);
  const Node root{root_value, "", name};
  root.object();
  auto m = std::make_unique<detail::TokenizerModel>();
  m->name = name;
  root.at("truncation").only(json(), "Daedalus never truncates");
  root.at("padding").only(json(), "Daedalus never pads");
  m->normalizer = read_normalizer(root.at("normalizer"));

  const Node pre = root.at("pre_tokenizer");
  bool byte_level = false;
  if (!pre.missing()) read_pre_tokenizer(pre, m->pre_tokenizer, byte_level);
  if (!byte_level) pre.fail("no ByteLevel pre-tokenizer: only byte-level BPE tokenizers are supported");
  const Node decoder = root.at("decoder");
  if (decoder.missing() || decoder.type() != "ByteLevel")
    decoder.fail("the decoder must be ByteLevel (byte-level BPE)");

  std::vector<std::string> id_strings;
  read_model(root.at("model"), *m, id_strings);
  std::vector<detail::AddedToken> raw, normalized;
  read_added_tokens(root.at("added_tokens"), *m, id_strings, raw, normalized);
  m->raw_tokens.build(std::move(raw));
  m->normalized_tokens.build(std::move(normalized));

  // Decoding: the ByteLevel decoder maps each token's characters back to bytes; a token with a
  // character outside the alphabet (e.g. "<｜User｜>") decodes to its own UTF-8.
  const size_t n = id_strings.size();
  m->id_bytes.resize(n);
  m->id_assigned.assign(n, 0);
  m->id_special.resize(n, 0);
  for (const auto& [content, id] : m->by_content) m->id_assigned[size_t(id)] = 1;
  for (size_t id = 0; id < n; ++id) {
    if (!m->id_assigned[id]) continue;
    const auto bytes = alphabet_bytes(id_strings[id]);
    m->id_bytes[id] = bytes ? *bytes : id_strings[id];
  }

  if (!config_json.empty()) {
    const json config_value = parse(config_json, config_name);
    const Node config{config_value, "", config_name};
    config.object();
    m->bos = config_token(config.at("bos_token"), *m);
    m->eos = config_token(config.at("eos_token"), *m);
  }
  return Tokenizer(std::move(m));
}

Tokenizer Tokenizer::load(const std::string& path) {
  const std::string text = read_file(path);
  const auto config_path = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::string config;
  if (std::filesystem::exists(config_path)) config = read_file(config_path.string());
  return from_json(text, config, path, config_path.string());
}

}  // namespace daedalus::data
