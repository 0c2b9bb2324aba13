// Chat data for fine-tuning: DeepSeek-V3's format and which tokens carry loss, packing into
// windows, the masked loss against a hand-computed reference, and packed samples under the
// document mask giving each sample's loss alone.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "autograd/check.h"
#include "autograd/tape.h"
#include "data/chat.h"
#include "data/loader.h"
#include "data/packing.h"
#include "model/causal_lm.h"
#include "tests/model_testing.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using data::ChatMessage;
using data::ChatSample;

const std::string kTokenizer = std::string(DAEDALUS_SOURCE_DIR) + "/tests/tokenizer/deepseek/tokenizer.json";

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Two turns: the tokens are DeepSeek-V3's rendering, and exactly the assistant's content and the
// EOS after each of its turns carry loss.
TEST(Chat, TwoTurnConversationLossPositions) {
  const data::Tokenizer tok = data::Tokenizer::load(kTokenizer);
  data::Encoder enc(tok);
  const data::ChatFormat format(tok);
  const std::vector<ChatMessage> messages = {{"system", "Be brief."},
                                             {"user", "What is 2+2?"},
                                             {"assistant", "4."},
                                             {"user", "And 3+3?"},
                                             {"assistant", "6, of course."}};
  const ChatSample s = format.render(messages, enc, "test");
  const int32_t bos = *tok.bos_id(), eos = *tok.eos_id(), user = *tok.token_id("<｜User｜>"),
                assistant = *tok.token_id("<｜Assistant｜>");
  const auto sys = enc.encode("Be brief."), u1 = enc.encode("What is 2+2?"), a1 = enc.encode("4."),
             u2 = enc.encode("And 3+3?"), a2 = enc.encode("6, of course.");
  const std::vector<int32_t> expected =
      concat({{bos}, sys, {user}, u1, {assistant}, a1, {eos}, {user}, u2, {assistant}, a2, {eos}});
  ASSERT_EQ(s.ids, expected);
  // The same ids as encoding the rendered template text in one piece (the special tokens split it).
  EXPECT_EQ(s.ids,
            enc.encode("<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜>4."
                       "<｜end▁of▁sentence｜><｜User｜>And 3+3?<｜Assistant｜>6, of course.<｜end▁of▁sentence｜>"));
  // Loss positions, by hand: a1 and its EOS start after BOS, sys, <User>, u1, <Assistant>.
  std::vector<uint8_t> loss(expected.size(), 0);
  const size_t a1_at = 1 + sys.size() + 1 + u1.size() + 1;
  for (size_t i = 0; i <= a1.size(); ++i) loss[a1_at + i] = 1;
  const size_t a2_at = a1_at + a1.size() + 1 + 1 + u2.size() + 1;
  for (size_t i = 0; i <= a2.size(); ++i) loss[a2_at + i] = 1;
  EXPECT_EQ(s.loss, loss);

  // Packed into one window: target t is token t + 1, kept exactly where token t + 1 carries loss.
  const data::PackedWindows w = data::pack_samples({s}, 64, eos);
  ASSERT_EQ(w.count, 1);
  std::vector<int64_t> loss_positions, expected_positions;
  for (int64_t t = 0; t < 64; ++t)
    if (w.targets[size_t(t)] != -100) loss_positions.push_back(t);
  for (size_t t = 0; t + 1 < expected.size(); ++t)
    if (loss[t + 1]) expected_positions.push_back(int64_t(t));
  EXPECT_EQ(loss_positions, expected_positions);
  EXPECT_EQ(w.loss_tokens, int64_t(a1.size() + a2.size() + 2));
  // The generation prompt ends with <｜Assistant｜>.
  const auto prompt = format.prompt({{"user", "Hi"}}, enc);
  EXPECT_EQ(prompt, concat({{bos}, {user}, enc.encode("Hi"), {assistant}}));
}

TEST(Chat, BadRecordsNameFileLineAndKey) {
  const data::Tokenizer tok = data::Tokenizer::load(kTokenizer);
  const auto dir = std::filesystem::temp_directory_path() / ("daedalus-chat-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "chat.jsonl").string();
  const std::string good = R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[]", "chat.jsonl:2: expected a JSON object"},
      {R"({"msgs": []})", "chat.jsonl:2: messages: expected an array"},
      {R"({"messages": [{"role": "tool", "content": "x"}]})", "chat.jsonl:2: messages[0].role: unknown role \"tool\""},
      {R"({"messages": [{"role": "user"}]})", "chat.jsonl:2: messages[0].content: expected a string"},
      {R"({"messages": [{"role": "user", "content": "x"}]})", "chat.jsonl:2: messages: no assistant message"},
  };
  for (const auto& [line, words] : cases) {
    std::ofstream(path) << good << "\n" << line << "\n";
    EXPECT_TRUE(testing::mentions(testing::error_of([&] { data::read_chat({path}, tok); }), {words})) << line;
  }
  std::filesystem::remove_all(dir);
}

// ---- the loss -------------------------------------------------------------------------------------

model::LmOptions small_lm() {
  model::LmOptions o;
  o.config = testing::small_model_config();  // vocab 37, a dense and an MoE layer, MTP depth 1
  o.recipes = testing::recipes_of("fp32");
  o.seed = 7;
  return o;
}

// A sample of n ids in [1, 37) whose second half carries loss (an "assistant answer").
ChatSample sample(int64_t n, uint64_t seed) {
  Generator gen(seed);
  ChatSample s;
  for (int64_t i = 0; i < n; ++i) {
    s.ids.push_back(int32_t(1 + gen.next_u64() % 36));
    s.loss.push_back(i >= n / 2);
  }
  return s;
}

Tensor as_i64(const std::vector<int32_t>& v, int64_t rows, int64_t cols) {
  return Tensor::from_vector(std::vector<int64_t>(v.begin(), v.end()), {rows, cols});
}

// The masked LM loss is the mean over the loss-carrying positions of -log softmax(logits)[target],
// recomputed here in double from the model's fp32 logits (the kernel sums in double too: agreement
// to ~1e-7; 1e-6 relative is the bound). An all-masked window gives 0 and zero gradients.
TEST(Chat, MaskedLossEqualsHandComputedMean) {
  model::CausalLM lm(small_lm());
  const data::PackedWindows w = data::pack_samples({sample(13, 1)}, 16, 0);
  const Tensor inputs = as_i64(w.inputs, 1, 16), targets = as_i64(w.targets, 1, 16);
  const Tensor positions = as_i64(w.positions, 1, 16);
  const double got = lm.forward(inputs, targets, positions).lm_loss.value().item();

  NoGradGuard no_grad;
  const std::vector<double> logits = lm.logits(inputs).value().to_doubles();  // [1, 16, 37]
  double sum = 0;
  int n = 0;
  for (int64_t t = 0; t < 16; ++t) {
    const int32_t target = w.targets[size_t(t)];
    if (target == -100) continue;
    const double* row = logits.data() + t * 37;
    double m = row[0];
    for (int v = 1; v < 37; ++v) m = std::max(m, row[v]);
    double z = 0;
    for (int v = 0; v < 37; ++v) z += std::exp(row[v] - m);
    sum += m + std::log(z) - row[target];
    ++n;
  }
  ASSERT_EQ(n, 7);  // tokens 6..12 of 13 carry loss: targets at positions 5..11
  EXPECT_NEAR(got, sum / n, 1e-6 * std::abs(sum / n));
}

TEST(Chat, AllMaskedWindowContributesNothing) {
  model::CausalLM lm(small_lm());
  const Tensor inputs = as_i64(std::vector<int32_t>(16, 3), 1, 16);
  const Tensor targets = Tensor::full({1, 16}, -100.0, DType::i64);
  const model::LmOutput out = lm.forward(inputs, targets);
  EXPECT_EQ(out.lm_loss.value().item(), 0.0);
  backward(out.lm_loss);
  for (const model::Parameter& p : lm.parameters().all()) {
    if (!p.var.grad().defined()) continue;
    for (double g : p.var.grad().to_doubles()) ASSERT_EQ(g, 0.0) << p.name;  // no NaN from 0 / 0
  }
}

// Three samples packed in one window with the document mask give each sample's loss as when it
// runs alone (its own sequence, positions from 0). fp32: the two runs sum the same products in
// GEMMs of other shapes, ~1e-7 apart; the bound is 1e-6. Without the mask the later samples see
// the earlier ones and move by far more.
TEST(Chat, PackedWithDocumentMaskEqualsEachSampleAlone) {
  model::CausalLM lm(small_lm());
  const std::vector<ChatSample> samples = {sample(9, 2), sample(14, 3), sample(6, 4)};
  const int64_t T = 32;
  const data::PackedWindows w = data::pack_samples(samples, T, 0);
  ASSERT_EQ(w.count, 1);  // 8 + 13 + 5 = 26 positions fit in one window
  const Tensor inputs = as_i64(w.inputs, 1, T), positions = as_i64(w.positions, 1, T);
  NoGradGuard no_grad;
  int64_t begin = 0;
  for (size_t k = 0; k < samples.size(); ++k) {
    const int64_t n = int64_t(samples[k].ids.size()) - 1;
    // Packed: only sample k's targets kept.
    std::vector<int32_t> targets(size_t(T), -100);
    for (int64_t t = begin; t < begin + n; ++t) targets[size_t(t)] = w.targets[size_t(t)];
    const double packed = lm.forward(inputs, as_i64(targets, 1, T), positions).lm_loss.value().item();
    const double unmasked = lm.forward(inputs, as_i64(targets, 1, T)).lm_loss.value().item();
    // Alone.
    const data::PackedWindows alone = data::pack_samples({samples[k]}, n, 0);
    const double single = lm.forward(as_i64(alone.inputs, 1, n), as_i64(alone.targets, 1, n)).lm_loss.value().item();
    EXPECT_NEAR(packed, single, 1e-6 * std::max(1.0, std::abs(single))) << "sample " << k;
    if (k > 0) {
      EXPECT_GT(std::abs(unmasked - single), 1e-3) << "sample " << k << " without the mask";
    }
    begin += n;
  }
}

// Packing: a sample that does not fit in what is left starts a new window; one longer than a
// window is cut into window-sized pieces; positions restart per sample, piece and padding.
TEST(Chat, PackingKeepsSamplesWholeWhereTheyFit) {
  const std::vector<ChatSample> samples = {sample(5, 1), sample(5, 2), sample(4, 3), sample(20, 4), sample(1, 5)};
  const data::PackedWindows w = data::pack_samples(samples, 8, 99);
  // [s0: 4 positions | s1: 4] [s2: 3 | pad 5] [s3: 8] [s3: 8] [s3: 3 | pad 5]; s4 (one token) gives nothing.
  ASSERT_EQ(w.count, 5);
  EXPECT_EQ(w.samples, 4);
  EXPECT_EQ(w.split_samples, 1);
  const std::vector<int32_t> positions = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 3,
                                          4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 0, 1, 2, 3, 4};
  EXPECT_EQ(w.positions, positions);
  EXPECT_EQ(w.inputs[11], 99);     // padding input
  EXPECT_EQ(w.targets[11], -100);  // padding target
  EXPECT_EQ(w.inputs[16], samples[3].ids[0]);
  EXPECT_EQ(w.inputs[24], samples[3].ids[8]);  // the second piece continues the sample's tokens

  // The loader serves windows with their positions, every window once per epoch.
  data::LoaderOptions o;
  o.seq_len = 8;
  o.global_batch = 5;
  data::Loader loader(w, o);
  const data::Batch b = loader.next();
  ASSERT_TRUE(b.positions.defined());
  std::vector<int64_t> firsts;
  for (int64_t i = 0; i < 5; ++i) firsts.push_back(b.inputs.data<int64_t>()[i * 8]);
  std::sort(firsts.begin(), firsts.end());
  std::vector<int64_t> expected = {samples[0].ids[0], samples[2].ids[0], samples[3].ids[0], samples[3].ids[8],
                                   samples[3].ids[16]};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(firsts, expected);
  EXPECT_EQ(b.loss_tokens(), w.loss_tokens);
}

}  // namespace
}  // namespace daedalus
