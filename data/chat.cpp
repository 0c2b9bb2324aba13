// DeepSeek-V3's chat format with assistant-only loss, and the JSONL reader (see chat.h).
#include "data/chat.h"

#include <nlohmann/json.hpp>

#include "autograd/check.h"
#include "data/documents.h"
#include "data/source.h"

namespace daedalus::data {

namespace {

constexpr const char* kUser = "<｜User｜>";
constexpr const char* kAssistant = "<｜Assistant｜>";

int32_t required(const std::optional<int32_t>& id, const Tokenizer& tokenizer, const std::string& what) {
  DAEDALUS_CHECK(id.has_value(), "{}: the DeepSeek-V3 chat format needs {}, which this tokenizer does not have",
                 tokenizer.name(), what);
  return *id;
}

void append(ChatSample& sample, const std::vector<int32_t>& ids, bool loss) {
  sample.ids.insert(sample.ids.end(), ids.begin(), ids.end());
  sample.loss.insert(sample.loss.end(), ids.size(), uint8_t(loss));
}

}  // namespace

ChatFormat::ChatFormat(const Tokenizer& tokenizer)
    : bos_(required(tokenizer.bos_id(), tokenizer, "a bos_token (tokenizer_config.json)")),
      eos_(required(tokenizer.eos_id(), tokenizer, "an eos_token (tokenizer_config.json)")),
      user_(required(tokenizer.token_id(kUser), tokenizer, std::string("the token ") + kUser)),
      assistant_(required(tokenizer.token_id(kAssistant), tokenizer, std::string("the token ") + kAssistant)) {}

void ChatFormat::render_into(const std::vector<ChatMessage>& messages, Encoder& encoder, const std::string& where,
                             ChatSample& sample) const {
  std::string system;
  bool first_system = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    DAEDALUS_CHECK(role == "system" || role == "user" || role == "assistant",
                   "{}: messages[{}].role: unknown role \"{}\" (expected system, user or assistant)", where, i, role);
    if (role != "system") continue;
    system += (first_system ? "" : "\n\n") + messages[i].content;
    first_system = false;
  }
  append(sample, {bos_}, false);
  append(sample, encoder.encode(system), false);
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      append(sample, {user_}, false);
      append(sample, encoder.encode(m.content), false);
    } else if (m.role == "assistant") {
      append(sample, {assistant_}, false);
      append(sample, encoder.encode(m.content), true);
      append(sample, {eos_}, true);
    }
  }
}

ChatSample ChatFormat::render(const std::vector<ChatMessage>& messages, Encoder& encoder,
                              const std::string& where) const {
  ChatSample sample;
  render_into(messages, encoder, where, sample);
  bool any = false;
  for (const ChatMessage& m : messages) any = any || m.role == "assistant";
  DAEDALUS_CHECK(any, "{}: messages: no assistant message (nothing to train on)", where);
  return sample;
}

std::vector<int32_t> ChatFormat::prompt(const std::vector<ChatMessage>& messages, Encoder& encoder) const {
  ChatSample sample;
  render_into(messages, encoder, "chat prompt", sample);
  sample.ids.push_back(assistant_);
  return sample.ids;
}

std::vector<ChatSample> read_chat(const std::vector<std::string>& patterns, const Tokenizer& tokenizer) {
  const ChatFormat format(tokenizer);
  Encoder encoder(tokenizer);
  std::vector<ChatSample> samples;
  for (const std::string& path : expand_inputs(patterns)) {
    LineReader reader(path);
    std::string_view line;
    while (reader.next(line)) {
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      const std::string where = fmt::format("{}:{}", path, reader.line_number());
      const nlohmann::json j = parse_object_line(line, where);
      const auto list = j.find("messages");
      DAEDALUS_CHECK(list != j.end() && list->is_array(), "{}: messages: expected an array of messages", where);
      std::vector<ChatMessage> messages;
      for (size_t i = 0; i < list->size(); ++i) {
        const nlohmann::json& m = (*list)[i];
        DAEDALUS_CHECK(m.is_object(), "{}: messages[{}]: expected an object", where, i);
        for (const char* key : {"role", "content"})
          DAEDALUS_CHECK(m.contains(key) && m[key].is_string(), "{}: messages[{}].{}: expected a string", where, i,
                         key);
        messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
      samples.push_back(format.render(messages, encoder, where));
    }
  }
  DAEDALUS_CHECK(!samples.empty(), "{}: no conversations", fmt::join(patterns, ", "));
  return samples;
}

}  // namespace daedalus::data
