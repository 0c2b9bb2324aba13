// libFuzzer entry point for daedalus::fuzz::safetensors (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  daedalus::fuzz::safetensors(data, size);
  return 0;
}
