// The CUDA attention kernels (autograd/cuda/attention.cu) against their CPU twin, the numerical
// reference (itself tested against a double-precision softmax in test_attention.cpp): forward
// out and lse, backward dq, dk, dv; fp32 and bf16, causal and not, T ragged against the GPU's
// 64- and 32-row tiles, Dqk != Dv (48/32 and DeepSeek-V3's 192/128), B·H > 1, inputs that are
// transposed views of [B, T, H, D] tensors. Skips without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/kernels/attention.h"
#include "tests/attention_testing.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::all_close;
using testing::kU16;
using testing::attn::Case;
using testing::attn::heads;
using testing::attn::Inputs;
using testing::attn::inputs_for;
using testing::attn::max_abs;
using testing::attn::Pair;

class CudaAttention : public testing::CudaTest {
 protected:
  const Device cpu = Device::cpu();
};

// T: inside one tile, a few rows, one row past two 64-row tiles, several tiles with a short last
// one (the running max moves between key tiles). Head dims: the tiny configs' and DeepSeek-V3's.
std::vector<Case> cases() {
  std::vector<Case> all;
  for (bool causal : {true, false})
    for (int64_t T : {1, 7, 130, 300})
      for (auto [Dqk, Dv] : {std::pair<int64_t, int64_t>{48, 32}, {192, 128}})
        all.push_back(Case{2, 3, T, Dqk, Dv, causal});
  return all;
}

// Tolerances. Both twins compute the same formulas with fp32 accumulation; they differ in the
// order of every sum (oneDNN blocks of 128 against the GPU's sequential FMAs over the head dim and
// 64/32-key tiles) and in exp (Cephes polynomial against CUDA's expf, 2 ulp each).
// fp32: each score is off by ~sqrt(Dqk) · 2^-24 of its partial sums in either twin, which moves P
// relatively by as much; the CPU twin measures within 1.0e-6 · max|v| (out) and 3.9e-6 (lse) of a
// double reference at Dqk = 192, T = 300, so the twins should differ by a few 1e-6. out: atol
// 2e-5 · max|v|, ~4 orders below what a wrong mask or a missed rescale costs (~1e-1); lse carries
// the score error as an absolute error: 5e-5. Gradients: relative to a gradient's scale
// max(1, max|grad|) (the terms that cancel in dS = P ∘ (dP - D) are O(1), so a gradient that is 0
// comes out as O(1e-6) residue): 2e-5, the CPU twin being within 1.3e-6 of the exact gradient.
// bf16: q, k, v are exact in both; P, dO and dS are rounded to bf16 at the same points. The
// backward's P = e^(S - lse) and dS then differ only where an fp32 value within ~1e-6 of a bf16
// rounding midpoint falls on different sides (one bf16 step, 2^-8 relative, on that term), and
// the bf16 gradients by one final rounding step (at most 2^-7 of their magnitude): 1.5 · 2^-7 of
// the scale (~1.2e-2). The forward rounds P = e^(S - running max), and the running max depends on
// the key tile (128 keys on the CPU, 64 on the GPU), so for T > 64 different values are rounded:
// each term off by at most 2^-8 in either twin, out by at most 2^-8 · max|v| each: 2^-7 · max|v|.
// lse never sees a bf16 rounding: the fp32 atol.
// The kernels' source, run on a host emulator of the CUDA thread model (one thread per CUDA thread,
// barriers for __syncthreads and the shuffles; not in the repository), gave against the CPU twin
// at these and similar shapes (T up to 300, head dims 20..256): fp32 out <= 6.5e-7 · max|v|, lse
// <= 1.9e-6, gradients <= 2.3e-6 of the scale; bf16 out <= 4.7e-4 · max|v| (0.12 · 2^-8),
// gradients <= 4.4e-3 of the scale (1.1 · 2^-8: one final rounding step).
constexpr double kOutAtolF32 = 2e-5, kLseAtol = 5e-5, kGradRelF32 = 2e-5;
constexpr double kOutAtolBf16 = 2 * kU16, kGradRelBf16 = 3 * kU16;

TEST_F(CudaAttention, ForwardMatchesCpu) {
  int n = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Case& c : cases()) {
      // Half of the cases (every head-dim pair, alternating over T) read strided views in place.
      const bool transposed = n++ / 2 % 2 == 0;
      const Inputs in = inputs_for(c, dtype, transposed, uint64_t(n) * 10);
      const kernels::AttentionOutput want =
          kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), c.causal);
      const kernels::AttentionOutput got =
          kernels::attention_forward(in.q.gpu, in.k.gpu, in.v.gpu, c.scale(), c.causal);
      ASSERT_EQ(got.out.device(), gpu);
      ASSERT_EQ(got.out.shape(), (Shape{c.B, c.H, c.T, c.Dv})) << c.str();
      ASSERT_EQ(got.lse.shape(), (Shape{c.B, c.H, c.T})) << c.str();
      const double atol = (dtype == DType::f32 ? kOutAtolF32 : kOutAtolBf16) * max_abs(in.v.cpu);
      const std::string what = std::string(dtype_name(dtype)) + " " + c.str() + (transposed ? " transposed" : "");
      EXPECT_TRUE(all_close(got.out.to(cpu), want.out, 0, atol)) << "out " << what;
      EXPECT_TRUE(all_close(got.lse.to(cpu), want.lse, 0, kLseAtol)) << "lse " << what;
    }
  }
}

TEST_F(CudaAttention, BackwardMatchesCpu) {
  // Both backwards get the CPU forward's out and lse, so only the backward kernels are compared.
  int n = 0;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (const Case& c : cases()) {
      const bool transposed = n++ / 2 % 2 == 1;
      const Inputs in = inputs_for(c, dtype, transposed, 1000 + uint64_t(n) * 10);
      const Pair dout = heads(c, c.Dv, 2000 + uint64_t(n), DType::f32, transposed);
      const kernels::AttentionOutput fwd =
          kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), c.causal);
      const kernels::AttentionGrads want =
          kernels::attention_backward(in.q.cpu, in.k.cpu, in.v.cpu, fwd.out, fwd.lse, dout.cpu, c.scale(), c.causal);
      const kernels::AttentionGrads got = kernels::attention_backward(in.q.gpu, in.k.gpu, in.v.gpu, fwd.out.to(gpu),
                                                                      fwd.lse.to(gpu), dout.gpu, c.scale(), c.causal);
      ASSERT_EQ(got.dq.device(), gpu);
      ASSERT_EQ(got.dq.dtype(), dtype);
      ASSERT_EQ(got.dk.shape(), (Shape{c.B, c.H, c.T, c.Dqk}));
      ASSERT_EQ(got.dv.shape(), (Shape{c.B, c.H, c.T, c.Dv}));
      const double rel = dtype == DType::f32 ? kGradRelF32 : kGradRelBf16;
      const std::string what = std::string(dtype_name(dtype)) + " " + c.str() + (transposed ? " transposed" : "");
      const std::pair<const Tensor*, const Tensor*> grads[] = {
          {&got.dq, &want.dq}, {&got.dk, &want.dk}, {&got.dv, &want.dv}};
      const char* names[] = {"dq", "dk", "dv"};
      for (int g = 0; g < 3; ++g) {
        const double atol = rel * std::max(1.0, max_abs(*grads[g].second));
        EXPECT_TRUE(all_close(grads[g].first->to(cpu), *grads[g].second, 0, atol)) << names[g] << " " << what;
      }
    }
  }
}

// The document mask (packed sequences): the twins agree under the same block-diagonal mask, with
// documents that cut the GPU's 64/32-row tiles and the CPU's 128-row blocks at different places;
// the tolerances of the unmasked comparison above apply (the same sums, the same rounding points).
TEST_F(CudaAttention, DocumentMaskMatchesCpu) {
  const Case c{2, 2, 300, 64, 64, true};
  std::vector<int64_t> starts;
  for (const std::vector<int64_t>& row : {std::vector<int64_t>{1, 70, 100, 129}, std::vector<int64_t>{300}}) {
    int64_t begin = 0;
    for (int64_t n : row) {
      for (int64_t i = 0; i < n; ++i) starts.push_back(begin);
      begin += n;
    }
  }
  const Tensor doc_start = Tensor::from_vector(starts, {c.B, c.T});
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Inputs in = inputs_for(c, dtype, /*transposed=*/false, 3000);
    const Pair dout = heads(c, c.Dv, 3100, DType::f32, false);
    const kernels::AttentionOutput want =
        kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), true, doc_start);
    const kernels::AttentionOutput got =
        kernels::attention_forward(in.q.gpu, in.k.gpu, in.v.gpu, c.scale(), true, doc_start.to(gpu));
    const double atol = (dtype == DType::f32 ? kOutAtolF32 : kOutAtolBf16) * max_abs(in.v.cpu);
    EXPECT_TRUE(all_close(got.out.to(cpu), want.out, 0, atol)) << "out " << dtype_name(dtype);
    EXPECT_TRUE(all_close(got.lse.to(cpu), want.lse, 0, kLseAtol)) << "lse " << dtype_name(dtype);
    const kernels::AttentionGrads gw = kernels::attention_backward(in.q.cpu, in.k.cpu, in.v.cpu, want.out, want.lse,
                                                                   dout.cpu, c.scale(), true, doc_start);
    const kernels::AttentionGrads gg = kernels::attention_backward(
        in.q.gpu, in.k.gpu, in.v.gpu, want.out.to(gpu), want.lse.to(gpu), dout.gpu, c.scale(), true, doc_start.to(gpu));
    const double rel = dtype == DType::f32 ? kGradRelF32 : kGradRelBf16;
    for (const auto& [g, w, name] :
         {std::tuple{&gg.dq, &gw.dq, "dq"}, std::tuple{&gg.dk, &gw.dk, "dk"}, std::tuple{&gg.dv, &gw.dv, "dv"}})
      EXPECT_TRUE(all_close(g->to(cpu), *w, 0, rel * std::max(1.0, max_abs(*w)))) << name << " " << dtype_name(dtype);
  }
}

TEST_F(CudaAttention, TheComparisonSeesAWrongMask) {
  // The tolerances above are far below a real bug's footprint: causal GPU output against the CPU's
  // full attention (and the reverse for the gradients) must fail them.
  const Case c{1, 2, 130, 48, 32, true};
  const Inputs in = inputs_for(c, DType::f32, /*transposed=*/true, 77);
  const kernels::AttentionOutput full = kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), false);
  const kernels::AttentionOutput causal = kernels::attention_forward(in.q.gpu, in.k.gpu, in.v.gpu, c.scale(), true);
  EXPECT_FALSE(all_close(causal.out.to(cpu), full.out, 0, kOutAtolBf16 * max_abs(in.v.cpu)));
  const Pair dout = heads(c, c.Dv, 78, DType::f32, /*transposed=*/false);
  const kernels::AttentionGrads want =
      kernels::attention_backward(in.q.cpu, in.k.cpu, in.v.cpu, full.out, full.lse, dout.cpu, c.scale(), false);
  const kernels::AttentionGrads got = kernels::attention_backward(in.q.gpu, in.k.gpu, in.v.gpu, full.out.to(gpu),
                                                                  full.lse.to(gpu), dout.gpu, c.scale(), true);
  EXPECT_FALSE(all_close(got.dk.to(cpu), want.dk, 0, kGradRelBf16 * std::max(1.0, max_abs(want.dk))));
}

TEST_F(CudaAttention, BitIdenticalAcrossRuns) {
  // Every output element is owned by one thread and summed in a fixed order (no atomics).
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Case c{2, 3, 300, 192, 128, true};
    const Inputs in = inputs_for(c, dtype, /*transposed=*/true, 91);
    const Pair dout = heads(c, c.Dv, 92, DType::f32, /*transposed=*/false);
    std::vector<std::vector<uint8_t>> first;
    for (int run = 0; run < 2; ++run) {
      const kernels::AttentionOutput fwd =
          kernels::attention_forward(in.q.gpu, in.k.gpu, in.v.gpu, c.scale(), c.causal);
      const kernels::AttentionGrads g =
          kernels::attention_backward(in.q.gpu, in.k.gpu, in.v.gpu, fwd.out, fwd.lse, dout.gpu, c.scale(), c.causal);
      std::vector<std::vector<uint8_t>> now;
      for (const Tensor* t : {&fwd.out, &fwd.lse, &g.dq, &g.dk, &g.dv}) now.push_back(testing::bytes(t->to(cpu)));
      if (run == 0) first = now;
      for (size_t i = 0; i < now.size(); ++i)
        EXPECT_TRUE(now[i] == first[i]) << dtype_name(dtype) << " output " << i << " differs between runs";
    }
  }
}

TEST_F(CudaAttention, HeadDimsPast256AreRejectedByName) {
  const Tensor q = Tensor::zeros({1, 1, 4, 257}, DType::f32, gpu), v = Tensor::zeros({1, 1, 4, 8}, DType::f32, gpu);
  EXPECT_TRUE(testing::mentions(testing::error_of([&] { kernels::attention_forward(q, q, v, 0.1); }),
                                {"attention", "[1, 1, 4, 257]", "256"}));
}

}  // namespace
}  // namespace daedalus
