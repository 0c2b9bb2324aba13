// The layer ops on the tape (activations, RMSNorm, RoPE, softmax, embedding, cross-entropy, the MoE
// index ops) through the gradient-check harness on ragged shapes, contiguous and as transposed
// views; forward values against the raw kernels (bit for bit); bf16 gradients against fp32 ones.
// Integer inputs (ids, targets, indices, positions) are captured by the op closures, never passed
// to gradcheck as inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>

#include "autograd/kernels/activation.h"
#include "autograd/kernels/cross_entropy.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/kernels/embedding.h"
#include "autograd/kernels/index.h"
#include "autograd/kernels/rmsnorm.h"
#include "autograd/kernels/rope.h"
#include "autograd/kernels/softmax.h"
#include "autograd/kernels/topk.h"
#include "autograd/ops/activation.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/index.h"
#include "autograd/ops/loss.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/rope.h"
#include "autograd/ops/softmax.h"
#include "tests/gradcheck.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

using testing::all_close;
using testing::expect_gradcheck;
using testing::GradcheckOptions;
using testing::OpFn;
using testing::random_tensor;
using testing::same;

// Ragged shapes of at most ~300 elements (central differences run the op twice per element).
const std::vector<Shape> kShapes = {{13}, {1, 7}, {7, 13}, {3, 7, 13}};

Tensor int_tensor(const std::vector<int64_t>& v, DType dtype = DType::i64) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}).to(dtype);
}

// Every row (along the last dim) a shuffled grid 0.25 apart, centred on 0: no ties, and the
// gradcheck steps (h = 1e-2 * max(1, |x|) <= 0.02 here) never reorder a row, so top-k is smooth.
Tensor distinct_rows(const Shape& shape, uint64_t seed) {
  const int64_t n = shape.back(), rows = shape_numel(shape) / n;
  Generator gen(seed);
  std::vector<double> v;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> p(static_cast<size_t>(n));
    std::iota(p.begin(), p.end(), 0);
    for (size_t i = p.size(); i > 1; --i) std::swap(p[i - 1], p[gen.next_u64() % i]);
    for (int64_t c : p) v.push_back((double(c) - double(n) / 2) * 0.25 + 0.01 * double(r % 7));
  }
  return Tensor::from_values(v, shape);
}

// ---- activations --------------------------------------------------------------------------------

TEST(OpsNn, SiluSigmoidExpMatchKernelsAndGradcheck) {
  uint64_t seed = 1;
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor x = random_tensor(shape, seed++);
    EXPECT_TRUE(same(ops::silu(Var(x)).value(), kernels::unary(kernels::UnaryOp::silu, x)));
    EXPECT_TRUE(same(ops::sigmoid(Var(x)).value(), kernels::unary(kernels::UnaryOp::sigmoid, x)));
    EXPECT_TRUE(same(ops::exp(Var(x)).value(), kernels::unary(kernels::UnaryOp::exp, x)));
    expect_gradcheck([](const std::vector<Var>& in) { return ops::silu(in[0]); }, {x});
    expect_gradcheck([](const std::vector<Var>& in) { return ops::sigmoid(in[0]); }, {x});
    expect_gradcheck([](const std::vector<Var>& in) { return ops::exp(in[0]); }, {x});
  }
}

TEST(OpsNn, SwigluMatchesKernelAndGradcheck) {
  uint64_t seed = 10;
  for (const Shape& shape : {Shape{13}, Shape{1, 7}, Shape{7, 13}, Shape{3, 3, 13}}) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor gate = random_tensor(shape, seed++), up = random_tensor(shape, seed++);
    EXPECT_TRUE(same(ops::swiglu(Var(gate), Var(up)).value(), kernels::swiglu(gate, up)));
    expect_gradcheck([](const std::vector<Var>& in) { return ops::swiglu(in[0], in[1]); }, {gate, up});
    // Only the gate trains (the other input frozen): its gradient alone, and no error.
    GradcheckOptions gate_only;
    gate_only.requires_grad = {true, false};
    expect_gradcheck([](const std::vector<Var>& in) { return ops::swiglu(in[0], in[1]); }, {gate, up}, gate_only);
  }
}

// ---- normalization and position -----------------------------------------------------------------

TEST(OpsNn, RmsNormMatchesKernelAndGradcheck) {
  uint64_t seed = 20;
  for (const Shape& shape : {Shape{13}, Shape{7, 3}, Shape{1, 7}, Shape{3, 7, 13}}) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor x = random_tensor(shape, seed++);
    const Tensor w = random_tensor({shape.back()}, seed++, DType::f32, 0.5);
    EXPECT_TRUE(same(ops::rms_norm(Var(x), Var(w), 1e-6).value(), kernels::rmsnorm(x, w, 1e-6).y));
    expect_gradcheck([](const std::vector<Var>& in) { return ops::rms_norm(in[0], in[1], 1e-6); }, {x, w});
  }
}

TEST(OpsNn, RopeMatchesKernelAndGradcheck) {
  const Tensor pos7 = int_tensor({0, 1, 5, 17, 100, 1000, 3});  // T = 7, large positions included
  const Tensor pos3 = int_tensor({2, 0, 9}, DType::i32);        // T = 3, int32
  uint64_t seed = 30;
  for (const kernels::RopeLayout layout : {kernels::RopeLayout::interleaved, kernels::RopeLayout::half}) {
    for (const auto& [shape, pos] : {std::pair{Shape{1, 7, 3, 12}, pos7}, std::pair{Shape{2, 3, 1, 4}, pos3},
                                     std::pair{Shape{3, 3, 7, 2}, pos3}}) {
      SCOPED_TRACE(shape_str(shape) + (layout == kernels::RopeLayout::half ? " half" : " interleaved"));
      const Tensor x = random_tensor(shape, seed++);
      EXPECT_TRUE(same(ops::rope(Var(x), pos, 10000.0, layout).value(), kernels::rope(x, pos, 10000.0, layout)));
      expect_gradcheck([p = pos, layout](const std::vector<Var>& in) { return ops::rope(in[0], p, 10000.0, layout); },
                       {x});
    }
  }
}

// ---- softmax ------------------------------------------------------------------------------------

TEST(OpsNn, SoftmaxAndLogSoftmaxMatchKernelsAndGradcheck) {
  uint64_t seed = 40;
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor x = random_tensor(shape, seed++, DType::f32, 2.0);
    EXPECT_TRUE(same(ops::softmax(Var(x)).value(), kernels::softmax(x)));
    EXPECT_TRUE(same(ops::log_softmax(Var(x)).value(), kernels::log_softmax(x)));
    expect_gradcheck([](const std::vector<Var>& in) { return ops::softmax(in[0]); }, {x});
    expect_gradcheck([](const std::vector<Var>& in) { return ops::log_softmax(in[0]); }, {x});
  }
}

// ---- embedding and loss -------------------------------------------------------------------------

TEST(OpsNn, EmbeddingMatchesKernelAndGradcheck) {
  // Repeated ids accumulate; ids 2 and 11 never occur (their rows get a zero gradient).
  const Tensor ids_2d = int_tensor({0, 3, 3, 12, 5, 1, 1, 1, 7, 9, 10, 0, 4, 6, 8, 3, 12, 5, 0, 7, 7}).view({3, 7});
  const Tensor ids_1d = int_tensor({6, 0, 2, 2, 6}, DType::i32);
  uint64_t seed = 50;
  for (const auto& [shape, ids] : {std::pair{Shape{13, 7}, ids_2d}, std::pair{Shape{7, 3}, ids_1d}}) {
    SCOPED_TRACE(shape_str(shape));
    const Tensor w = random_tensor(shape, seed++);
    EXPECT_TRUE(same(ops::embedding(Var(w), ids).value(), kernels::embedding(w, ids)));
    expect_gradcheck([i = ids](const std::vector<Var>& in) { return ops::embedding(in[0], i); }, {w});
  }
}

TEST(OpsNn, CrossEntropyMatchesKernelAndGradcheck) {
  const Tensor logits = random_tensor({7, 13}, 60, DType::f32, 2.0);
  // Row 2 is ignored (-100); a custom ignore_index (4) ignores rows 1 and 5 instead.
  const Tensor targets = int_tensor({3, 4, -100, 12, 0, 4, 7});
  const Tensor targets_custom = int_tensor({3, 4, 9, 12, 0, 4, 7}, DType::i32);
  const kernels::CrossEntropyOutput ref = kernels::cross_entropy(logits, targets);
  const Var loss = ops::cross_entropy(Var(logits), targets);
  EXPECT_TRUE(same(loss.value(), ref.loss));
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_EQ(loss.dtype(), DType::f32);
  // The seed gradcheck draws is a random scalar: the backward must scale by it.
  expect_gradcheck([&](const std::vector<Var>& in) { return ops::cross_entropy(in[0], targets); }, {logits});
  expect_gradcheck([&](const std::vector<Var>& in) { return ops::cross_entropy(in[0], targets_custom, 4); }, {logits});
  const Tensor one_row = random_tensor({1, 3}, 61);
  expect_gradcheck([](const std::vector<Var>& in) { return ops::cross_entropy(in[0], int_tensor({2})); }, {one_row});

  // Every row ignored: the loss is 0 and the gradient exactly zero.
  Var x(logits, true);
  const Var none = ops::cross_entropy(x, int_tensor(std::vector<int64_t>(7, -100)));
  EXPECT_EQ(none.value().item(), 0.0);
  backward(none);
  EXPECT_TRUE(all_close(x.grad(), std::vector<double>(7 * 13, 0.0), 0, 0));
}

// ---- MoE index ops ------------------------------------------------------------------------------

TEST(OpsNn, TopKValuesAreDifferentiableIndicesAreNot) {
  uint64_t seed = 70;
  for (const auto& [shape, k] :
       {std::pair{Shape{13}, int64_t(3)}, std::pair{Shape{1, 1}, int64_t(1)}, std::pair{Shape{7, 13}, int64_t(3)},
        std::pair{Shape{3, 7, 13}, int64_t(7)}, std::pair{Shape{3, 7}, int64_t(7)}}) {
    SCOPED_TRACE(shape_str(shape) + " k=" + std::to_string(k));
    const Tensor x = distinct_rows(shape, seed++);
    const kernels::TopK ref = kernels::topk(x, k);
    Var xv(x, true);
    const ops::TopKVars got = ops::topk(xv, k);
    EXPECT_EQ(current_tape().size(), 1u);  // one node, for the values
    EXPECT_TRUE(got.values.requires_grad());
    EXPECT_EQ(got.indices.dtype(), DType::i64);
    EXPECT_TRUE(same(got.values.value(), ref.values));
    EXPECT_TRUE(same(got.indices, ref.indices));
    current_tape().clear();
    expect_gradcheck([k = k](const std::vector<Var>& in) { return ops::topk(in[0], k).values; }, {x});
  }
}

TEST(OpsNn, TakeAlongLastMatchesGatherAndGradcheck) {
  const Tensor x = random_tensor({3, 7, 13}, 80);
  // indices [3, 7, 4], values in [0, 13): the last of each row repeats its first (the gradient
  // of that position accumulates twice in backward).
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < 3 * 7 * 4; ++i)
    idx.push_back(i % 4 == 3 ? idx[static_cast<size_t>(i - 3)] : (i * 5 + i / 4) % 13);
  for (const DType dtype : {DType::i64, DType::i32}) {
    const Tensor indices = int_tensor(idx, dtype).view({3, 7, 4});
    const Tensor got = ops::take_along_last(Var(x), indices).value();
    ASSERT_EQ(got.shape(), (Shape{3, 7, 4}));
    std::vector<double> want;
    const std::vector<double> xs = x.to_doubles();
    for (size_t i = 0; i < idx.size(); ++i) want.push_back(xs[i / 4 * 13 + static_cast<size_t>(idx[i])]);
    EXPECT_TRUE(all_close(got, want, 0, 0));
    expect_gradcheck([&](const std::vector<Var>& in) { return ops::take_along_last(in[0], indices); }, {x});
  }
  // 1-d, and the MoE pattern: softmax is monotone, so the probabilities at the top-k indices of
  // the scores are exactly the top-k probabilities.
  const Tensor scores = distinct_rows({7, 13}, 81);
  const Tensor probs = kernels::softmax(scores);
  const Tensor top = ops::topk(Var(scores), 4).indices;
  EXPECT_TRUE(same(ops::take_along_last(Var(probs), top).value(), kernels::topk(probs, 4).values));
  expect_gradcheck(
      [](const std::vector<Var>& in) {
        return ops::take_along_last(in[0], int_tensor({12, 0, 0}));
      },
      {random_tensor({13}, 82)});
  testing::expect_error(
      [&] {
        ops::take_along_last(Var(x), int_tensor({13}).view({1, 1, 1}).expand({3, 7, 1}));
      },
      {"take_along_last", "13"});
}

// Rows 2 and 4 of a 7-row source are never named: their gradients must be zero.
const std::vector<int64_t> kRowIndex = {0, 3, 3, 6, 1, 1, 1, 5, 0, 6, 3, 3, 0};

TEST(OpsNn, GatherRowsMatchesKernelAndGradcheck) {
  const Tensor index = int_tensor(kRowIndex);
  for (const int64_t d : {int64_t(1), int64_t(13)}) {
    const Tensor x = random_tensor({7, d}, 90 + uint64_t(d));
    EXPECT_TRUE(same(ops::gather_rows(Var(x), index).value(), kernels::gather_rows(x, index)));
    expect_gradcheck([&](const std::vector<Var>& in) { return ops::gather_rows(in[0], index); }, {x});
  }
}

TEST(OpsNn, ScatterAddRowsIsOutOfPlaceAndGradcheck) {
  const Tensor index = int_tensor(kRowIndex, DType::i32);
  const Tensor base = random_tensor({7, 13}, 100), src = random_tensor({13, 13}, 101);
  const Tensor weight = random_tensor({13}, 102);
  const std::vector<double> base_before = base.to_doubles();

  Tensor want = base.clone();
  kernels::scatter_add_rows(want, index, src);
  EXPECT_TRUE(same(ops::scatter_add_rows(Var(base), index, Var(src)).value(), want));
  Tensor want_gated = base.clone();
  kernels::scatter_add_rows(want_gated, index, src, weight);
  EXPECT_TRUE(same(ops::scatter_add_rows(Var(base), index, Var(src), Var(weight)).value(), want_gated));
  EXPECT_TRUE(all_close(base, base_before, 0, 0));  // base untouched

  expect_gradcheck([&](const std::vector<Var>& in) { return ops::scatter_add_rows(in[0], index, in[1]); }, {base, src});
  expect_gradcheck([&](const std::vector<Var>& in) { return ops::scatter_add_rows(in[0], index, in[1], in[2]); },
                   {base, src, weight});
  // The MoE combine proper: zeros as base (frozen), only expert outputs and gates train.
  GradcheckOptions no_base;
  no_base.requires_grad = {false, true, true};
  expect_gradcheck([&](const std::vector<Var>& in) { return ops::scatter_add_rows(in[0], index, in[1], in[2]); },
                   {Tensor::zeros({7, 13}), src, weight}, no_base);
}

// ---- saved tensors ------------------------------------------------------------------------------

TEST(OpsNn, SavedTensorsGoThroughTheHookAndIndicesDoNot) {
  // A hook that rounds what ops save to bf16 (an activation-compression hook) and counts them.
  int packed = 0;
  const SavedTensorHook hook([&](const Tensor& t) {
    ++packed;
    const Tensor compact = t.to(DType::bf16);
    return std::function<Tensor()>([compact, dtype = t.dtype()] { return compact.to(dtype); });
  });
  auto saves = [&](const std::function<Var(const Var&)>& op, const Tensor& x) {
    packed = 0;
    Var v(x, true);
    const Var y = op(v);
    const int n = packed;
    backward(y, Tensor::ones(y.shape(), y.dtype()));
    EXPECT_TRUE(v.grad().defined());
    return n;
  };
  const Tensor x = random_tensor({3, 4, 2, 6}, 110);
  const Tensor w = random_tensor({6}, 111);
  EXPECT_EQ(saves([](const Var& v) { return ops::silu(v); }, x), 1);                     // x
  EXPECT_EQ(saves([](const Var& v) { return ops::softmax(v); }, x), 1);                  // y
  EXPECT_EQ(saves([&](const Var& v) { return ops::rms_norm(v, Var(w), 1e-6); }, x), 3);  // x, weight, rstd
  EXPECT_EQ(saves(
                [](const Var& v) {
                  return ops::rope(v, int_tensor({0, 300, 700, 1}), 10000.0, kernels::RopeLayout::half);
                },
                x),
            0);
  // ids above 256 are not bf16-representable: had they gone through the hook, rows would mix.
  const Tensor table = random_tensor({600, 2}, 112);
  const Tensor ids = int_tensor({257, 599, 301});
  Var tv(table, true);
  packed = 0;
  backward(ops::embedding(tv, ids), Tensor::ones({3, 2}));
  EXPECT_EQ(packed, 0);
  const std::vector<double> g = tv.grad().to_doubles();
  for (const int64_t row : {int64_t(257), int64_t(599), int64_t(301)})
    EXPECT_EQ(g[static_cast<size_t>(row * 2)], 1.0) << "row " << row;
  // cross_entropy saves logits and lse; its targets stay exact.
  packed = 0;
  Var lv(random_tensor({3, 600}, 113), true);
  backward(ops::cross_entropy(lv, int_tensor({257, 599, 301})));
  EXPECT_EQ(packed, 2);
}

// ---- bf16 ---------------------------------------------------------------------------------------

// Gradients of op through the tape for `inputs`, seeded with bf16-representable random weights
// (so the fp32 and bf16 runs start backward from the same values).
std::vector<Tensor> tape_grads(const OpFn& op, const std::vector<Tensor>& inputs) {
  std::vector<Var> vars;
  for (const Tensor& t : inputs) vars.emplace_back(t, is_floating(t.dtype()));
  const Var out = op(vars);
  backward(out, random_tensor(out.shape(), 120, DType::bf16).to(out.dtype()));
  std::vector<Tensor> grads;
  for (const Var& v : vars) grads.push_back(v.grad());
  return grads;
}

TEST(OpsNn, Bf16InputsGiveBf16GradientsCloseToFp32) {
  // Each case: the op, and its inputs in fp32 (values already bf16-representable), and which of
  // them to pass as bf16 (the gates of the MoE combine are fp32 by contract; an fp32 master RMSNorm
  // weight may scale bf16 activations).
  struct Case {
    std::string name;
    OpFn op;
    std::vector<Tensor> inputs;
    std::vector<bool> bf16;
  };
  auto r = [](const Shape& s, uint64_t seed) { return random_tensor(s, seed, DType::bf16).to(DType::f32); };
  const Tensor index = int_tensor(kRowIndex);
  const Tensor pos = int_tensor({0, 1, 5, 17, 100, 1000, 3});
  const Tensor targets = int_tensor({3, 4, -100, 12, 0, 4, 7});
  const Tensor ids = int_tensor({0, 3, 3, 12, 5, 1, 1});
  const Tensor top_idx = kernels::topk(distinct_rows({7, 13}, 130), 4).indices;
  const std::vector<Case> cases = {
      {"silu", [](const std::vector<Var>& in) { return ops::silu(in[0]); }, {r({7, 13}, 1)}, {true}},
      {"sigmoid", [](const std::vector<Var>& in) { return ops::sigmoid(in[0]); }, {r({7, 13}, 2)}, {true}},
      {"exp", [](const std::vector<Var>& in) { return ops::exp(in[0]); }, {r({7, 13}, 3)}, {true}},
      {"swiglu",
       [](const std::vector<Var>& in) { return ops::swiglu(in[0], in[1]); },
       {r({7, 13}, 4), r({7, 13}, 5)},
       {true, true}},
      {"rms_norm",
       [](const std::vector<Var>& in) { return ops::rms_norm(in[0], in[1], 1e-6); },
       {r({7, 13}, 6), r({13}, 7)},
       {true, true}},
      {"rms_norm fp32 weight",
       [](const std::vector<Var>& in) { return ops::rms_norm(in[0], in[1], 1e-6); },
       {r({7, 13}, 8), r({13}, 9)},
       {true, false}},
      {"rope",
       [&](const std::vector<Var>& in) { return ops::rope(in[0], pos, 10000.0, kernels::RopeLayout::half); },
       {r({2, 7, 3, 6}, 10)},
       {true}},
      {"softmax", [](const std::vector<Var>& in) { return ops::softmax(in[0]); }, {r({7, 13}, 11)}, {true}},
      {"log_softmax", [](const std::vector<Var>& in) { return ops::log_softmax(in[0]); }, {r({7, 13}, 12)}, {true}},
      {"embedding", [&](const std::vector<Var>& in) { return ops::embedding(in[0], ids); }, {r({13, 5}, 13)}, {true}},
      {"cross_entropy",
       [&](const std::vector<Var>& in) { return ops::cross_entropy(in[0], targets); },
       {r({7, 13}, 14)},
       {true}},
      {"topk",
       [](const std::vector<Var>& in) { return ops::topk(in[0], 4).values; },
       {distinct_rows({7, 13}, 15).to(DType::bf16).to(DType::f32)},
       {true}},  // 0.25 apart: still no ties
      {"take_along_last",
       [&](const std::vector<Var>& in) { return ops::take_along_last(in[0], top_idx); },
       {r({7, 13}, 16)},
       {true}},
      {"gather_rows",
       [&](const std::vector<Var>& in) { return ops::gather_rows(in[0], index); },
       {r({7, 13}, 17)},
       {true}},
      {"scatter_add_rows",
       [&](const std::vector<Var>& in) { return ops::scatter_add_rows(in[0], index, in[1]); },
       {r({7, 13}, 18), r({13, 13}, 19)},
       {true, true}},
      {"scatter_add_rows gated",
       [&](const std::vector<Var>& in) { return ops::scatter_add_rows(in[0], index, in[1], in[2]); },
       {r({7, 13}, 20), r({13, 13}, 21), r({13}, 22)},
       {true, true, false}},
  };
  // Tolerance: every bf16 kernel computes in float from the (identical) bf16 input values and rounds
  // its result once, so an element differs from fp32 by about one bf16 rounding, u = 2^-8 of itself.
  // Ops that save their bf16 output for backward (softmax, sigmoid, exp, log-softmax) read it with
  // one more rounding, and backward formulas that subtract (softmax, log-softmax, RMSNorm, RoPE's
  // rotation) can cancel, leaving an error relative to the largest gradient rather than to the
  // element: |bf16 - fp32| <= 4u |fp32| + 4u max|fp32|. Copies (topk, gathers) are exact.
  const double u = testing::unit_roundoff(DType::bf16);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<Tensor> low;
    for (size_t i = 0; i < c.inputs.size(); ++i) low.push_back(c.bf16[i] ? c.inputs[i].to(DType::bf16) : c.inputs[i]);
    const std::vector<Tensor> g32 = tape_grads(c.op, c.inputs), g16 = tape_grads(c.op, low);
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      SCOPED_TRACE("input " + std::to_string(i));
      ASSERT_TRUE(g16[i].defined());
      EXPECT_EQ(g16[i].dtype(), low[i].dtype());
      double scale = 0;
      for (double v : g32[i].to_doubles()) scale = std::max(scale, std::fabs(v));
      EXPECT_TRUE(all_close(g16[i], g32[i], 4 * u, 4 * u * scale));
    }
  }
}

}  // namespace
}  // namespace daedalus
