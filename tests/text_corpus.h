// A deterministic mixed-script corpus for the tokenizer checks (tests, bench, fixture script):
// documents mixing English, CJK (Han, kana, Hangul), Arabic with diacritics, Cyrillic, Greek,
// Devanagari, emoji (ZWJ sequences, skin tones, flags), digit runs (ASCII, Arabic-Indic,
// fullwidth, superscripts, Roman numerals), whitespace runs (tabs, CR/LF, NBSP, U+3000, U+0085,
// U+180E, U+2028), source code, decomposed accents (NFC changes them), tokenizer special-token
// strings, and invalid UTF-8 bytes (overlongs, surrogates, truncated and stray bytes).
// The same (bytes, seed) gives the same documents on every machine: a splitmix64 stream drives
// every choice, no std:: distributions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace daedalus::testing {

// Documents totalling at least `bytes` bytes (each document 1 byte .. ~8 KB).
std::vector<std::string> mixed_text_corpus(int64_t bytes, uint64_t seed);

// FNV-1a (64-bit) over the ids as little-endian uint32, in order: the fingerprint that
// tests/tokenizer/make_fixtures.py computes from tokenizers' ids.
uint64_t fnv1a_ids(const std::vector<int32_t>& ids, uint64_t hash = 0xcbf29ce484222325ull);

}  // namespace daedalus::testing
