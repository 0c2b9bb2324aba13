// One training step of a ~1B-parameter DeepSeek-V3-shaped model on one GPU, per recipe (run by
// scripts/gpu-check): forward (LM + MTP + MoE aux loss), backward and the AdamW update on a fixed
// random batch of 4 x 2048 tokens. Counters: tokens/s, model TFLOP/s (model::training_flops_per_token,
// the MFU numerator; H200 dense peaks: BF16 ~989, FP8 ~1979 TFLOP/s) and the step's peak bytes of
// live tensors from the CUDA caching allocator (FP8 caches activations in FP8: compare across
// recipes). A step's time is its GPU time, from CUDA events recorded on the compute stream before and
// after it (DeviceTimer; manual time); rates are per that time. `host_syncs` counts the times the
// host waited for the device within one step (autograd/host_sync.h; the timing's own wait is not
// counted); with DAEDALUS_HOST_SYNC_LOG=1 the syncs of the timed steps are also printed per site.
// Without a CUDA device every benchmark reports an error and the program exits 0.
//
// The model is built in code (no YAML: the GPU bundle has no yaml-cpp): hidden 2048, 12 layers
// (1 dense), MLA with q_lora 512 / kv_lora 256 / 16 heads of 64+32 (qk) and 64 (v), 16 routed
// experts of 768 (top 2) + 1 shared, vocabulary 32768, one MTP module: about 1.1B parameters.
#include <benchmark/benchmark.h>

#include <cstdio>

#include "autograd/allocator.h"
#include "autograd/generator.h"
#include "autograd/host_sync.h"
#include "model/causal_lm.h"
#include "model/param_count.h"
#include "train/optimizer.h"

namespace daedalus {
namespace {

constexpr int64_t kBatch = 4, kSeq = 2048;

model::ModelConfig one_billion() {
  model::ModelConfig c;
  c.vocab_size = 32768;
  c.hidden_size = 2048;
  c.intermediate_size = 8192;
  c.moe_intermediate_size = 768;
  c.num_hidden_layers = 12;
  c.first_k_dense_replace = 1;
  c.num_attention_heads = 16;
  c.q_lora_rank = 512;
  c.kv_lora_rank = 256;
  c.qk_nope_head_dim = 64;
  c.qk_rope_head_dim = 32;
  c.v_head_dim = 64;
  c.n_routed_experts = 16;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 1;
  c.topk_group = 1;
  c.max_position_embeddings = kSeq;
  c.num_nextn_predict_layers = 1;
  return c;
}

void BM_TrainStepCuda(benchmark::State& state, fp8::RecipeKind recipe) {
  if (!cuda_built() || cuda_device_count() == 0) {
    state.SkipWithError(cuda_built() ? "no CUDA device visible" : "built without CUDA");
    return;
  }
  const Device gpu = Device::cuda(0);
  model::LmOptions options;
  options.config = one_billion();
  options.config.validate();
  fp8::Recipe base;
  base.kind = recipe;
  options.recipes = fp8::RecipeTable(base);
  options.seed = 1;
  options.device = gpu;
  model::CausalLM lm(options);
  std::vector<train::Param> params;
  for (const model::Parameter& p : lm.parameters().all())
    if (p.trainable) params.push_back(train::Param{p.name, p.var, p.weight_decay, false});
  train::OptimizerConfig adam_config;
  train::AdamW adam(std::move(params), adam_config);

  Generator gen(5);
  std::vector<int64_t> ids(static_cast<size_t>(kBatch * (kSeq + 1)));
  for (int64_t& id : ids) id = int64_t(gen.next_u64() % uint64_t(options.config.vocab_size));
  const Tensor window = Tensor::from_vector(ids, {kBatch, kSeq + 1});
  const Tensor inputs = window.slice(1, 0, kSeq).contiguous().to(gpu);
  const Tensor targets = window.slice(1, 1, kSeq + 1).contiguous().to(gpu);

  Allocator& alloc = allocator_for(gpu);
  const auto step = [&] {
    const model::LmOutput out = lm.forward(inputs, targets);
    backward(out.loss);
    adam.clip_and_step(adam_config.lr, adam.grad_norm());
    adam.zero_grad();
  };
  step();  // warm-up: cuBLASLt heuristics, the allocator's cache
  synchronize(gpu);
  DeviceTimer timer(gpu);
  int64_t peak = 0, syncs = 0, steps = 0;
  reset_host_syncs();  // the per-site breakdown covers the timed steps only
  for (auto _ : state) {
    alloc.reset_peak();
    timer.start();
    const int64_t before = host_sync_count();
    step();
    syncs += host_sync_count() - before;
    ++steps;
    timer.stop();
    state.SetIterationTime(timer.elapsed_ms() / 1e3);  // waits for the step's last kernel
    peak = std::max(peak, alloc.stats().peak_bytes);
  }
  const double tokens = double(kBatch * kSeq);
  state.counters["tokens_per_s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["TFLOP/s"] = benchmark::Counter(model::training_flops_per_token(options.config, kSeq) * tokens / 1e12,
                                                 benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_GB"] = double(peak) / 1e9;
  state.counters["host_syncs"] = double(syncs) / double(std::max<int64_t>(steps, 1));  // per step
  if (host_sync_log_enabled() && steps > 0) {
    // The breakdown also holds the timing's own waits (DeviceTimer::elapsed_ms, once per step).
    std::fprintf(stderr, "BM_TrainStepCuda/%s: %s", std::string(fp8::recipe_name(recipe)).c_str(),
                 format_host_sync_sites(host_sync_sites(), steps).c_str());
  }
  state.counters["params_B"] = double(model::count_parameters(options.config).total_with_mtp()) / 1e9;
}

BENCHMARK_CAPTURE(BM_TrainStepCuda, fp32, fp8::RecipeKind::fp32)->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_CAPTURE(BM_TrainStepCuda, bf16, fp8::RecipeKind::bf16)->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_CAPTURE(BM_TrainStepCuda, fp8_block, fp8::RecipeKind::fp8_block)
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();

}  // namespace
}  // namespace daedalus
