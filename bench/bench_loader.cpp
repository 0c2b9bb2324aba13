// Loader throughput: next() at seq_len 1024, global batch 32, world 1, from an in-memory source
// of 64M tokens (so the figure is the loader's own cost: permutation, copy, int32 -> int64 for
// inputs and targets, not disk). Reports samples/s (items_per_second) and tokens/s.
//
//   build/bench/bench_loader
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>
#include <vector>

#include "data/loader.h"

namespace daedalus::data {
namespace {

class MemorySource : public TokenSource {
 public:
  explicit MemorySource(int64_t tokens) : tokens_(static_cast<size_t>(tokens)) {
    for (size_t i = 0; i < tokens_.size(); ++i) tokens_[i] = int32_t(i % 50257);
  }
  int64_t size() const override { return int64_t(tokens_.size()); }
  void read(int64_t start, int64_t count, int32_t* out) const override {
    std::memcpy(out, tokens_.data() + start, size_t(count) * sizeof(int32_t));
  }
  std::string describe() const override { return "memory source"; }

 private:
  std::vector<int32_t> tokens_;
};

void BM_LoaderNext(benchmark::State& state) {
  static const MemorySource source(int64_t{64} << 20);
  LoaderOptions options;
  options.seq_len = 1024;
  options.global_batch = 32;
  Loader loader(source, options);
  for (auto _ : state) {
    Batch batch = loader.next();
    benchmark::DoNotOptimize(batch.inputs.data_ptr());
    benchmark::DoNotOptimize(batch.targets.data_ptr());
  }
  const int64_t samples = int64_t(state.iterations()) * options.global_batch;
  state.SetItemsProcessed(samples);
  state.counters["tokens/s"] = benchmark::Counter(double(samples * options.seq_len), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LoaderNext)->Unit(benchmark::kMicrosecond)->MinTime(0.5);

}  // namespace
}  // namespace daedalus::data
