// cuDNN's fused flash attention (autograd/cuda/attention_cudnn.h) against the CPU attention, the
// numerical reference (tested against a double-precision softmax in test_attention.cpp): forward
// out and lse, backward dq, dk, dv, bf16, causal and full, DeepSeek-V3's head dims 192/128 and
// 64/64, T ragged against any tile size, B·H > 1, inputs read in place as transposed views of
// [B, T, H, D]. These skip without a CUDA device, in a build without cuDNN, and where libcudnn.so.9
// does not load. The backend choice (DAEDALUS_ATTENTION, what cuDNN takes) runs everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/kernels/attention.h"
#include "autograd/kernels/attention_backend.h"
#include "tests/attention_testing.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using kernels::AttentionBackend;
using testing::all_close;
using testing::kU16;
using testing::attn::Case;
using testing::attn::heads;
using testing::attn::Inputs;
using testing::attn::max_abs;
using testing::attn::Pair;

// bf16 operands (cuDNN's), q and k of std 1.5 (attn::inputs_for).
Inputs inputs_for(const Case& c, bool transposed, uint64_t seed) {
  return testing::attn::inputs_for(c, DType::bf16, transposed, seed);
}

// ---- the backend choice (host only) ---------------------------------------------------------------

TEST(AttentionBackendRules, BackendComesFromTheEnvironmentValue) {
  EXPECT_EQ(kernels::parse_attention_backend(nullptr), AttentionBackend::kernel);
  EXPECT_EQ(kernels::parse_attention_backend(""), AttentionBackend::kernel);
  EXPECT_EQ(kernels::parse_attention_backend("kernel"), AttentionBackend::kernel);
  EXPECT_EQ(kernels::parse_attention_backend("cudnn"), AttentionBackend::cudnn);
  for (const char* bad : {"cuDNN", "cudnn ", "flash"}) {
    try {
      kernels::parse_attention_backend(bad);
      ADD_FAILURE() << "no error for DAEDALUS_ATTENTION=" << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("DAEDALUS_ATTENTION=") + bad), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("\"cudnn\""), std::string::npos) << e.what();
    }
  }
}

TEST(AttentionBackendRules, CudnnTakesBf16WithoutDocumentMaskAndItsHeadDims) {
  const auto q = [](DType dtype, int64_t d) { return Tensor::empty({2, 3, 5, d}, dtype); };
  const Tensor v128 = Tensor::empty({2, 3, 5, 128}, DType::bf16);
  // DeepSeek-V3's MLA (192/128) and the tiny configs' multiples of 8 are taken.
  EXPECT_EQ(kernels::cudnn_attention_unsupported(q(DType::bf16, 192), v128, Tensor()), "");
  EXPECT_EQ(
      kernels::cudnn_attention_unsupported(q(DType::bf16, 256), Tensor::empty({1, 1, 1, 8}, DType::bf16), Tensor()),
      "");
  // fp32 (the fp32 recipe), a document mask, head dims off cuDNN's surface: the kernel runs.
  EXPECT_NE(kernels::cudnn_attention_unsupported(q(DType::f32, 192), v128, Tensor()).find("fp32"), std::string::npos);
  EXPECT_NE(kernels::cudnn_attention_unsupported(Tensor::empty({2, 3, 1, 192}, DType::bf16),
                                                 Tensor::empty({2, 3, 1, 128}, DType::bf16), Tensor())
                .find("T = 1"),
            std::string::npos);
  const Tensor doc_start = Tensor::zeros({2, 5}, DType::i64);
  EXPECT_NE(kernels::cudnn_attention_unsupported(q(DType::bf16, 192), v128, doc_start).find("document mask"),
            std::string::npos);
  for (const int64_t d : {int64_t(44), int64_t(264)})
    EXPECT_NE(kernels::cudnn_attention_unsupported(q(DType::bf16, d), v128, Tensor()).find("head dims"),
              std::string::npos)
        << d;
  EXPECT_NE(
      kernels::cudnn_attention_unsupported(q(DType::bf16, 192), Tensor::empty({2, 3, 5, 20}, DType::bf16), Tensor())
          .find("head dims 192 (qk) and 20 (v)"),
      std::string::npos);
}

TEST(AttentionBackendRules, TheKernelBackendNeverUsesCudnn) {
  const Tensor q = Tensor::empty({1, 2, 4, 192}, DType::bf16), v = Tensor::empty({1, 2, 4, 128}, DType::bf16);
  EXPECT_FALSE(kernels::use_cudnn_attention(q, v, Tensor(), AttentionBackend::kernel));
}

TEST(AttentionBackendRules, TheCudnnBackendNeedsCudnnAndFallsBackOnlyWhereItCannot) {
  const Tensor q = Tensor::empty({1, 2, 4, 192}, DType::bf16), v = Tensor::empty({1, 2, 4, 128}, DType::bf16);
  const Tensor q32 = Tensor::empty({1, 2, 4, 192}, DType::f32), v32 = Tensor::empty({1, 2, 4, 128}, DType::f32);
  if (!kernels::cudnn_attention_built()) {
    // Asked for and absent: bad input (exit 1), naming the variable, never a silent kernel run.
    try {
      kernels::use_cudnn_attention(q, v, Tensor(), AttentionBackend::cudnn);
      ADD_FAILURE() << "no error for DAEDALUS_ATTENTION=cudnn without cuDNN";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("DAEDALUS_ATTENTION=cudnn"), std::string::npos) << e.what();
    }
    EXPECT_EQ(kernels::cudnn_runtime_version(), 0);
    EXPECT_FALSE(kernels::cudnn_load_error().empty());
    return;
  }
  // Built in: libcudnn.so.9 is dlopened here for real (no device needed to load it and ask its
  // version). Where it does not load, the cudnn backend is a runtime error naming the variable.
  const std::string load_error = kernels::cudnn_load_error();
  if (!load_error.empty()) {
    EXPECT_THROW(kernels::use_cudnn_attention(q, v, Tensor(), AttentionBackend::cudnn), Error);
    GTEST_SKIP() << load_error;
  }
  EXPECT_GE(kernels::cudnn_runtime_version(), 90000);
  EXPECT_TRUE(kernels::use_cudnn_attention(q, v, Tensor(), AttentionBackend::cudnn));
  EXPECT_FALSE(kernels::use_cudnn_attention(q32, v32, Tensor(), AttentionBackend::cudnn));
  EXPECT_FALSE(kernels::use_cudnn_attention(q, v, Tensor::zeros({1, 4}, DType::i64), AttentionBackend::cudnn));
}

// ---- the graphs, validated for Hopper without a device ---------------------------------------------

class CudnnAttentionGraphs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kernels::cudnn_attention_built()) GTEST_SKIP() << "built without cuDNN (DAEDALUS_CUDNN)";
    if (const std::string why = kernels::cudnn_load_error(); !why.empty()) GTEST_SKIP() << why;
  }
};

TEST_F(CudnnAttentionGraphs, ValidateForHopperWithoutADevice) {
  // The frontend's checks of the forward and backward graphs exactly as the GPU path builds them:
  // DeepSeek-V3's 192/128, 64/64, configs/small.yaml's 96/64 and configs/tiny.yaml's 48/32, causal and full, T ragged, MLA's transposed [B, T, H, D]
  // layout read in place and packed [B, H, T, D]; CPU tensors (only shapes and strides are read).
  for (const bool causal : {true, false})
    for (const int64_t T : {2, 63, 300})
      for (auto [Dqk, Dv] : {std::pair<int64_t, int64_t>{192, 128}, {64, 64}, {96, 64}, {48, 32}}) {
        const Tensor q = Tensor::empty({2, T, 3, Dqk}, DType::bf16).transpose(1, 2);
        const Tensor k = Tensor::empty({2, T, 3, Dqk}, DType::bf16).transpose(1, 2);
        const Tensor v = Tensor::empty({2, 3, T, Dv}, DType::bf16);
        EXPECT_EQ(kernels::cudnn_attention_validate(q, k, v, 1.0 / std::sqrt(double(Dqk)), causal), "")
            << "T=" << T << " Dqk=" << Dqk << " Dv=" << Dv << (causal ? " causal" : " full");
      }
}

TEST_F(CudnnAttentionGraphs, TheValidationTurnsDownWhatCudnnCannotRun) {
  // Flash attention needs Ampere or newer: the same graph for Volta (sm 70) must fail, so the check
  // above does look at the support surface.
  const Tensor q = Tensor::empty({1, 2, 64, 192}, DType::bf16), v = Tensor::empty({1, 2, 64, 128}, DType::bf16);
  EXPECT_NE(kernels::cudnn_attention_validate(q, q, v, 0.1, true, 70), "");
  // One-token sequences: the backward graph is turned down, hence cudnn_attention_unsupported's T = 1.
  const Tensor q1 = Tensor::empty({1, 2, 1, 192}, DType::bf16), v1 = Tensor::empty({1, 2, 1, 128}, DType::bf16);
  EXPECT_NE(kernels::cudnn_attention_validate(q1, q1, v1, 0.1, true).find("s_q = s_kv = 1"), std::string::npos);
}

// ---- on the GPU ------------------------------------------------------------------------------------

class CudaCudnnAttention : public testing::CudaTest {
 protected:
  void SetUp() override {
    testing::CudaTest::SetUp();
    if (IsSkipped()) return;
    if (!kernels::cudnn_attention_built()) GTEST_SKIP() << "built without cuDNN (DAEDALUS_CUDNN)";
    if (const std::string why = kernels::cudnn_load_error(); !why.empty()) GTEST_SKIP() << why;
  }
  const Device cpu = Device::cpu();
};

// T: the fewest rows cuDNN takes (T = 1 stays on the kernel), one short of a 64-row tile, two
// tiles and a bit, several tiles with a ragged end.
std::vector<Case> cases() {
  std::vector<Case> all;
  for (bool causal : {true, false})
    for (int64_t T : {2, 63, 130, 300})
      for (auto [Dqk, Dv] : {std::pair<int64_t, int64_t>{192, 128}, {64, 64}})
        all.push_back(Case{2, 2, T, Dqk, Dv, causal});
  return all;
}

kernels::AttentionOutput cudnn_forward(const Inputs& in, const Case& c) {
  const Device gpu = Device::cuda(0);
  kernels::AttentionOutput r{Tensor::empty({c.B, c.H, c.T, c.Dv}, DType::f32, gpu),
                             Tensor::empty({c.B, c.H, c.T}, DType::f32, gpu)};
  EXPECT_TRUE(kernels::cudnn_attention_forward(in.q.gpu, in.k.gpu, in.v.gpu, r.out, r.lse, c.scale(), c.causal))
      << "cuDNN turned down the forward of " << c.str();
  return r;
}

kernels::AttentionGrads cudnn_backward(const Inputs& in, const Case& c, const Tensor& out, const Tensor& lse,
                                       const Tensor& dout) {
  const Device gpu = Device::cuda(0);
  kernels::AttentionGrads g{Tensor::empty({c.B, c.H, c.T, c.Dqk}, DType::bf16, gpu),
                            Tensor::empty({c.B, c.H, c.T, c.Dqk}, DType::bf16, gpu),
                            Tensor::empty({c.B, c.H, c.T, c.Dv}, DType::bf16, gpu)};
  EXPECT_TRUE(kernels::cudnn_attention_backward(in.q.gpu, in.k.gpu, in.v.gpu, out, lse, dout, g.dq, g.dk, g.dv,
                                                c.scale(), c.causal))
      << "cuDNN turned down the backward of " << c.str();
  return g;
}

// Tolerances (bf16, kU16 = 2^-8). q, k, v are exact in both; S and the softmax statistics are fp32
// in both (tensor cores multiply bf16 exactly and accumulate in fp32), so lse differs only by the
// order of fp32 sums: tests/test_cuda_attention.cpp's 5e-5. The forward rounds the unnormalized
// P = e^(S - running max) to bf16 before P·V in both (FlashAttention's recipe), each at its own key
// tiles, so each term may be off by one bf16 step (2^-8 relative) in either: out within 2^-7 ·
// max|v|, as between the two kernels; cuDNN then writes O as bf16, half a step more (2^-9 · max|v|):
// out atol 2.5 · kU16 · max|v|, rounded up to 3 · kU16 (cuDNN's exp is exp2 of a log2e-scaled
// score: a few fp32 ulp). The backward: both get the same out (the CPU forward's, rounded to bf16
// so that cuDNN's bf16 O is exact) and lse, round dO, P and dS to bf16 at the same points, and
// round each gradient once: test_cuda_attention.cpp's 3 · kU16 of max(1, max|grad|). A wrong mask
// or scale costs ~1e-1 (CudaCudnnAttention.TheComparisonSeesAWrongMask).
constexpr double kLseAtol = 5e-5, kOutAtol = 3 * kU16, kGradRel = 3 * kU16;

TEST_F(CudaCudnnAttention, ForwardMatchesCpu) {
  int n = 0;
  for (const Case& c : cases()) {
    const bool transposed = n++ / 2 % 2 == 0;  // every head-dim pair both ways, alternating over T
    const Inputs in = inputs_for(c, transposed, uint64_t(n) * 10);
    const kernels::AttentionOutput want = kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), c.causal);
    const kernels::AttentionOutput got = cudnn_forward(in, c);
    const std::string what = c.str() + (transposed ? " transposed" : "");
    EXPECT_TRUE(all_close(got.out.to(cpu), want.out, 0, kOutAtol * max_abs(in.v.cpu))) << "out " << what;
    EXPECT_TRUE(all_close(got.lse.to(cpu), want.lse, 0, kLseAtol)) << "lse " << what;
  }
}

TEST_F(CudaCudnnAttention, BackwardMatchesCpu) {
  int n = 0;
  for (const Case& c : cases()) {
    const bool transposed = n++ / 2 % 2 == 1;
    const Inputs in = inputs_for(c, transposed, 1000 + uint64_t(n) * 10);
    const Pair dout = heads(c, c.Dv, 2000 + uint64_t(n), DType::f32, transposed);
    const kernels::AttentionOutput fwd = kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), c.causal);
    const Tensor out = fwd.out.to(DType::bf16).to(DType::f32);  // what a bf16 O can be
    const kernels::AttentionGrads want =
        kernels::attention_backward(in.q.cpu, in.k.cpu, in.v.cpu, out, fwd.lse, dout.cpu, c.scale(), c.causal);
    const kernels::AttentionGrads got = cudnn_backward(in, c, out.to(gpu), fwd.lse.to(gpu), dout.gpu);
    const std::string what = c.str() + (transposed ? " transposed" : "");
    for (const auto& [g, w, name] : {std::tuple{&got.dq, &want.dq, "dq"}, std::tuple{&got.dk, &want.dk, "dk"},
                                     std::tuple{&got.dv, &want.dv, "dv"}})
      EXPECT_TRUE(all_close(g->to(cpu), *w, 0, kGradRel * std::max(1.0, max_abs(*w)))) << name << " " << what;
  }
}

// The training path end to end: cuDNN's forward feeds cuDNN's backward (its own O and stats), and
// the kernel's forward feeds cuDNN's backward (the mix a graph cuDNN turns down would make). Both
// against the CPU's forward + backward; the CPU backward gets the CPU out rounded to bf16 as above.
// The cuDNN forward's O differs from that by the forward tolerance, which moves D = Σ dO·O and so
// dS by P · 3 · kU16 · |dO|·|O| summed over Dv: another 3 · kU16 of the gradients' scale at most.
TEST_F(CudaCudnnAttention, ForwardThenBackwardMatchesCpuAndTakesTheKernelsLse) {
  const Case c{2, 3, 200, 192, 128, true};
  const Inputs in = inputs_for(c, /*transposed=*/true, 4000);
  const Pair dout = heads(c, c.Dv, 4100, DType::f32, true);
  const kernels::AttentionOutput fwd = kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), c.causal);
  const kernels::AttentionGrads want = kernels::attention_backward(
      in.q.cpu, in.k.cpu, in.v.cpu, fwd.out.to(DType::bf16).to(DType::f32), fwd.lse, dout.cpu, c.scale(), c.causal);
  const kernels::AttentionOutput by_cudnn = cudnn_forward(in, c);
  // The kernel's forward: autograd/cuda/attention.cu (DAEDALUS_ATTENTION is unset in the tests).
  ASSERT_EQ(kernels::attention_backend(), AttentionBackend::kernel);
  const kernels::AttentionOutput by_kernel =
      kernels::attention_forward(in.q.gpu, in.k.gpu, in.v.gpu, c.scale(), c.causal);
  for (const auto& [fwd_gpu, which] :
       {std::pair{&by_cudnn, "cuDNN forward"}, std::pair{&by_kernel, "kernel forward"}}) {
    const kernels::AttentionGrads got = cudnn_backward(in, c, fwd_gpu->out, fwd_gpu->lse, dout.gpu);
    for (const auto& [g, w, name] : {std::tuple{&got.dq, &want.dq, "dq"}, std::tuple{&got.dk, &want.dk, "dk"},
                                     std::tuple{&got.dv, &want.dv, "dv"}})
      EXPECT_TRUE(all_close(g->to(cpu), *w, 0, 2 * kGradRel * std::max(1.0, max_abs(*w)))) << name << " " << which;
  }
}

TEST_F(CudaCudnnAttention, BackwardIsDeterministic) {
  // set_deterministic_algorithm: dQ without atomics, so two runs give the same bits.
  const Case c{2, 4, 300, 192, 128, true};
  const Inputs in = inputs_for(c, /*transposed=*/false, 5000);
  const Pair dout = heads(c, c.Dv, 5100, DType::f32, false);
  const kernels::AttentionOutput fwd = cudnn_forward(in, c);
  const kernels::AttentionGrads a = cudnn_backward(in, c, fwd.out, fwd.lse, dout.gpu);
  const kernels::AttentionGrads b = cudnn_backward(in, c, fwd.out, fwd.lse, dout.gpu);
  EXPECT_EQ(a.dq.to(cpu).to_doubles(), b.dq.to(cpu).to_doubles());
  EXPECT_EQ(a.dk.to(cpu).to_doubles(), b.dk.to(cpu).to_doubles());
  EXPECT_EQ(a.dv.to(cpu).to_doubles(), b.dv.to(cpu).to_doubles());
}

TEST_F(CudaCudnnAttention, TheComparisonSeesAWrongMask) {
  // cuDNN's causal result against the CPU's full attention (and its full backward against the
  // CPU's causal one) must fail the tolerances above.
  const Case c{1, 2, 130, 192, 128, true};
  const Inputs in = inputs_for(c, /*transposed=*/true, 6000);
  const kernels::AttentionOutput full = kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), false);
  const kernels::AttentionOutput got = cudnn_forward(in, c);
  EXPECT_FALSE(all_close(got.out.to(cpu), full.out, 0, kOutAtol * max_abs(in.v.cpu)));
  const Pair dout = heads(c, c.Dv, 6100, DType::f32, true);
  const kernels::AttentionOutput causal = kernels::attention_forward(in.q.cpu, in.k.cpu, in.v.cpu, c.scale(), true);
  const Tensor out = causal.out.to(DType::bf16).to(DType::f32);
  const kernels::AttentionGrads want =
      kernels::attention_backward(in.q.cpu, in.k.cpu, in.v.cpu, out, causal.lse, dout.cpu, c.scale(), true);
  Case full_case = c;
  full_case.causal = false;
  const kernels::AttentionGrads wrong = cudnn_backward(in, full_case, out.to(gpu), causal.lse.to(gpu), dout.gpu);
  EXPECT_FALSE(all_close(wrong.dk.to(cpu), want.dk, 0, kGradRel * std::max(1.0, max_abs(want.dk))));
}

}  // namespace
}  // namespace daedalus
