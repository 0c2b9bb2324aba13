// Tokenization throughput on one thread: the 10 MB mixed-script corpus of the tokenizer checks
// (tests/text_corpus.cpp, seed 20) through the DeepSeek-V3-pipeline and GPT-2-style fixtures,
// with a fresh Encoder per iteration (its word cache starts cold, as a fresh process's would).
// bench/tokenizer_hf.py measures HuggingFace tokenizers (encode_batch, one thread) on the same
// text; bench/RESULTS.md has both.
//
//   OMP_NUM_THREADS=1 build/bench/bench_tokenizer
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "tests/text_corpus.h"

namespace daedalus::data {
namespace {

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> docs = testing::mixed_text_corpus(10'000'000, 20);
  return docs;
}

void BM_Encode(benchmark::State& state, const std::string& name) {
  const Tokenizer tokenizer = Tokenizer::load(std::string(DAEDALUS_SOURCE_DIR) + "/tests/tokenizer/" + name +
                                              "/tokenizer.json");
  int64_t bytes = 0;
  for (const std::string& doc : corpus()) bytes += int64_t(doc.size());
  std::vector<int32_t> ids;
  int64_t tokens = 0;
  for (auto _ : state) {
    Encoder encoder(tokenizer);
    tokens = 0;
    for (const std::string& doc : corpus()) {
      ids.clear();
      encoder.encode(doc, ids);
      tokens += int64_t(ids.size());
    }
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  state.counters["tokens"] = double(tokens);
}

BENCHMARK_CAPTURE(BM_Encode, deepseek, std::string("deepseek"))->Unit(benchmark::kMillisecond)->MinTime(3.0);
BENCHMARK_CAPTURE(BM_Encode, gpt2, std::string("gpt2"))->Unit(benchmark::kMillisecond)->MinTime(3.0);

}  // namespace
}  // namespace daedalus::data
