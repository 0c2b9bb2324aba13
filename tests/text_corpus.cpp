// The mixed-script corpus (see text_corpus.h).
#include "tests/text_corpus.h"

#include <array>
#include <string_view>

namespace daedalus::testing {

namespace {

class Stream {
 public:
  explicit Stream(uint64_t seed) : state_(seed) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint32_t below(uint64_t n) { return uint32_t(next() % n); }
  uint32_t between(uint32_t lo, uint32_t hi) { return lo + below(uint64_t(hi) - lo + 1); }  // [lo, hi]
  template <typename T, size_t N>
  const T& pick(const std::array<T, N>& items) {
    return items[below(N)];
  }

 private:
  uint64_t state_;
};

void utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

constexpr std::array<std::string_view, 96> kWords = {
    "the",       "of",     "and",     "to",       "in",       "is",          "you",     "that",   "it",     "he",
    "was",       "for",    "on",      "are",      "as",       "with",        "his",     "they",   "I",      "at",
    "be",        "this",   "have",    "from",     "or",       "one",         "had",     "by",     "word",   "but",
    "not",       "what",   "all",     "were",     "we",       "when",        "your",    "can",    "said",   "there",
    "use",       "an",     "each",    "which",    "she",      "do",          "how",     "their",  "if",     "will",
    "up",        "other",  "about",   "out",      "many",     "then",        "them",    "these",  "so",     "some",
    "her",       "would",  "make",    "like",     "him",      "into",        "time",    "has",    "look",   "two",
    "more",      "write",  "go",      "see",      "number",   "no",          "way",     "could",  "people", "my",
    "fortune",   "cookie", "program", "computer", "Einstein", "Shakespeare", "Tuesday", "rhythm", "naïve",  "café",
    "coöperate", "über",   "Zürich",  "façade",   "résumé",   "jalapeño"};
constexpr std::array<std::string_view, 9> kContractions = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL"};
constexpr std::array<std::string_view, 12> kPunct = {".", ",", "!", "?", ";", ":", "...", " -- ", "\"", "(", ")", "'"};
constexpr std::array<std::string_view, 16> kCode = {"int main(int argc, char** argv) {\n",
                                                    "    return std::accumulate(v.begin(), v.end(), 0LL);\n",
                                                    "}\n",
                                                    "def f(x, *args, **kwargs):\n",
                                                    "    return [y**2 for y in range(x) if y % 3 == 0]\n",
                                                    "\tif (a != b && c >= 0x1F) { x <<= 2; }\n",
                                                    "#include <vector>\n",
                                                    "const auto& [k, v] = *it; // comment\n",
                                                    "{\"key\": [1, 2.5e-3, null, true], \"k2\": \"v\\n\"}\n",
                                                    "SELECT id, name FROM users WHERE age > 30;\n",
                                                    "    s = re.sub(r'\\s+', ' ', s)  # collapse\n",
                                                    "fn main() -> Result<(), Box<dyn Error>> {\n",
                                                    "<div class=\"a\">&amp; &lt;b&gt;</div>\n",
                                                    "$ echo \"$HOME\" | tr a-z A-Z > /dev/null 2>&1\n",
                                                    "x_1 = y__2 + __init__ - _z;\n",
                                                    "    ~~~^^^ @@ -1,4 +1,5 @@ ===\n"};
constexpr std::array<std::string_view, 10> kSpecials = {"<｜begin▁of▁sentence｜>",
                                                        "<｜end▁of▁sentence｜>",
                                                        "<｜User｜>",
                                                        "<｜Assistant｜>",
                                                        "<|endoftext|>",
                                                        "<｜User",
                                                        "<|endoftext|",
                                                        "｜>",
                                                        "<｜<｜User｜>｜>",
                                                        "<|endoftext|><|endoftext|>"};
constexpr std::array<std::string_view, 12> kInvalid = {
    "\x80", "\xBF\xBF", "\xC0\xAF",     "\xE2\x82",     "\xED\xA0\x80", "\xF4\x90\x80\x80",
    "\xFF", "\xFE\xFF", "\xF0\x9F\x98", "\xE0\x80\x80", "\xC2",         "\xF8\x88\x80\x80\x80"};
// Decomposed text that NFC composes: e + acute, A + ring, Hangul jamo, ANGSTROM SIGN, OHM SIGN,
// stacked Vietnamese marks, a CJK compatibility ideograph.
constexpr std::array<std::string_view, 8> kDecomposed = {"e\xCC\x81",    "A\xCC\x8A",    "\xE1\x84\x80\xE1\x85\xA1",
                                                         "\xE2\x84\xAB", "\xE2\x84\xA6", "o\xCC\x9B\xCC\x81",
                                                         "\xEF\xA4\x80", "n\xCC\x83o"};
constexpr std::array<uint32_t, 16> kWhite = {' ',  ' ',    ' ',  '\t',   '\n',   '\r',   0x0B,   0x0C,
                                             0xA0, 0x3000, 0x85, 0x180E, 0x2028, 0x2003, 0x200B, 0x1C};

void english(Stream& s, std::string& out) {
  const uint32_t n = s.between(3, 40);
  for (uint32_t i = 0; i < n; ++i) {
    std::string_view w = s.pick(kWords);
    if (i > 0) out += ' ';
    if (s.below(8) == 0) {
      out += char(w[0] >= 'a' && w[0] <= 'z' ? w[0] - 32 : w[0]);
      out += w.substr(1);
    } else if (s.below(40) == 0) {
      for (char c : w) out += char(c >= 'a' && c <= 'z' ? c - 32 : c);
    } else {
      out += w;
    }
    if (s.below(10) == 0) out += s.pick(kContractions);
    if (s.below(7) == 0) out += s.pick(kPunct);
  }
  out += s.below(3) == 0 ? "\n" : ". ";
}

void cjk(Stream& s, std::string& out) {
  const uint32_t n = s.between(1, 60);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t k = s.below(20);
    uint32_t cp;
    if (k < 10)
      cp = s.between(0x4E00, 0x9FA5);  // CJK unified ideographs (DeepSeek's Han range)
    else if (k < 13)
      cp = s.between(0x3041, 0x3096);  // hiragana
    else if (k < 15)
      cp = s.between(0x30A1, 0x30FA);  // katakana
    else if (k < 17)
      cp = s.between(0xAC00, 0xD7A3);  // Hangul syllables
    else if (k < 18)
      cp = s.between(0x3400, 0x4DB5);  // extension A
    else
      cp = std::array<uint32_t, 8>{0x3002, 0x3001, 0x300C, 0x300D, 0xFF01, 0xFF1F, 0x30FC, 0x9FB0}[s.below(8)];
    utf8(out, cp);
  }
}

void arabic(Stream& s, std::string& out) {
  const uint32_t words = s.between(1, 12);
  for (uint32_t w = 0; w < words; ++w) {
    if (w > 0) out += ' ';
    const uint32_t n = s.between(2, 8);
    for (uint32_t i = 0; i < n; ++i) {
      utf8(out, s.between(0x0621, 0x064A));
      if (s.below(4) == 0) utf8(out, s.between(0x064B, 0x0652));  // harakat (combining marks)
    }
    if (s.below(6) == 0) utf8(out, std::array<uint32_t, 4>{0x060C, 0x061F, 0x06D4, 0x0640}[s.below(4)]);
  }
}

void other_scripts(Stream& s, std::string& out) {
  const uint32_t k = s.below(4), n = s.between(2, 20);
  for (uint32_t i = 0; i < n; ++i) {
    if (s.below(6) == 0) out += ' ';
    if (k == 0) utf8(out, s.between(0x0430, 0x044F));  // Cyrillic
    if (k == 1) utf8(out, s.between(0x03B1, 0x03C9));  // Greek
    if (k == 2) {                                      // Devanagari with vowel signs and virama
      utf8(out, s.between(0x0915, 0x0939));
      if (s.below(2) == 0) utf8(out, s.between(0x093E, 0x094D));
    }
    if (k == 3) utf8(out, s.between(0x0E01, 0x0E30));  // Thai
  }
}

void emoji(Stream& s, std::string& out) {
  const uint32_t n = s.between(1, 6);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t k = s.below(6);
    if (k == 0) {
      utf8(out, s.between(0x1F1E6, 0x1F1FF));  // a flag: two regional indicators
      utf8(out, s.between(0x1F1E6, 0x1F1FF));
    } else if (k == 1) {
      utf8(out, 0x1F468);  // ZWJ family
      utf8(out, 0x200D);
      utf8(out, 0x1F469);
      utf8(out, 0x200D);
      utf8(out, 0x1F467);
    } else if (k == 2) {
      utf8(out, s.between(0x1F44A, 0x1F450));  // hand with a skin tone
      utf8(out, s.between(0x1F3FB, 0x1F3FF));
    } else if (k == 3) {
      utf8(out, 0x2764);  // heart + VS16
      utf8(out, 0xFE0F);
    } else {
      utf8(out, s.between(0x1F300, 0x1F64F));
    }
    if (s.below(3) == 0) out += ' ';
  }
}

void digits(Stream& s, std::string& out) {
  const uint32_t k = s.below(8);
  const uint32_t n = s.between(1, k == 0 ? 60 : 12);
  for (uint32_t i = 0; i < n; ++i) {
    if (k <= 3) out += char('0' + s.below(10));
    if (k == 4) utf8(out, 0x0660 + s.below(10));  // Arabic-Indic
    if (k == 5) utf8(out, 0xFF10 + s.below(10));  // fullwidth
    if (k == 6) utf8(out, std::array<uint32_t, 6>{0xB2, 0xB3, 0xB9, 0x2160, 0x216B, 0x2155}[s.below(6)]);  // No, Nl
    if (k == 7) {
      out += char('0' + s.below(10));
      if (s.below(3) == 0) out += std::array<std::string_view, 4>{".", ",", "e-", "/"}[s.below(4)];
    }
  }
  if (s.below(2) == 0) out += ' ';
}

void whitespace(Stream& s, std::string& out) {
  const uint32_t k = s.below(5);
  const uint32_t n = k == 0 ? s.between(20, 400) : s.between(1, 8);
  for (uint32_t i = 0; i < n; ++i) {
    if (k == 1 && s.below(2) == 0)
      out += "\r\n";
    else
      utf8(out, k == 0 ? uint32_t(" \t\n"[s.below(3)]) : s.pick(kWhite));
  }
}

}  // namespace

std::vector<std::string> mixed_text_corpus(int64_t bytes, uint64_t seed) {
  Stream s(seed);
  std::vector<std::string> docs;
  int64_t total = 0;
  while (total < bytes) {
    std::string doc;
    const uint32_t segments = s.below(16) == 0 ? 1 : s.between(2, 60);
    for (uint32_t i = 0; i < segments; ++i) {
      const uint32_t k = s.below(100);
      if (k < 34)
        english(s, doc);
      else if (k < 46)
        cjk(s, doc);
      else if (k < 52)
        arabic(s, doc);
      else if (k < 58)
        other_scripts(s, doc);
      else if (k < 63)
        emoji(s, doc);
      else if (k < 71)
        digits(s, doc);
      else if (k < 81)
        whitespace(s, doc);
      else if (k < 91)
        doc += s.pick(kCode);
      else if (k < 94)
        doc += s.pick(kDecomposed);
      else if (k < 97)
        doc += s.pick(kSpecials);
      else
        doc += s.pick(kInvalid);
    }
    total += int64_t(doc.size());
    docs.push_back(std::move(doc));
  }
  return docs;
}

uint64_t fnv1a_ids(const std::vector<int32_t>& ids, uint64_t hash) {
  for (const int32_t id : ids) {
    const auto v = uint32_t(id);
    for (int b = 0; b < 4; ++b) {
      hash ^= (v >> (8 * b)) & 0xFF;
      hash *= 0x100000001b3ull;
    }
  }
  return hash;
}

}  // namespace daedalus::testing
