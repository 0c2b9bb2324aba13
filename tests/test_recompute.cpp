// train.recompute (model/linear.h): selective and full recomputation give the same loss and the
// same gradient, bit for bit, as keeping every activation, and keep less.
//
// The model is tests/model_testing.h's small DeepSeek-V3 shape (one dense and one MoE layer, q_lora,
// 8 experts, a shared expert, MTP depth 1), one forward and backward of [2, 24] tokens, under fp32
// and fp8_block (FP8 GEMMs with 1x128 / 128x128 scales, FP8 activation caches). Recomputing runs
// the same kernels on the same inputs and accumulates gradients in the same order, so every
// gradient and the loss must be equal to the last bit (no tolerance), as must the router's load
// counts the bias update reads. The peak of live bytes during backward must not grow (selective)
// and must fall (full: a layer's activations exist only while its backward runs).
#include <gtest/gtest.h>

#include <optional>
#include <utility>
#include <vector>

#include "autograd/allocator.h"
#include "autograd/generator.h"
#include "model/causal_lm.h"
#include "model/moe.h"
#include "tests/model_testing.h"

namespace daedalus {
namespace {

using model::Recompute;

struct Pass {
  double loss = 0;
  std::vector<std::vector<float>> grads;  // every trainable parameter, registration order
  std::vector<std::vector<int64_t>> loads;
  int64_t peak_bytes = 0;  // allocator high-water mark from after building the model
};

Pass run(Recompute policy, const std::string& recipe) {
  model::LmOptions o;
  o.config = testing::small_model_config();
  o.recipes = testing::recipes_of(recipe);
  o.seed = 5;
  o.recompute = policy;
  model::CausalLM lm(o);
  Generator gen(11);
  std::vector<int64_t> ids(2 * 25);
  for (int64_t& v : ids) v = int64_t(gen.next_u64() % uint64_t(o.config.vocab_size));
  const Tensor all = Tensor::from_vector(ids, {2, 25});
  const Tensor inputs = all.slice(1, 0, 24).contiguous(), targets = all.slice(1, 1, 25).contiguous();
  allocator_for(Device::cpu()).reset_peak();
  const int64_t before = allocator_for(Device::cpu()).stats().current_bytes;
  const model::LmOutput out = lm.forward(inputs, targets);
  backward(out.loss);
  Pass p;
  p.peak_bytes = allocator_for(Device::cpu()).stats().peak_bytes - before;
  p.loss = out.loss.value().item();
  for (const model::Parameter& param : lm.parameters().all())
    if (param.trainable) p.grads.push_back(param.var.grad().to_vector<float>());
  for (model::Moe* moe : lm.moe_layers()) p.loads.push_back(moe->load().tokens);
  return p;
}

class Recomputation : public ::testing::TestWithParam<std::string> {};

TEST_P(Recomputation, SelectiveAndFullAreBitIdenticalToNone) {
  const std::string recipe = GetParam();
  const Pass none = run(Recompute::none, recipe);
  for (Recompute policy : {Recompute::selective, Recompute::full}) {
    const char* name = policy == Recompute::full ? "full" : "selective";
    const Pass p = run(policy, recipe);
    EXPECT_EQ(p.loss, none.loss) << name;
    ASSERT_EQ(p.grads.size(), none.grads.size());
    for (size_t i = 0; i < p.grads.size(); ++i) ASSERT_EQ(p.grads[i], none.grads[i]) << name << " parameter " << i;
    EXPECT_EQ(p.loads, none.loads) << name << ": the router loads the bias update reads";
    std::printf("[ recompute ] %s %s: peak %lld bytes (none %lld)\n", recipe.c_str(), name, (long long)p.peak_bytes,
                (long long)none.peak_bytes);
    EXPECT_LE(p.peak_bytes, none.peak_bytes) << name;
    if (policy == Recompute::full) {
      EXPECT_LT(p.peak_bytes, none.peak_bytes) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, Recomputation, ::testing::Values("fp32", "fp8_block"));

// Tape::first_use, which the overlapped gradient reduction (parallel/grad_overlap.h) relies on: once
// backward has run the nodes from a parameter's first use on, its gradient is final. An observer
// copies each gradient at the moment the rule declares it final; after backward every copy must
// equal the gradient bit for bit, under each recompute policy (full: the layers' parameters are
// read inside recompute() closures, not passed as node inputs). Also checked: the rule is not
// vacuous — some gradients are final before the last node runs.
class FinalGradients final : public BackwardObserver {
 public:
  explicit FinalGradients(std::vector<Var> params) : params_(std::move(params)), at_(params_.size()) {}
  void begin(const Tape& tape) override {
    size_ = tape.size();
    for (size_t i = 0; i < params_.size(); ++i) first_use_.push_back(tape.first_use(params_[i].slot().get()));
    node_done(size_);
  }
  void node_done(size_t index) override {
    for (size_t i = 0; i < params_.size(); ++i)
      if (!at_[i] && index <= first_use_[i]) {
        at_[i] = index;
        copies_.emplace_back(i,
                             params_[i].grad().defined() ? params_[i].grad().to_vector<float>() : std::vector<float>{});
      }
  }
  void end() override {}

  std::vector<Var> params_;
  std::vector<std::optional<size_t>> at_;  // the node index at which each gradient was final
  std::vector<size_t> first_use_;
  std::vector<std::pair<size_t, std::vector<float>>> copies_;
  size_t size_ = 0;
};

TEST(Recomputation, GradientsAreFinalFromTheirFirstUseOn) {
  for (Recompute policy : {Recompute::none, Recompute::selective, Recompute::full}) {
    model::LmOptions o;
    o.config = testing::small_model_config();
    o.recipes = testing::recipes_of("fp32");
    o.seed = 5;
    o.recompute = policy;
    model::CausalLM lm(o);
    std::vector<Var> params;
    for (const model::Parameter& p : lm.parameters().all())
      if (p.trainable) params.push_back(p.var);
    Generator gen(3);
    std::vector<int64_t> ids(2 * 25);
    for (int64_t& v : ids) v = int64_t(gen.next_u64() % uint64_t(o.config.vocab_size));
    const Tensor all = Tensor::from_vector(ids, {2, 25});
    const model::LmOutput out = lm.forward(all.slice(1, 0, 24).contiguous(), all.slice(1, 1, 25).contiguous());
    FinalGradients observer(params);
    current_tape().set_observer(&observer);
    backward(out.loss);
    ASSERT_EQ(observer.copies_.size(), params.size()) << "every parameter final by the end";
    size_t early = 0;
    for (const auto& [i, copy] : observer.copies_) {
      EXPECT_EQ(copy, params[i].grad().to_vector<float>()) << "parameter " << i << " changed after it was final";
      if (*observer.at_[i] > 0) ++early;
    }
    EXPECT_GT(early, params.size() / 4) << "most of the layers' gradients are final before the last node";
    std::printf("[ first use ] recompute %d: %zu of %zu gradients final before the last of %zu nodes\n", int(policy),
                early, params.size(), observer.size_);
  }
}

}  // namespace
}  // namespace daedalus
