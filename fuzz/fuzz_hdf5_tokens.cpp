// libFuzzer entry point for daedalus::fuzz::hdf5_tokens (fuzz/targets.h).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  daedalus::fuzz::hdf5_tokens(data, size);
  return 0;
}
