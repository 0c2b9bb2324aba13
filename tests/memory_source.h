// An in-memory TokenSource for loader tests: token i is i mod 50000, so a window's first token
// identifies it (for sources under 50000 tokens).
#pragma once

#include <string>

#include "autograd/check.h"
#include "data/source.h"

namespace daedalus::testing {

class CyclicSource : public data::TokenSource {
 public:
  explicit CyclicSource(int64_t tokens) : tokens_(tokens) {}
  int64_t size() const override { return tokens_; }
  void read(int64_t start, int64_t count, int32_t* out) const override {
    DAEDALUS_CHECK(start >= 0 && count >= 0 && start + count <= tokens_, "CyclicSource: [{}, {}) outside [0, {})",
                   start, start + count, tokens_);
    for (int64_t i = 0; i < count; ++i) out[i] = int32_t((start + i) % 50000);
  }
  std::string describe() const override { return "memory source (" + std::to_string(tokens_) + " tokens)"; }

 private:
  int64_t tokens_;
};

}  // namespace daedalus::testing
