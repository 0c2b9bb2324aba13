// FP8 quantize throughput on this machine (fp8/quantized.h): an fp32 [4096, 7168] operand (a
// DeepSeek-V3 hidden-size activation batch) quantized to E4M3 at every granularity, plus the
// transposed view (the Wgrad "128x1" axis) and stochastic rounding at 1x128, and Wgrad's requantize
// of a 1x128 q(X) along the other axis, fused and composed. GB/s = bytes read
// (fp32 input) + written (FP8 data + fp32 scale_inv) per second, 10^9. Takes well under a minute.
//
//   build/bench/bench_fp8 [--benchmark_filter=tile]
#include <benchmark/benchmark.h>
#include <omp.h>

#include <string>

#include "autograd/generator.h"
#include "autograd/tensor.h"
#include "fp8/quantized.h"

namespace daedalus::fp8 {
namespace {

constexpr double kMinTime = 0.5;  // seconds per benchmark
constexpr int64_t kRows = 4096, kCols = 7168;

const Tensor& input() {
  static const Tensor x = [] {
    Generator gen(1);
    return Tensor::randn({kRows, kCols}, gen);
  }();
  return x;
}

[[maybe_unused]] const bool kContextAdded = [] {
  benchmark::AddCustomContext("omp_threads", std::to_string(omp_get_max_threads()));
  return true;
}();

void BM_Quantize(benchmark::State& state, Granularity g, bool transposed, bool stochastic) {
  const Tensor x = transposed ? input().t() : input();
  const ScaleOptions options{.stochastic_rounding = stochastic, .seed = 7};
  QuantizedTensor q = quantize(x, g, Format::e4m3, options);
  for (auto _ : state) {
    q = quantize(x, g, Format::e4m3, options);
    benchmark::DoNotOptimize(q.data.data_ptr());
    benchmark::ClobberMemory();
  }
  const double bytes = double(x.numel()) * (4 + 1) + double(q.scale_inv.numel()) * 4;
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Wgrad's q(Xqᵀ) from the 1x128 q(X) of the same [4096, 7168] input: fused (requantize_transposed)
// or the composition it replaces (dequantize, quantize the transposed view). GB/s counts the fused
// pass's bytes (FP8 and scales in and out) for both, so the ratio is the speed-up.
void BM_RequantizeTransposed(benchmark::State& state, bool fused) {
  const QuantizedTensor q = quantize(input(), Granularity::tile_1x128, Format::e4m3);
  QuantizedTensor out;
  for (auto _ : state) {
    out = fused ? requantize_transposed(q, Granularity::tile_1x128, Format::e4m3)
                : quantize(q.dequantize().t(), Granularity::tile_1x128, Format::e4m3);
    benchmark::DoNotOptimize(out.data.data_ptr());
    benchmark::ClobberMemory();
  }
  const double bytes = 2.0 * double(q.data.numel()) + double(q.scale_inv.numel() + out.scale_inv.numel()) * 4;
  state.counters["GB/s"] =
      benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void register_all() {
  const struct {
    const char* name;
    Granularity g;
  } kinds[] = {{"tensor", Granularity::tensor},
               {"row", Granularity::row},
               {"tile_1x128", Granularity::tile_1x128},
               {"block_128x128", Granularity::block_128x128},
               {"mx_1x32", Granularity::mx_1x32}};
  for (const auto& k : kinds) {
    benchmark::RegisterBenchmark((std::string("Quantize/e4m3/") + k.name).c_str(), BM_Quantize, k.g, false, false)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(kMinTime);
  }
  benchmark::RegisterBenchmark("Quantize/e4m3/tile_1x128/transposed", BM_Quantize, Granularity::tile_1x128, true, false)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(kMinTime);
  benchmark::RegisterBenchmark("Quantize/e4m3/tile_1x128/stochastic", BM_Quantize, Granularity::tile_1x128, false, true)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->MinTime(kMinTime);
  for (const bool fused : {true, false}) {
    benchmark::RegisterBenchmark(fused ? "RequantizeTransposed/e4m3/fused" : "RequantizeTransposed/e4m3/composition",
                                 BM_RequantizeTransposed, fused)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MinTime(kMinTime);
  }
}

[[maybe_unused]] const bool kRegistered = (register_all(), true);

}  // namespace
}  // namespace daedalus::fp8
