// libFuzzer entry point for daedalus::fuzz::tokenizer (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  daedalus::fuzz::tokenizer(data, size);
  return 0;
}
