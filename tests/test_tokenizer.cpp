// The byte-level BPE tokenizer against HuggingFace tokenizers (ids committed in
// tests/tokenizer/expected.json by make_fixtures.py), plus hand-checked pieces: UTF-8 repair,
// split behaviors, merge order, decoding, and the errors for bad or unsupported tokenizer.json.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/check.h"
#include "data/tokenizer.h"
#include "data/tokenizer_internal.h"
#include "tests/text_corpus.h"

namespace daedalus::data {
namespace {

std::string fixture(const std::string& name) { return std::string(DAEDALUS_SOURCE_DIR) + "/tests/tokenizer/" + name; }

const nlohmann::json& expected() {
  static const nlohmann::json value = [] {
    std::ifstream in(fixture("expected.json"));
    return nlohmann::json::parse(in);
  }();
  return value;
}

// Message of the InputError that fn throws ("" when it throws none).
template <typename Fn>
std::string input_error(Fn&& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// A tiny tokenizer.json: ByteLevel (no regex) over bytes 'a'..'d' and ' ' (as 'Ġ'), given merges.
std::string tiny_json(const std::string& merges, const std::string& extra_vocab = "",
                      const std::string& pre = R"({"type":"ByteLevel","add_prefix_space":false,"use_regex":false})") {
  return R"({"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,)"
         R"("pre_tokenizer":)" +
         pre +
         R"(,"post_processor":null,"decoder":{"type":"ByteLevel"},)"
         R"("model":{"type":"BPE","dropout":null,"unk_token":null,"vocab":{"a":0,"b":1,"c":2,"d":3,"Ġ":4)" +
         extra_vocab + R"(},"merges":[)" + merges + "]}}";
}

class TokenizerFixture : public ::testing::TestWithParam<std::string> {};

// Every document of the small corpus (20 kB: every generator branch) gives tokenizers' ids.
TEST_P(TokenizerFixture, SmallCorpusIdsEqualHuggingFace) {
  const Tokenizer tok = Tokenizer::load(fixture(GetParam() + "/tokenizer.json"));
  const auto& exp = expected();
  EXPECT_EQ(tok.vocab_size(), exp[GetParam()]["vocab_size"].get<int64_t>());
  const auto docs = testing::mixed_text_corpus(exp["small"]["bytes"], exp["small"]["seed"]);
  const auto& ids = exp[GetParam()]["small_ids"];
  ASSERT_EQ(docs.size(), ids.size());
  Encoder encoder(tok);
  for (size_t d = 0; d < docs.size(); ++d)
    ASSERT_EQ(encoder.encode(docs[d]), ids[d].get<std::vector<int32_t>>()) << "document " << d << ": " << docs[d];
}

// The 10 MB corpus: the count and FNV-1a hash of all ids equal tokenizers'; and for the DeepSeek
// pipeline (no normalizer, no prefix space) decoding gives each valid UTF-8 document back.
TEST_P(TokenizerFixture, LargeCorpusIdsEqualHuggingFaceAndRoundTrip) {
  const Tokenizer tok = Tokenizer::load(fixture(GetParam() + "/tokenizer.json"));
  const auto& exp = expected();
  const auto docs = testing::mixed_text_corpus(exp["large"]["bytes"], exp["large"]["seed"]);
  Encoder encoder(tok);
  std::vector<int32_t> ids;
  uint64_t hash = 0xcbf29ce484222325ull;
  int64_t count = 0, bytes = 0, round_trips = 0;
  double seconds = 0;
  for (const std::string& doc : docs) {
    ids.clear();
    const auto t0 = std::chrono::steady_clock::now();
    encoder.encode(doc, ids);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    hash = testing::fnv1a_ids(ids, hash);
    count += int64_t(ids.size());
    bytes += int64_t(doc.size());
    if (GetParam() == "deepseek" && detail::is_valid_utf8(doc)) {
      ASSERT_EQ(tok.decode(ids), doc);
      ++round_trips;
    }
  }
  EXPECT_GE(bytes, 10'000'000);
  EXPECT_EQ(count, exp[GetParam()]["large_tokens"].get<int64_t>());
  EXPECT_EQ(fmt::format("{:016x}", hash), exp[GetParam()]["large_fnv1a"].get<std::string>());
  if (GetParam() == "deepseek") {
    EXPECT_GT(round_trips, int64_t(docs.size()) / 3);
  }
  std::printf("%s: %ld bytes, %zu documents -> %ld tokens in %.2f s (%.1f MB/s, one thread)\n", GetParam().c_str(),
              long(bytes), docs.size(), long(count), seconds, double(bytes) / seconds / 1e6);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerFixture, ::testing::Values("deepseek", "gpt2"));

TEST(Tokenizer, ConfigGivesBosEosAndSpecialTokens) {
  const Tokenizer tok = Tokenizer::load(fixture("deepseek/tokenizer.json"));
  ASSERT_TRUE(tok.bos_id() && tok.eos_id());
  EXPECT_EQ(*tok.bos_id(), *tok.token_id("<｜begin▁of▁sentence｜>"));
  EXPECT_EQ(*tok.eos_id(), *tok.token_id("<｜end▁of▁sentence｜>"));
  EXPECT_TRUE(tok.is_special(*tok.eos_id()));
  // A special token in text is one id, decodes to its own UTF-8 and is dropped by skip_special.
  const auto ids = tok.encode("hi<｜User｜>hi");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), *tok.token_id("<｜User｜>")), 1);
  EXPECT_EQ(tok.decode(ids), "hi<｜User｜>hi");
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "hihi");
}

// Replacement of ill-formed UTF-8: one U+FFFD per maximal subpart, as Python's
// bytes.decode("utf-8", "replace") printed for these inputs.
TEST(Tokenizer, InvalidUtf8IsReplacedPerMaximalSubpart) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(detail::replace_invalid_utf8("\xE2\x82 "), r + " ");
  EXPECT_EQ(detail::replace_invalid_utf8("\xED\xA0\x80"), r + r + r);          // a surrogate: ED, A0, 80
  EXPECT_EQ(detail::replace_invalid_utf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(detail::replace_invalid_utf8("\xC0\xAF"), r + r);                  // overlong
  EXPECT_EQ(detail::replace_invalid_utf8("\xF0\x9F\x98x"), r + "x");           // truncated emoji
  EXPECT_EQ(detail::replace_invalid_utf8("\xE2\x82\xAC"), "\xE2\x82\xAC");     // the euro sign is fine
  EXPECT_FALSE(detail::is_valid_utf8("abcdefgh\xFF"));
  EXPECT_TRUE(detail::is_valid_utf8("abcdefgh\xF0\x9F\x98\x80"));
}

// Merges apply lowest rank first, leftmost among equals: "aaaa" with [a a] -> [aa, aa]; with
// [a a, aa a] "aaa" -> [aaa]; and a later-ranked merge loses to an earlier one at an overlap.
TEST(Tokenizer, MergeOrderFollowsRanks) {
  const Tokenizer t1 = Tokenizer::from_json(tiny_json(R"(["a","a"])", R"(,"aa":5)"));
  EXPECT_EQ(t1.encode("aaaa"), (std::vector<int32_t>{5, 5}));
  EXPECT_EQ(t1.encode("aaa"), (std::vector<int32_t>{5, 0}));
  const Tokenizer t2 = Tokenizer::from_json(tiny_json(R"(["a","a"],["aa","a"])", R"(,"aa":5,"aaa":6)"));
  EXPECT_EQ(t2.encode("aaa"), (std::vector<int32_t>{6}));
  // "abc": [b c] (rank 0) beats [a b] (rank 1) -> a, bc.
  const Tokenizer t3 = Tokenizer::from_json(tiny_json(R"("b c","a b")", R"(,"bc":5,"ab":6)"));
  EXPECT_EQ(t3.encode("abc"), (std::vector<int32_t>{0, 5}));
  EXPECT_EQ(t3.decode({0, 5, 4}), "abc ");
}

// Split behaviors on "a1b22c" with \d-free pattern \p{N}+ (hand-derived from tokenizers' rules).
TEST(Tokenizer, SplitBehaviors) {
  auto pieces = [](const std::string& behavior, bool invert) {
    const std::string pre = R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\p{N}+"},)"
                            R"("behavior":")" +
                            behavior + R"(","invert":)" + (invert ? "true" : "false") +
                            R"(},{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]})";
    // Each piece's bytes become single-byte tokens (no merges): decode each id and mark the gaps
    // by encoding piece by piece through the split step directly.
    const Tokenizer tok = Tokenizer::from_json(tiny_json("", R"(,"1":5,"2":6)", pre));
    detail::MatchState state;
    std::vector<std::pair<int64_t, int64_t>> scratch;
    std::vector<std::string_view> out;
    detail::apply_split(tok.model().pre_tokenizer[0], "a1b22c", state, scratch, out);
    std::string joined;
    for (auto p : out) joined += std::string(p) + "|";
    return joined;
  };
  EXPECT_EQ(pieces("Isolated", false), "a|1|b|22|c|");
  EXPECT_EQ(pieces("Removed", false), "a|b|c|");
  EXPECT_EQ(pieces("MergedWithPrevious", false), "a1|b22|c|");
  EXPECT_EQ(pieces("MergedWithNext", false), "a|1b|22c|");
  EXPECT_EQ(pieces("Contiguous", false), "a|1|b|22|c|");
  EXPECT_EQ(pieces("Removed", true), "1|22|");
  EXPECT_EQ(pieces("MergedWithPrevious", true), "a|1b|22c|");
}

// \s means Oniguruma's White_Space: U+180E is not in it (PCRE2's \s would take it), U+0085 is.
TEST(Tokenizer, WhitespaceClassFollowsOniguruma) {
  const std::string pre = R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\s+"},)"
                          R"("behavior":"Removed","invert":false},)"
                          R"({"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]})";
  const Tokenizer tok = Tokenizer::from_json(tiny_json("", "", pre));
  detail::MatchState state;
  std::vector<std::pair<int64_t, int64_t>> scratch;
  std::vector<std::string_view> out;
  detail::apply_split(tok.model().pre_tokenizer[0],
                      "a\xC2\x85"
                      "b\xE1\xA0\x8E"
                      "c",
                      state, scratch, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], "a");
  EXPECT_EQ(out[1],
            "b\xE1\xA0\x8E"
            "c");
}

TEST(Tokenizer, BadInputNamesFileAndJsonPath) {
  EXPECT_NE(input_error([] { Tokenizer::from_json("{\"model\": [", "", "x.json"); }).find("x.json: not valid JSON"),
            std::string::npos);
  const std::string wordpiece = tiny_json("");
  std::string bad = wordpiece;
  bad.replace(bad.find("\"BPE\""), 5, "\"WordPiece\"");
  EXPECT_NE(input_error([&] {
              Tokenizer::from_json(bad, "", "t.json");
            }).find("t.json: model.type: model type \"WordPiece\" is not supported"),
            std::string::npos);
  EXPECT_NE(input_error([] {
              Tokenizer::from_json(tiny_json(R"(["a","z"])"), "", "t.json");
            }).find("t.json: model.merges[0]: token \"z\" is not in model.vocab"),
            std::string::npos);
  EXPECT_NE(input_error([] {
              Tokenizer::from_json(tiny_json(R"("a b c")"), "", "t.json");
            }).find("model.merges[0]: expected \"left right\""),
            std::string::npos);
  const std::string word_class = R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\w+"},)"
                                 R"("behavior":"Isolated","invert":false},{"type":"ByteLevel"}]})";
  EXPECT_NE(input_error([&] {
              Tokenizer::from_json(tiny_json("", "", word_class), "", "t.json");
            }).find("t.json: pre_tokenizer.pretokenizers[0].pattern.Regex: regex \"\\\\w+\": the escape \\w"),
            std::string::npos);
  const std::string metaspace = R"({"type":"Metaspace"})";
  EXPECT_NE(input_error([&] {
              Tokenizer::from_json(tiny_json("", "", metaspace), "", "t.json");
            }).find("pre_tokenizer.type: pre-tokenizer \"Metaspace\" is not supported"),
            std::string::npos);
  EXPECT_NE(input_error([] {
              Tokenizer::from_json(tiny_json(""), R"({"eos_token": "<nope>"})", "t.json", "c.json");
            }).find("c.json: eos_token: token \"<nope>\" is not in the tokenizer"),
            std::string::npos);
  EXPECT_NE(input_error([] { Tokenizer::load("/no/such/tokenizer.json"); }).find("/no/such/tokenizer.json"),
            std::string::npos);
  const Tokenizer tok = Tokenizer::from_json(tiny_json(""));
  EXPECT_NE(input_error([&] { tok.decode({0, 99}); }).find("token id 99 is not in the vocabulary"), std::string::npos);
}

}  // namespace
}  // namespace daedalus::data
