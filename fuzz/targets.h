// The fuzzed readers of untrusted input, one function each (fuzz/README.md). Every function takes
// any bytes and returns normally: the reader either accepts the input or throws InputError, which
// the function catches. A crash, a sanitizer report or another exception is a bug. Called by the
// libFuzzer entry points (fuzz/fuzz_<target>.cpp, scripts/fuzz) and by the unit test that replays
// the seed corpora and every checked-in crash input (tests/test_fuzz_regressions.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace daedalus::fuzz {

void config(const uint8_t* data, size_t size);       // YAML config text -> parse_config, to_yaml round trip
void llmc(const uint8_t* data, size_t size);         // an llm.c token shard -> open_llmc, read
void hdf5_tokens(const uint8_t* data, size_t size);  // an HDF5 token file -> open_hdf5, read
void checkpoint(const uint8_t* data, size_t size);   // a checkpoint -> inspect (probe, verify)
void safetensors(const uint8_t* data, size_t size);  // a safetensors file -> read_safetensors
void tokenizer(const uint8_t* data, size_t size);    // tokenizer.json text -> Tokenizer, encode, decode

// The function for a target name ("config", ...), or nullptr.
using Target = void (*)(const uint8_t*, size_t);
Target target(std::string_view name);

}  // namespace daedalus::fuzz
