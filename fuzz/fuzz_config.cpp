// libFuzzer entry point for daedalus::fuzz::config (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  daedalus::fuzz::config(data, size);
  return 0;
}
