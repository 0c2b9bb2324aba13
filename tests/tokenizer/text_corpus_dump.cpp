// Writes the tokenizer checks' mixed-script corpus for tests/tokenizer/make_fixtures.py:
//   text_corpus_dump OUT BYTES SEED
// OUT holds the documents in order, each as a little-endian uint32 byte length and its bytes.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/text_corpus.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s OUT BYTES SEED\n", argv[0]);
    return 1;
  }
  const auto docs = daedalus::testing::mixed_text_corpus(std::atoll(argv[2]), std::strtoull(argv[3], nullptr, 10));
  std::FILE* f = std::fopen(argv[1], "wb");
  if (f == nullptr) {
    std::perror(argv[1]);
    return 1;
  }
  for (const std::string& doc : docs) {
    const auto n = uint32_t(doc.size());
    const unsigned char len[4] = {uint8_t(n), uint8_t(n >> 8), uint8_t(n >> 16), uint8_t(n >> 24)};
    std::fwrite(len, 1, 4, f);
    std::fwrite(doc.data(), 1, doc.size(), f);
  }
  return std::fclose(f) == 0 ? 0 : 1;
}
