// Regex splits of the pre-tokenizer: tokenizer.json patterns compiled with PCRE2, and the split
// behaviors of HuggingFace tokenizers (removed, isolated, merged with previous / next, contiguous).
//
// tokenizers compiles its patterns with Oniguruma. Where the two engines read an escape
// differently, the pattern is rewritten to Oniguruma's meaning before PCRE2 sees it:
//   \s   Oniguruma: the White_Space property. PCRE2 (UCP): that plus U+180E. -> an explicit class
//   \S   its complement (outside a class; inside one it cannot be spelled: refused)
//   \v   Oniguruma: the vertical tab U+000B. PCRE2: any vertical space.     -> \x{0B}
//   \uHHHH  Oniguruma's code point escape.                                   -> \x{HHHH}
// \w \W \d \D \b \B \h \H (Unicode meanings differ between the engines, or unlike letters) and
// escapes not listed in supported_escape are refused with the pattern's JSON path.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

#include <cstring>

#include "autograd/check.h"
#include "data/tokenizer_internal.h"

namespace daedalus::data::detail {

namespace {

// Oniguruma's \s under Unicode: the White_Space property, as class items.
constexpr const char* kWhiteSpaceItems =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

bool supported_escape(char c) {
  // Literal punctuation, control escapes, properties, hex escapes.
  return std::strchr("\\/.^$|?*+()[]{}-'\"#&~!%,:;<=>@_` prnt fae0xP", c) != nullptr;
}

// Rewrites an Oniguruma pattern for PCRE2 (see the file comment); `where` names it in errors.
std::string translate(std::string_view pattern, const std::string& where) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '[') {
      DAEDALUS_CHECK(!in_class, "{}: regex {:?}: a nested character class at byte {} is not supported", where, pattern,
                     i);
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      DAEDALUS_CHECK(i + 1 >= pattern.size() || pattern[i + 1] != ']',
                     "{}: regex {:?}: a class starting with ']' at byte {} is read differently by Oniguruma; "
                     "escape it",
                     where, pattern, i);
      continue;
    }
    if (c == ']' && in_class) {
      in_class = false;
      out += c;
      continue;
    }
    if (c != '\\') {
      out += c;
      continue;
    }
    DAEDALUS_CHECK(i + 1 < pattern.size(), "{}: regex {:?} ends with a lone backslash", where, pattern);
    const char e = pattern[++i];
    switch (e) {
      case 's': out += in_class ? std::string(kWhiteSpaceItems) : fmt::format("[{}]", kWhiteSpaceItems); break;
      case 'S':
        DAEDALUS_CHECK(!in_class, "{}: regex {:?}: \\S inside a character class is not supported", where, pattern);
        out += fmt::format("[^{}]", kWhiteSpaceItems);
        break;
      case 'v': out += "\\x{0B}"; break;
      case 'u': {
        DAEDALUS_CHECK(i + 4 < pattern.size() && std::isxdigit(uint8_t(pattern[i + 1])) &&
                           std::isxdigit(uint8_t(pattern[i + 2])) && std::isxdigit(uint8_t(pattern[i + 3])) &&
                           std::isxdigit(uint8_t(pattern[i + 4])),
                       "{}: regex {:?}: \\u needs four hex digits (byte {})", where, pattern, i);
        out += fmt::format("\\x{{{}}}", pattern.substr(i + 1, 4));
        i += 4;
        break;
      }
      default:
        DAEDALUS_CHECK(supported_escape(e),
                       "{}: regex {:?}: the escape \\{} is not supported (its meaning differs between Oniguruma, "
                       "which tokenizers uses, and PCRE2)",
                       where, pattern, e);
        out += '\\';
        out += e;
    }
  }
  DAEDALUS_CHECK(!in_class, "{}: regex {:?}: unterminated character class", where, pattern);
  return out;
}

}  // namespace

Regex::Regex(std::string_view pattern, bool literal, const std::string& where) {
  DAEDALUS_CHECK(is_valid_utf8(pattern), "{}: the pattern is not valid UTF-8", where);
  const std::string source = literal ? std::string(pattern) : translate(pattern, where);
  int error = 0;
  PCRE2_SIZE offset = 0;
  const uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u);
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options, &error, &offset, nullptr);
  DAEDALUS_CHECK(code != nullptr, "{}: regex {:?} does not compile (PCRE2, at byte {}): {}", where, pattern, offset,
                 pcre2_message(error));
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;  // interpreted where JIT is unavailable
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

MatchState::MatchState() {
  data_ = pcre2_match_data_create(1, nullptr);
  context_ = pcre2_match_context_create(nullptr);
  // The JIT stack grows to 64 MiB: enough for a backtracking match over megabytes of one class.
  stack_ = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
  DAEDALUS_CHECK(data_ != nullptr && context_ != nullptr && stack_ != nullptr, "PCRE2: out of memory");
  pcre2_jit_stack_assign(static_cast<pcre2_match_context*>(context_), nullptr, static_cast<pcre2_jit_stack*>(stack_));
}

MatchState::~MatchState() {
  pcre2_jit_stack_free(static_cast<pcre2_jit_stack*>(stack_));
  pcre2_match_context_free(static_cast<pcre2_match_context*>(context_));
  pcre2_match_data_free(static_cast<pcre2_match_data*>(data_));
}

void MatchState::find_all(const Regex& regex, std::string_view text,
                          std::vector<std::pair<int64_t, int64_t>>& matches) {
  auto* code = static_cast<const pcre2_code*>(regex.code());
  auto* data = static_cast<pcre2_match_data*>(data_);
  auto* context = static_cast<pcre2_match_context*>(context_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t pos = 0;
  int64_t last_end = -1;
  while (pos <= n) {
    int rc = regex.jit() ? pcre2_jit_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, data, context)
                         : pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK, data, context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // the interpreter keeps its backtracking on the heap
      rc = pcre2_match(code, subject, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data, context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error(fmt::format("PCRE2 match failed on {} bytes of text: {}", n, pcre2_message(rc)));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const auto begin = int64_t(ovector[0]), end = int64_t(ovector[1]);
    if (begin == end && end == last_end) {  // an empty match right after the last one: step one character
      if (size_t(end) >= n) break;
      pos = size_t(end) + 1;
      while (pos < n && (uint8_t(text[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    matches.emplace_back(begin, end);
    last_end = end;
    pos = size_t(end);
  }
}

void apply_split(const SplitStep& step, std::string_view piece, MatchState& state,
                 std::vector<std::pair<int64_t, int64_t>>& scratch, std::vector<std::string_view>& out) {
  scratch.clear();
  state.find_all(*step.regex, piece, scratch);
  const int64_t n = int64_t(piece.size());
  // tokenizers' find_matches: alternating [begin, end) spans covering the piece, each flagged as a
  // match or not (an empty match is a span of its own); inverted, the flags swap.
  struct Span {
    int64_t begin, end;
    bool match;
  };
  thread_local std::vector<Span> spans;
  spans.clear();
  int64_t prev = 0;
  for (const auto& [begin, end] : scratch) {
    if (prev != begin) spans.push_back({prev, begin, step.invert});
    spans.push_back({begin, end, !step.invert});
    prev = end;
  }
  if (prev != n) spans.push_back({prev, n, step.invert});

  auto emit = [&](int64_t begin, int64_t end) {
    if (end > begin) out.push_back(piece.substr(size_t(begin), size_t(end - begin)));
  };
  switch (step.behavior) {
    case SplitBehavior::removed:
      for (const Span& s : spans)
        if (!s.match) emit(s.begin, s.end);
      break;
    case SplitBehavior::isolated:
      for (const Span& s : spans) emit(s.begin, s.end);
      break;
    case SplitBehavior::contiguous:
    case SplitBehavior::merged_with_previous: {
      // contiguous: a match extends a preceding match; merged_with_previous: a preceding non-match.
      const bool join_match = step.behavior == SplitBehavior::contiguous;
      int64_t begin = -1, end = -1;
      bool previous_match = false;
      for (const Span& s : spans) {
        if (s.match && begin >= 0 && previous_match == join_match) {
          end = s.end;
        } else {
          if (begin >= 0) emit(begin, end);
          begin = s.begin;
          end = s.end;
        }
        previous_match = s.match;
      }
      if (begin >= 0) emit(begin, end);
      break;
    }
    case SplitBehavior::merged_with_next: {
      // Right to left: a match extends the non-match that follows it.
      thread_local std::vector<std::pair<int64_t, int64_t>> merged;
      merged.clear();
      bool previous_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const Span& s = spans[k];
        if (s.match && !previous_match && !merged.empty())
          merged.back().first = s.begin;
        else
          merged.emplace_back(s.begin, s.end);
        previous_match = s.match;
      }
      for (size_t k = merged.size(); k-- > 0;) emit(merged[k].first, merged[k].second);
      break;
    }
  }
}

}  // namespace daedalus::data::detail
