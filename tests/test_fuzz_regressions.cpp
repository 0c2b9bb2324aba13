// Replays through the fuzzed readers (fuzz/targets.h) every seed of fuzz/corpus/<target> and every
// input a fuzzing run crashed on once, checked in under fuzz/regressions/<target> after its fix:
// each must be accepted or refused with an InputError, in this build too (no sanitizer needed for
// most of the crashes found: they were reads past a buffer, unbounded recursion, aborts).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "fuzz/targets.h"

namespace daedalus::fuzz {
namespace {

namespace fs = std::filesystem;

int replay(const std::string& kind) {
  int n = 0;
  for (const char* name : {"config", "llmc", "hdf5_tokens", "checkpoint", "safetensors", "tokenizer"}) {
    const fs::path dir = fs::path(DAEDALUS_SOURCE_DIR) / "fuzz" / kind / name;
    if (!fs::is_directory(dir)) continue;
    for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
      std::ifstream in(e.path(), std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      SCOPED_TRACE(e.path().string());
      EXPECT_NO_THROW(target(name)(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
      ++n;
    }
  }
  return n;
}

TEST(FuzzRegressions, SeedCorporaReadOrAreRefused) { EXPECT_GE(replay("corpus"), 9); }

TEST(FuzzRegressions, EveryCrashInputFoundSoFarIsHandled) { replay("regressions"); }

}  // namespace
}  // namespace daedalus::fuzz
