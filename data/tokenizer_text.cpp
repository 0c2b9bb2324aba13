// Text handling under the tokenizer: UTF-8 validation and lossy repair, NFC (ICU), and GPT-2's
// byte-level alphabet.
//
// NFC goes through ICU's Normalizer2 (Debian libicu-dev): the reference implementation of the
// Unicode algorithms, with a UTF-8 interface and a quick check that lets text already in NFC
// (almost all text) pass without a copy. ICU 72 implements Unicode 15.
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <cstring>

#include "autograd/check.h"
#include "data/tokenizer_internal.h"

namespace daedalus::data::detail {

namespace {

// Length of the well-formed sequence at s[0..n) (1..4), or 0 with *bad = length of the maximal
// ill-formed subpart to replace (>= 1). Table 3-7 of the Unicode Standard.
int sequence_length(const uint8_t* s, size_t n, int* bad) {
  const uint8_t b = s[0];
  if (b < 0x80) return 1;
  int need;
  uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *bad = 1;  // 80..C1, F5..FF never start a sequence
    return 0;
  }
  for (int i = 1; i <= need; ++i) {
    const uint8_t lower = i == 1 ? lo : 0x80, upper = i == 1 ? hi : 0xBF;
    if (size_t(i) >= n || s[i] < lower || s[i] > upper) {
      *bad = i;  // the lead byte and the continuation bytes that fit so far
      return 0;
    }
  }
  return need + 1;
}

}  // namespace

bool is_valid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // ASCII runs eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if (word & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    int bad = 0;
    const int len = sequence_length(s + i, n - i, &bad);
    if (len == 0) return false;
    i += size_t(len);
  }
  return true;
}

std::string replace_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  std::string out;
  out.reserve(n + 16);
  size_t i = 0;
  while (i < n) {
    int bad = 0;
    const int len = sequence_length(s + i, n - i, &bad);
    if (len > 0) {
      out.append(text.data() + i, size_t(len));
      i += size_t(len);
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += size_t(bad);
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
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

bool nfc(std::string_view text, std::string& out) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = icu::Normalizer2::getNFCInstance(status);
  DAEDALUS_CHECK(U_SUCCESS(status), "NFC: ICU has no NFC data: {}", u_errorName(status));
  const icu::StringPiece piece(text.data(), int32_t(text.size()));
  if (normalizer->isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return false;
  status = U_ZERO_ERROR;
  out.clear();
  icu::StringByteSink<std::string> sink(&out, int32_t(text.size()));
  normalizer->normalizeUTF8(0, piece, sink, nullptr, status);
  DAEDALUS_CHECK(U_SUCCESS(status), "NFC: ICU normalization failed: {}", u_errorName(status));
  return true;
}

namespace {

// bytes_to_unicode: bytes 33..126, 161..172 and 174..255 stand for themselves; the remaining 68
// bytes (controls, space, DEL, NBSP, soft hyphen) take U+0100, U+0101, ... in increasing order.
struct ByteAlphabet {
  std::array<uint32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{};  // every character is below U+0100 + 68
  ByteAlphabet() {
    to_byte.fill(-1);
    uint32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_char[size_t(b)] = printable ? uint32_t(b) : next++;
      to_byte[to_char[size_t(b)]] = int16_t(b);
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet table;
  return table;
}

}  // namespace

uint32_t byte_char(uint8_t byte) { return alphabet().to_char[byte]; }

int char_byte(uint32_t cp) { return cp < alphabet().to_byte.size() ? alphabet().to_byte[cp] : -1; }

}  // namespace daedalus::data::detail
