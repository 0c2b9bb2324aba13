// Chat data for supervised fine-tuning: JSONL records
//   {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
// rendered in DeepSeek-V3's chat format (the chat_template of its tokenizer_config.json, tool
// calls aside):
//   <｜begin▁of▁sentence｜>{system prompts, joined by "\n\n"}
//   <｜User｜>{user}<｜Assistant｜>{assistant}<｜end▁of▁sentence｜><｜User｜>...
// with BOS and EOS from tokenizer_config.json and <｜User｜>, <｜Assistant｜> from the tokenizer.
// Loss is on the assistant's tokens only: its content and the EOS closing each of its turns (so
// the model learns where to stop); never on BOS, system, user or the <｜Assistant｜> marker.
// The texts are encoded piece by piece between the special tokens, which gives the same ids as
// encoding the rendered string (added tokens split the text first).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace daedalus::data {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// One rendered conversation: loss[t] = 1 when token t is one the model is trained to predict.
struct ChatSample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> loss;
};

class ChatFormat {
 public:
  // InputError naming the tokenizer when it lacks BOS, EOS, <｜User｜> or <｜Assistant｜>.
  explicit ChatFormat(const Tokenizer& tokenizer);
  // InputError naming `where` (file:line) and the message index for an unknown role, or a
  // conversation with no assistant message.
  ChatSample render(const std::vector<ChatMessage>& messages, Encoder& encoder, const std::string& where) const;
  // A generation prompt: the conversation so far, then <｜Assistant｜> (add_generation_prompt).
  std::vector<int32_t> prompt(const std::vector<ChatMessage>& messages, Encoder& encoder) const;
  int32_t eos() const { return eos_; }

 private:
  void render_into(const std::vector<ChatMessage>& messages, Encoder& encoder, const std::string& where,
                   ChatSample& sample) const;
  int32_t bos_, eos_, user_, assistant_;
};

// The conversations of JSONL files (globs expanded, in order; .gz / .zst too), rendered.
// InputError naming file, line and key: a line that is not an object, no "messages" array, a
// message without a string "role" or "content", an unknown role.
std::vector<ChatSample> read_chat(const std::vector<std::string>& patterns, const Tokenizer& tokenizer);

}  // namespace daedalus::data
