// The fuzzed readers (see targets.h).
#include "fuzz/targets.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "data/source.h"
#include "data/tokenizer.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/safetensors.h"

namespace daedalus::fuzz {

namespace {

// The input as a file, for readers that take a path: one file per process and kind, rewritten for
// every input.
std::string input_file(const uint8_t* data, size_t size, const char* suffix) {
  const std::string path = "/tmp/daedalus-fuzz-" + std::to_string(::getpid()) + suffix;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

void read_some(const data::TokenSource& source) {
  std::vector<int32_t> tokens(size_t(std::min<int64_t>(source.size(), 1 << 16)));
  source.read(0, int64_t(tokens.size()), tokens.data());
  source.describe();
}

}  // namespace

void config(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const train::RunConfig c = train::parse_config(text, {}, "fuzz.yaml");
    // What loads writes back as YAML that loads to the same text again.
    const std::string yaml = train::to_yaml(c);
    if (train::to_yaml(train::parse_config(yaml, {}, "again.yaml")) != yaml) __builtin_trap();
  } catch (const InputError&) {
  }
}

void llmc(const uint8_t* data, size_t size) {
  const std::string path = input_file(data, size, ".bin");
  try {
    read_some(*data::open_llmc({path}));
  } catch (const InputError&) {
  }
}

void hdf5_tokens(const uint8_t* data, size_t size) {
  const std::string path = input_file(data, size, ".h5");
  try {
    read_some(*data::open_hdf5({path}));
  } catch (const InputError&) {
  }
}

void checkpoint(const uint8_t* data, size_t size) {
  const std::string path = input_file(data, size, ".ckpt.h5");
  static std::FILE* sink = std::fopen("/dev/null", "w");
  train::inspect_checkpoint(path, sink);  // a verdict for any file: it throws nothing
}

void safetensors(const uint8_t* data, size_t size) {
  const std::string path = input_file(data, size, ".safetensors");
  try {
    read_safetensors(path);
    read_safetensors_metadata(path);
  } catch (const InputError&) {
  }
}

void tokenizer(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  try {
    const data::Tokenizer t = data::Tokenizer::from_json(json);
    // Whatever loads encodes and decodes any text: scripts, digits, whitespace runs, invalid UTF-8.
    static const std::string sample = "Hello, world! 12345 \u4f60\u597d \u0645\u0631\u062d\u0628\u0627 \U0001F642\n\tf(x) =  y; \xff\xfe";
    t.decode(t.encode(sample));
  } catch (const InputError&) {
  }
}

Target target(std::string_view name) {
  if (name == "config") return config;
  if (name == "llmc") return llmc;
  if (name == "hdf5_tokens") return hdf5_tokens;
  if (name == "checkpoint") return checkpoint;
  if (name == "safetensors") return safetensors;
  if (name == "tokenizer") return tokenizer;
  return nullptr;
}

}  // namespace daedalus::fuzz
