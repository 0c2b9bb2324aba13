// The causal LM: embedding, decoder stack, head, losses, multi-token prediction.
#include "model/causal_lm.h"

#include "autograd/kernels/copy.h"
#include "autograd/ops/arithmetic.h"
#include "autograd/ops/embedding.h"
#include "autograd/ops/loss.h"
#include "autograd/ops/norm.h"
#include "autograd/ops/shape.h"

namespace daedalus::model {

namespace {

constexpr int64_t kIgnore = -100;

// t [B, T] int64 shifted left by k along T, the last k columns filled with `fill`.
Tensor shift_left(const Tensor& t, int64_t k, int64_t fill) {
  const int64_t b = t.size(0), n = t.size(1);
  Tensor out = Tensor::full({b, n}, double(fill), DType::i64, t.device());
  if (k < n) out.slice(1, 0, n - k).copy_(t.slice(1, k, n));
  return out;
}

}  // namespace

CausalLM::CausalLM(const LmOptions& options)
    : options_(options), stage_(options.stage), store_(options.seed, options.config.initializer_range, options.device) {
  const ModelConfig& c = options_.config;
  c.validate();
  options_.moe.validate();
  options_.mtp.validate();
  if (stage_.end < 0) stage_.end = c.num_hidden_layers;
  DAEDALUS_CHECK(stage_.begin >= 0 && stage_.begin < stage_.end && stage_.end <= c.num_hidden_layers,
                 "model: stage layers [{}, {}) outside the {} decoder layers", stage_.begin, stage_.end,
                 c.num_hidden_layers);
  const BuildContext ctx{&store_, &options_.recipes, options_.recompute};
  const bool shares_embedding = c.tie_word_embeddings || c.num_nextn_predict_layers > 0;
  if (stage_.first || (stage_.last && shares_embedding))
    embed_tokens_ = store_.add("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, Init::normal);
  for (int64_t l = stage_.begin; l < stage_.end; ++l)
    layers_.push_back(std::make_unique<DecoderLayer>(ctx, c, options_.moe, fmt::format("model.layers.{}", l),
                                                     c.is_moe_layer(l), options_.block));
  if (!stage_.last) return;
  norm_ = store_.add("model.norm.weight", {c.hidden_size}, Init::ones, /*weight_decay=*/false);
  lm_head_ = c.tie_word_embeddings ? Linear(ctx, "lm_head", embed_tokens_)
                                   : Linear(ctx, "lm_head", c.hidden_size, c.vocab_size);
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int64_t index = c.num_hidden_layers + k;
    const std::string module = fmt::format("model.layers.{}", index);
    MtpModule m;
    m.enorm = store_.add(module + ".enorm.weight", {c.hidden_size}, Init::ones, /*weight_decay=*/false);
    m.hnorm = store_.add(module + ".hnorm.weight", {c.hidden_size}, Init::ones, /*weight_decay=*/false);
    m.eh_proj = Linear(ctx, module + ".eh_proj", 2 * c.hidden_size, c.hidden_size);
    m.block = std::make_unique<DecoderLayer>(ctx, c, options_.moe, module, c.is_moe_layer(index), options_.block);
    m.final_norm = store_.add(module + ".shared_head.norm.weight", {c.hidden_size}, Init::ones, /*weight_decay=*/false);
    mtp_.push_back(std::move(m));
  }
}

void CausalLM::check_whole(const char* what) const {
  DAEDALUS_CHECK(stage_.first && stage_.last && stage_.begin == 0 && stage_.end == options_.config.num_hidden_layers,
                 "model: {} needs the whole model, but this rank holds pipeline stage layers [{}, {})", what,
                 stage_.begin, stage_.end);
}

Var CausalLM::embed(const Tensor& inputs) {
  DAEDALUS_CHECK(stage_.first, "model: embed on a pipeline stage without the embedding (layers [{}, {}))", stage_.begin,
                 stage_.end);
  return ops::embedding(embed_tokens_, inputs);
}

Var CausalLM::run_layers(const Var& h, const Tensor& positions, std::vector<Var>* aux_losses) {
  Var x = h;
  for (auto& layer : layers_) x = layer->forward(x, positions, aux_losses);
  return x;
}

Var CausalLM::hidden_states(const Tensor& inputs, const Tensor& positions, std::vector<Var>* aux_losses) {
  return run_layers(embed(inputs), positions, aux_losses);
}

Var CausalLM::head(const Var& hidden, const Var& norm_weight) {
  return lm_head_.forward(ops::rms_norm(hidden, norm_weight, options_.config.rms_norm_eps));
}

Var CausalLM::logits(const Tensor& inputs, Var* hidden) {
  check_whole("logits");
  DAEDALUS_CHECK(inputs.dim() == 2, "model: inputs {}: expected [batch, seq]", shape_str(inputs.shape()));
  const int64_t t = inputs.size(1);
  DAEDALUS_CHECK(t <= options_.config.max_position_embeddings,
                 "model: a sequence of {} tokens exceeds model.max_position_embeddings = {}", t,
                 options_.config.max_position_embeddings);
  const Var h = hidden_states(inputs, Tensor::arange(t, DType::i64, inputs.device()), nullptr);
  if (hidden != nullptr) *hidden = h;
  return head(h, norm_);
}

DecodeCache CausalLM::new_cache(CacheKind kind) const {
  check_whole("generation");
  DecodeCache cache;
  cache.kind = kind;
  cache.layers.resize(layers_.size());
  return cache;
}

Tensor CausalLM::decode(const Tensor& tokens, DecodeCache& cache) {
  check_whole("generation");
  DAEDALUS_CHECK(tokens.dim() == 2 && tokens.size(0) == 1, "model: decode tokens {}: expected [1, seq]",
                 shape_str(tokens.shape()));
  DAEDALUS_CHECK(cache.layers.size() == layers_.size(), "model: decode cache of {} layers for a model of {}",
                 cache.layers.size(), layers_.size());
  NoGradGuard no_grad;  // no tape, and the routers count no load (Moe::forward)
  Var h = ops::embedding(embed_tokens_, tokens);
  for (size_t l = 0; l < layers_.size(); ++l) h = layers_[l]->decode(h, cache.layers[l], cache.kind);
  return head(h, norm_).value();
}

LmOutput CausalLM::forward(const Tensor& inputs, const Tensor& targets, const Tensor& packed_positions) {
  check_whole("forward");
  const ModelConfig& c = options_.config;
  DAEDALUS_CHECK(inputs.dim() == 2 && targets.shape() == inputs.shape(),
                 "model: inputs {} and targets {}: expected both [batch, seq]", shape_str(inputs.shape()),
                 shape_str(targets.shape()));
  const int64_t t = inputs.size(1);
  DAEDALUS_CHECK(t <= c.max_position_embeddings,
                 "model: a sequence of {} tokens exceeds model.max_position_embeddings = {}", t,
                 c.max_position_embeddings);
  // On the host for any device: RoPE builds its cos/sin table from them there (cached per device
  // for CUDA inputs), so reading them costs no device synchronization.
  const Tensor positions =
      packed_positions.defined() ? packed_positions.to(Device::cpu()) : Tensor::arange(t, DType::i64, Device::cpu());
  std::vector<Var> aux;
  const Var h = hidden_states(inputs, positions, &aux);
  return finish(h, inputs, targets, positions, std::move(aux));
}

LmOutput CausalLM::finish(const Var& hidden, const Tensor& inputs, const Tensor& targets, const Tensor& positions,
                          std::vector<Var> aux) {
  const ModelConfig& c = options_.config;
  DAEDALUS_CHECK(stage_.last, "model: losses on a pipeline stage without the head (layers [{}, {}))", stage_.begin,
                 stage_.end);
  const int64_t b = inputs.size(0), t = inputs.size(1), v = c.vocab_size;
  LmOutput out;
  Var h = hidden;
  out.lm_loss = ops::cross_entropy(ops::reshape(head(h, norm_), {b * t, v}), targets.reshape({b * t}));
  out.loss = out.lm_loss;

  for (size_t k = 1; k <= mtp_.size(); ++k) {
    MtpModule& m = mtp_[k - 1];
    const Var emb = ops::embedding(embed_tokens_, shift_left(inputs, int64_t(k), 0));
    const Var joined =
        ops::concat({ops::rms_norm(emb, m.enorm, c.rms_norm_eps), ops::rms_norm(h, m.hnorm, c.rms_norm_eps)}, 2);
    h = m.block->forward(m.eh_proj.forward(joined), positions, &aux);
    const Tensor target_k = shift_left(targets, int64_t(k), kIgnore);
    out.mtp_depth_losses.push_back(
        ops::cross_entropy(ops::reshape(head(h, m.final_norm), {b * t, v}), target_k.reshape({b * t}), kIgnore));
  }
  if (!mtp_.empty()) {
    Var sum = out.mtp_depth_losses[0];
    for (size_t k = 1; k < out.mtp_depth_losses.size(); ++k) sum = ops::add(sum, out.mtp_depth_losses[k]);
    out.mtp_loss = ops::affine(sum, 1.0 / double(mtp_.size()));
    if (options_.mtp.loss_weight > 0)
      out.loss = ops::add(out.loss, ops::affine(out.mtp_loss, options_.mtp.loss_weight));
  }
  if (!aux.empty()) {
    out.aux_loss = aux[0];
    for (size_t i = 1; i < aux.size(); ++i) out.aux_loss = ops::add(out.aux_loss, aux[i]);
    out.loss = ops::add(out.loss, out.aux_loss);
  }
  return out;
}

std::vector<Moe*> CausalLM::moe_layers() {
  std::vector<Moe*> out;
  for (auto& layer : layers_)
    if (layer->moe()) out.push_back(layer->moe());
  for (auto& m : mtp_)
    if (m.block->moe()) out.push_back(m.block->moe());
  return out;
}

std::vector<Linear*> CausalLM::linears() {
  std::vector<Linear*> out;
  const auto add_block = [&](DecoderLayer& layer) {
    for (Linear* l : layer.attention().linears()) out.push_back(l);
    if (layer.mlp()) {
      for (Linear* l : layer.mlp()->linears()) out.push_back(l);
    } else if (Mlp* shared = layer.moe()->shared_experts()) {
      for (Linear* l : shared->linears()) out.push_back(l);
    }
  };
  for (auto& layer : layers_) add_block(*layer);
  if (stage_.last) out.push_back(&lm_head_);
  for (auto& m : mtp_) {
    out.push_back(&m.eh_proj);
    add_block(*m.block);
  }
  return out;
}

std::vector<GroupedLinear*> CausalLM::grouped_linears() {
  std::vector<GroupedLinear*> out;
  for (Moe* moe : moe_layers())
    for (GroupedLinear* g : moe->experts()) out.push_back(g);
  return out;
}

void CausalLM::update_router_biases() {
  for (Moe* moe : moe_layers()) moe->update_bias();
}

}  // namespace daedalus::model
