// libFuzzer entry point for daedalus::fuzz::llmc (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  daedalus::fuzz::llmc(data, size);
  return 0;
}
