// MoE routing at DeepSeek-V3's shape (256 experts in 8 groups, 4 groups kept, k = 8) for a
// micro-batch of N tokens: the router's host reference (model::select_experts, partial sorts in
// double) against the routing kernels (kernels::group_limited_topk, order_by_expert) on the CPU and,
// where a device is visible, on CUDA. Counter: tokens/s. Without a CUDA device the CUDA benchmarks
// report an error and the program exits 0.
#include <benchmark/benchmark.h>

#include <cmath>

#include "autograd/generator.h"
#include "autograd/kernels/moe_routing.h"
#include "autograd/ops/activation.h"
#include "model/router.h"

namespace daedalus {
namespace {

constexpr routing::GroupLimit kDeepSeekV3{.experts = 256, .groups = 8, .topk_group = 4, .k = 8};

model::ModelConfig deepseek_v3_routing() {
  model::ModelConfig c;
  c.n_routed_experts = kDeepSeekV3.experts;
  c.n_group = kDeepSeekV3.groups;
  c.topk_group = kDeepSeekV3.topk_group;
  c.num_experts_per_tok = kDeepSeekV3.k;
  return c;
}

struct Inputs {
  Tensor scores, bias;
};

Inputs inputs(int64_t n, Device device) {
  Generator gen(1);
  const Tensor logits = Tensor::randn({n, kDeepSeekV3.experts}, gen, DType::f32);
  const Tensor bias = Tensor::randn({kDeepSeekV3.experts}, gen, DType::f32);
  return {ops::sigmoid(Var(logits)).value().to(device), bias.to(device)};
}

bool usable(benchmark::State& state, Device device) {
  if (device.type == DeviceType::cpu || cuda_device_count() > 0) return true;
  state.SkipWithError(cuda_built() ? "no CUDA device visible" : "built without CUDA");
  return false;
}

void BM_SelectExpertsReference(benchmark::State& state) {
  const Inputs in = inputs(state.range(0), Device::cpu());
  const model::ModelConfig c = deepseek_v3_routing();
  for (auto _ : state) benchmark::DoNotOptimize(model::select_experts(in.scores, in.bias, c));
  state.counters["tokens/s"] = benchmark::Counter(double(state.range(0) * state.iterations()), benchmark::Counter::kIsRate);
}

// The selection alone, then the selection with the expert order (capacity 1.25 · N·k/E when
// with_capacity): what Router::forward runs per MoE layer, one host read of 2·E counts included.
void BM_RoutingKernels(benchmark::State& state, Device device, bool order, bool with_capacity) {
  if (!usable(state, device)) return;
  const int64_t n = state.range(0);
  const Inputs in = inputs(n, device);
  const Tensor gates = in.scores.slice(1, 0, kDeepSeekV3.k).contiguous();
  const int64_t capacity = with_capacity ? int64_t(std::ceil(1.25 * double(n * kDeepSeekV3.k) / 256.0)) : -1;
  for (auto _ : state) {
    const Tensor ids = kernels::group_limited_topk(in.scores, in.bias, kDeepSeekV3);
    if (order) {
      benchmark::DoNotOptimize(kernels::order_by_expert(ids, kDeepSeekV3.experts, gates, capacity));
    } else {
      synchronize(device);
    }
  }
  state.counters["tokens/s"] = benchmark::Counter(double(n * state.iterations()), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_SelectExpertsReference)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RoutingKernels, cpu_select, Device::cpu(), false, false)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RoutingKernels, cpu_order, Device::cpu(), true, false)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RoutingKernels, cpu_order_capacity, Device::cpu(), true, true)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RoutingKernels, cuda_select, Device::cuda(0), false, false)
    ->Arg(4096)
    ->Arg(32768)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RoutingKernels, cuda_order, Device::cuda(0), true, false)
    ->Arg(4096)
    ->Arg(32768)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_RoutingKernels, cuda_order_capacity, Device::cuda(0), true, true)
    ->Arg(4096)
    ->Arg(32768)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace daedalus
