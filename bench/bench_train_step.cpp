// One training step of configs/tiny.yaml (and of configs/small.yaml at micro-batch 2) per recipe: forward (LM + MTP +
// MoE aux loss), backward and the AdamW update on a fixed random batch of micro_batch_size x seq_len tokens. Counters:
// tokens/s and the peak bytes of live tensors during a step. The recipes' step times are meant to be compared as ratios
// within one run (fp32 vs bf16 vs fp8_block).
//
//   build/bench/bench_train_step [--benchmark_filter=fp8_block]
// Run from the repository root (it reads configs/tiny.yaml).
#include <benchmark/benchmark.h>
#include <omp.h>

#include "autograd/allocator.h"
#include "autograd/generator.h"
#include "autograd/ops/arithmetic.h"
#include "model/causal_lm.h"
#include "train/config.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

[[maybe_unused]] const bool kContextAdded = [] {
  benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
  return true;
}();

void BM_TrainStep(benchmark::State& state, const std::string& config_file, const std::string& recipe) {
  std::vector<std::string> sets{"precision.recipe=" + recipe};
  // small.yaml at a quarter of its batch: the same matrices (hidden 512) at a step that fits the bench.
  if (config_file.find("small") != std::string::npos) sets.push_back("train.micro_batch_size=2");
  const RunConfig config = load_config(config_file, sets);
  model::CausalLM lm(lm_options(config, nullptr));
  std::vector<Param> params;
  for (const model::Parameter& p : lm.parameters().all())
    if (p.trainable) params.push_back(Param{p.name, p.var, p.weight_decay, false});
  AdamW adam(std::move(params), config.optimizer);

  const int64_t b = config.train.micro_batch_size, t = config.train.seq_len;
  Generator gen(5);
  std::vector<int64_t> ids(static_cast<size_t>(b * (t + 1)));
  for (int64_t& id : ids) id = int64_t(gen.next_u64() % uint64_t(config.model.vocab_size));
  const Tensor window = Tensor::from_vector(ids, {b, t + 1});
  const Tensor inputs = window.slice(1, 0, t).contiguous(), targets = window.slice(1, 1, t + 1).contiguous();

  Allocator& alloc = allocator_for(Device::cpu());
  const auto step = [&] {
    const model::LmOutput out = lm.forward(inputs, targets);
    backward(out.loss);
    adam.clip_and_step(config.optimizer.lr, adam.grad_norm());
    adam.zero_grad();
  };
  step();  // warm-up: oneDNN creates (JIT-compiles) its primitives on first use of each shape
  int64_t peak = 0;
  for (auto _ : state) {
    alloc.reset_peak();
    step();
    peak = std::max(peak, alloc.stats().peak_bytes);
  }
  state.counters["tokens_per_s"] = benchmark::Counter(double(b * t), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_MB"] = double(peak) / 1e6;
}

#define DAEDALUS_TRAIN_STEP(config, name)                                                                       \
  BENCHMARK_CAPTURE(BM_TrainStep, config##_##name, std::string("configs/" #config ".yaml"), std::string(#name)) \
      ->Unit(benchmark::kMillisecond)                                                                           \
      ->MinTime(3.0)
DAEDALUS_TRAIN_STEP(tiny, fp32);
DAEDALUS_TRAIN_STEP(tiny, bf16);
DAEDALUS_TRAIN_STEP(tiny, fp8_block);
DAEDALUS_TRAIN_STEP(small, fp32);
DAEDALUS_TRAIN_STEP(small, bf16);
DAEDALUS_TRAIN_STEP(small, fp8_block);

}  // namespace
}  // namespace daedalus::train
