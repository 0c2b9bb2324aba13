// The per-rank memory and per-step cost model behind `daedalus plan` (see plan.h).
//
// Activations are counted tensor by tensor as the ops in model/ save them for backward (autograd/
// ops/*.cpp, fp8/linear.cpp), per micro-batch of N = micro_batch_size x seq_len tokens on a rank:
// a tensor several ops keep (a norm's output read by two FP32 GEMMs) is counted once; a BF16 or FP8
// copy a Linear makes of its input is its own. tests/test_plan.cpp holds the sums against the
// allocator's measured peak of real runs.
#include "train/plan.h"

#include <algorithm>
#include <cmath>

#include "autograd/check.h"
#include "fp8/quantized.h"
#include "fp8/recipe.h"
#include "model/param_count.h"
#include "model/stages.h"
#include "train/trainer.h"

namespace daedalus::train {

namespace {

constexpr double kF32 = 4, kBf16 = 2;

// Scale bytes per element of an FP8 operand quantized at `g` along rows of `cols`.
double scale_bytes(fp8::Granularity g, int64_t cols) {
  switch (g) {
    case fp8::Granularity::tensor: return 0;
    case fp8::Granularity::row: return kF32 / double(cols);
    case fp8::Granularity::tile_1x128: return kF32 / 128;
    case fp8::Granularity::block_128x128: return kF32 / (128.0 * 128.0);
    case fp8::Granularity::mx_1x32: return kF32 / 32;
    case fp8::Granularity::nv_1x16: return kF32 / 16;
    case fp8::Granularity::nv_16x16: return kF32 / (16.0 * 16.0);
  }
  return 0;
}

// What one micro-batch keeps, in bytes.
struct Saved {
  double activations = 0, fp8 = 0, weight_caches = 0;
  void add(const Saved& o) {
    activations += o.activations;
    fp8 += o.fp8;
    weight_caches += o.weight_caches;
  }
};

// The activation walk over one micro-batch (see the file comment).
class Walk {
 public:
  Walk(const RunConfig& c, double tokens)
      : c_(c), m_(c.model), n_(tokens), table_(c.precision.recipe, c.precision.overrides) {}

  // A Linear `module` [in -> out] with `rows` input rows whose FP32 input is `fp32_input_kept`
  // already (another op keeps the same tensor) or not. Returns the bytes it adds to `s`; `fused`:
  // its input is a SwiGLU product quantized straight to FP8 (fp8::swiglu_linear).
  void linear(Saved& s, const std::string& module, double rows, double in, double weight_elems, bool* fp32_kept,
              bool fused = false) const {
    const fp8::Recipe r = table_.for_module(module);
    if (r.is_fp8()) {
      if (r.cache_fp8 || fused) {
        const double b = rows * in * (1 + scale_bytes(r.fprop().a.granularity, int64_t(in)));
        s.activations += b;
        s.fp8 += b;
      } else if (!*fp32_kept) {
        s.activations += kF32 * rows * in;
        *fp32_kept = true;
      }
      const fp8::OperandSpec f = r.fprop().b, d = r.dgrad().b;
      if (f.granularity == d.granularity && f.format == d.format && fp8::transposes_exactly(f.granularity) &&
          !r.delayed() && !r.scale.stochastic_rounding)
        s.weight_caches += weight_elems * (1 + scale_bytes(f.granularity, int64_t(in)));
    } else if (r.kind == fp8::RecipeKind::bf16) {
      s.activations += kBf16 * rows * in;
      s.weight_caches += kBf16 * weight_elems;
    } else if (!*fp32_kept) {
      s.activations += kF32 * rows * in;
      *fp32_kept = true;
    }
  }

  // Whether `module`'s SwiGLU product is quantized straight to FP8 (fp8::fuses_swiglu).
  bool fuses_swiglu(const std::string& module) const {
    const fp8::Recipe r = table_.for_module(module);
    return r.is_fp8() && r.fprop().a.granularity == fp8::Granularity::tile_1x128 && !r.delayed() &&
           !r.scale.stochastic_rounding && c_.precision.stats_every == 0;
  }

  // A SwiGLU FFN on `rows` rows whose input (D wide) is kept as `input_kept`: gate and up, the
  // product, and the three projections. `recompute`: only gate and up are kept (selective).
  Saved swiglu(const std::string& prefix, double rows, double f, double weight_elems_each, bool* input_kept,
               bool recompute) const {
    const double d = double(m_.hidden_size);
    Saved s;
    linear(s, prefix + ".gate_proj", rows, d, weight_elems_each, input_kept);
    bool same_input = *input_kept;  // up reads the same tensor
    linear(s, prefix + ".up_proj", rows, d, weight_elems_each, &same_input);
    s.activations += 2 * kF32 * rows * f;  // gate, up (the swiglu's inputs)
    if (recompute) return s;
    bool product_kept = false;
    linear(s, prefix + ".down_proj", rows, f, weight_elems_each, &product_kept, fuses_swiglu(prefix + ".down_proj"));
    return s;
  }

  // Multi-head latent attention of layer `prefix` on a kept input (the input norm's output).
  Saved attention(const std::string& prefix, bool* input_kept, bool recompute) const {
    const double d = double(m_.hidden_size), h = double(m_.num_attention_heads);
    const double qr = m_.q_lora_rank ? double(*m_.q_lora_rank) : 0, kr = double(m_.kv_lora_rank);
    const double dn = double(m_.qk_nope_head_dim), dr = double(m_.qk_rope_head_dim), dv = double(m_.v_head_dim);
    const double dqk = dn + dr;
    Saved s;
    if (m_.q_lora_rank) {
      linear(s, prefix + ".q_a_proj", n_, d, d * qr, input_kept);
    } else {
      linear(s, prefix + ".q_proj", n_, d, d * h * dqk, input_kept);
    }
    linear(s, prefix + ".kv_a_proj_with_mqa", n_, d, d * (kr + dr), input_kept);
    // The latents: q_a's output (or q_proj's) and kv_a's, kept by the latent norms (or by the
    // recomputed span as its inputs) with their rstd.
    s.activations += kF32 * n_ * ((m_.q_lora_rank ? qr : h * dqk) + kr + dr);
    if (recompute) {
      bool out_kept = false;
      linear(s, prefix + ".o_proj", n_, h * dv, h * dv * d, &out_kept);  // the core's output, copied
      return s;
    }
    if (m_.q_lora_rank) {
      s.activations += kF32 * n_;  // q_a_layernorm's rstd
      bool kept = false;
      linear(s, prefix + ".q_b_proj", n_, qr, qr * h * dqk, &kept);
    }
    s.activations += kF32 * n_;  // kv_a_layernorm's rstd
    bool kv_norm_kept = false;
    linear(s, prefix + ".kv_b_proj", n_, kr, kr * h * (dn + dv), &kv_norm_kept);
    // The core keeps q, k (concatenated with their RoPE parts), v, its output and lse. In FP32 the
    // v it keeps is a view of kv_b_proj's whole output; otherwise q, k, v are BF16 copies.
    const bool fp32_core = table_.for_module(prefix).high_precision_dtype() == DType::f32;
    if (fp32_core) {
      s.activations += kF32 * n_ * (2 * h * dqk + h * (dn + dv));
    } else {
      s.activations += kBf16 * n_ * (2 * h * dqk + h * dv);
    }
    s.activations += kF32 * n_ * h * (dv + 1);  // output, lse
    bool out_kept = false;
    linear(s, prefix + ".o_proj", n_, h * dv, h * dv * d, &out_kept);  // its input is a copy of the output
    return s;
  }

  // Decoder layer `index` (main stack or MTP block) on its input.
  Saved layer(int64_t index, model::Recompute policy) const {
    const std::string prefix = "model.layers." + std::to_string(index);
    const double d = double(m_.hidden_size);
    Saved s;
    s.activations += kF32 * n_ * (d + 1);  // the input (the input norm keeps it) and rstd
    if (policy == model::Recompute::full) return s;
    const bool selective = policy == model::Recompute::selective;
    bool normed_kept = false;
    s.add(attention(prefix + ".self_attn", &normed_kept, selective));
    s.activations += kF32 * n_ * (d + 1);  // the residual sum (the second norm keeps it) and rstd
    bool ffn_in_kept = false;
    if (!m_.is_moe_layer(index)) {
      s.add(swiglu(prefix + ".mlp", n_, double(m_.intermediate_size), d * double(m_.intermediate_size), &ffn_in_kept,
                   selective));
      return s;
    }
    const double e = double(m_.n_routed_experts), k = double(m_.num_experts_per_tok);
    const double fm = double(m_.moe_intermediate_size);
    // Router: an FP32 Linear on the (kept) input, the scores (sigmoid / softmax output and, for the
    // sequence aux loss, their normalization), and the gates.
    if (!ffn_in_kept) s.activations += kF32 * n_ * d;
    ffn_in_kept = true;
    s.activations += kF32 * n_ * (2 * e + 4 * k);
    // Routed experts: N·k rows on a rank on average (balanced routing), gathered, through the
    // grouped SwiGLU, and their outputs kept (with the gates) by the weighted scatter-add.
    const double rows = n_ * k, local = e / double(c_.parallel.expert_parallel);
    bool gathered_kept = false;
    Saved routed = swiglu(prefix + ".mlp.experts", rows, fm, local * d * fm, &gathered_kept, selective);
    s.add(routed);
    s.activations += kF32 * rows * (d + 1);
    if (m_.n_shared_experts > 0) {
      const double fs = fm * double(m_.n_shared_experts);
      s.add(swiglu(prefix + ".mlp.shared_experts", n_, fs, d * fs, &ffn_in_kept, selective));
    }
    return s;
  }

  // The gradients decoder layer `index`'s backward holds at once beside what is saved: its FFN's
  // output and input gradients [rows, D] and gate and up's [rows, F] (routed experts: N·k rows).
  double ffn_gradients(int64_t index) const {
    const double d = double(m_.hidden_size);
    if (!m_.is_moe_layer(index)) return kF32 * n_ * (2 * d + 2 * double(m_.intermediate_size));
    const double rows = n_ * double(m_.num_experts_per_tok);
    return kF32 * rows * (2 * d + 2 * double(m_.moe_intermediate_size));
  }

  // The final norm, lm_head and the cross-entropy (logits and lse).
  Saved head() const {
    const double d = double(m_.hidden_size), v = double(m_.vocab_size);
    Saved s;
    s.activations += kF32 * n_ * (d + 1);  // model.norm's input and rstd
    bool kept = false;
    linear(s, "lm_head", n_, d, d * v, &kept);
    s.activations += kF32 * n_ * (v + 1);  // logits, lse
    return s;
  }

  // One MTP depth around its block: embedding norm, the hidden state's norm, eh_proj, the shared
  // head's norm, lm_head again and its cross-entropy.
  Saved mtp(int64_t depth) const {
    const double d = double(m_.hidden_size), v = double(m_.vocab_size);
    const std::string prefix = "model.layers." + std::to_string(m_.num_hidden_layers + depth);
    Saved s;
    s.activations += kF32 * n_ * (d + 2);  // the embedding (enorm keeps it), both rstd
    bool kept = false;
    linear(s, prefix + ".eh_proj", n_, 2 * d, 2 * d * d, &kept);
    s.activations += kF32 * n_ * (d + 1);  // shared_head.norm's input and rstd
    bool head_kept = false;
    linear(s, "lm_head", n_, d, 0, &head_kept);  // the weight's copy is lm_head's, counted once
    s.activations += kF32 * n_ * (v + 1);
    return s;
  }

 private:
  const RunConfig& c_;
  const model::ModelConfig& m_;
  double n_;
  fp8::RecipeTable table_;
};

// The decoder layers `share` holds: its main-stack layers, and the MTP modules' with the head
// (layer_parameters' indices).
std::vector<int64_t> held_layers(const model::ModelConfig& m, const RankShare& share) {
  std::vector<int64_t> layers;
  const int64_t end = share.end_layer < 0 ? m.num_hidden_layers : share.end_layer;
  for (int64_t l = share.first_layer; l < end; ++l) layers.push_back(l);
  if (share.head)
    for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) layers.push_back(m.num_hidden_layers + k);
  return layers;
}

}  // namespace

std::vector<RankShare> stage_shares(const RunConfig& config) {
  const int64_t p = config.parallel.pipeline_parallel;
  if (p <= 1) return {RankShare{}};
  const model::ModelConfig& m = config.model;
  const std::vector<int64_t> layers = stage_layers(config);
  std::vector<RankShare> shares;
  for (int64_t s = 0; s < p; ++s) {
    const model::StageSpan span = model::stage_span(layers, s);
    RankShare share;
    share.first_layer = span.begin;
    share.end_layer = span.end;
    share.head = span.last;
    // Tied or MTP: the last stage keeps a copy of the embedding (Trainer::shares_embedding).
    share.embedding = span.first || (span.last && (m.tie_word_embeddings || m.num_nextn_predict_layers > 0));
    share.receives = !span.first;
    share.sends = !span.last;
    share.in_flight = std::min(p - s, config.train.grad_accum_steps);  // 1F1B (train/pipeline_schedule.h)
    shares.push_back(share);
  }
  return shares;
}

MemoryPlan plan_memory(const RunConfig& config, int64_t world, int64_t stage) {
  const std::vector<RankShare> shares = stage_shares(config);
  DAEDALUS_CHECK(stage >= 0 && stage < int64_t(shares.size()), "plan: stage {} of {}", stage, shares.size());
  return plan_memory(config, world, shares[size_t(stage)]);
}

std::vector<MemoryPlan> plan_stage_memory(const RunConfig& config, int64_t world) {
  std::vector<MemoryPlan> out;
  for (const RankShare& share : stage_shares(config)) out.push_back(plan_memory(config, world, share));
  return out;
}

MemoryPlan plan_memory(const RunConfig& config, int64_t world, const RankShare& share) {
  const model::ModelConfig& m = config.model;
  const int64_t ep = config.parallel.expert_parallel, pp = config.parallel.pipeline_parallel;
  DAEDALUS_CHECK(world >= 1 && world % (pp * ep) == 0,
                 "plan: world {} is not a multiple of parallel.pipeline_parallel x parallel.expert_parallel = {} x {}",
                 world, pp, ep);
  const int64_t stage_ranks = world / pp, replicas = stage_ranks / ep;
  const bool zero = config.parallel.zero_stage == 1;
  const int64_t d = m.hidden_size, v = m.vocab_size;

  // Parameters this rank holds, split into dense (every rank of the stage) and routed (1/EP).
  double dense = 0, routed = 0, buffers = 0;
  const std::vector<int64_t> layers = held_layers(m, share);
  for (int64_t l : layers) {
    const model::LayerParameters p = model::layer_parameters(m, l);
    dense += double(p.dense);
    routed += double(p.routed) / double(ep);
    buffers += double(p.buffers);
  }
  if (share.embedding) dense += double(v * d);
  if (share.head) dense += double(d + (m.tie_word_embeddings && share.embedding ? 0 : v * d));

  MemoryPlan plan;
  plan.params_held = int64_t(dense + routed);
  plan.params_sharded =
      zero ? int64_t(std::ceil(dense / double(stage_ranks)) + std::ceil(routed / double(replicas))) : plan.params_held;
  plan.weights = int64_t(kF32 * (dense + routed + buffers));
  plan.gradients = int64_t(kF32 * (dense + routed));
  const double moment_bytes = config.optimizer.state_dtype == DType::bf16 ? 2 * kBf16 : 2 * kF32;
  plan.moments = int64_t(moment_bytes * double(plan.params_sharded));

  // One micro-batch's saved tensors.
  const double tokens = double(config.train.micro_batch_size * config.train.seq_len);
  const double hidden = kF32 * tokens * double(d);  // one [micro_batch, seq, hidden] fp32 tensor
  const Walk walk(config, tokens);
  Saved saved;
  Saved largest_layer;  // what a recomputed layer re-creates during its backward (full)
  double layer_gradients = 0;
  for (int64_t l : layers) {
    saved.add(walk.layer(l, config.train.recompute));
    layer_gradients = std::max(layer_gradients, walk.ffn_gradients(l));
    const Saved whole = walk.layer(l, model::Recompute::none);
    if (whole.activations + whole.weight_caches > largest_layer.activations + largest_layer.weight_caches)
      largest_layer = whole;
  }
  if (share.head) {
    saved.add(walk.head());
    for (int64_t k = 0; k < m.num_nextn_predict_layers; ++k) saved.add(walk.mtp(k));
  }
  // A stage that sends on keeps its output until the gradient for it comes back (a received input
  // is the first layer's input, counted there).
  if (share.sends) saved.activations += hidden;
  const double in_flight = double(share.in_flight);
  plan.activations = int64_t(saved.activations * in_flight);
  plan.fp8_caches = int64_t(saved.fp8 * in_flight);
  plan.weight_caches = int64_t(saved.weight_caches * in_flight);

  // At the start of backward: the logits' gradient [N, V] next to everything saved; a stage
  // without the head starts in its last layer instead, with the received gradient of its output,
  // the layer's FFN gradients and the input's gradient it sends back. A fully recomputed layer
  // re-creates its activations for the length of its backward.
  double transient = share.head ? kF32 * tokens * double(v) : layer_gradients;
  transient += hidden * double(int(share.sends) + int(share.receives));
  if (config.train.recompute == model::Recompute::full)
    transient += largest_layer.activations + largest_layer.weight_caches;
  plan.transient = int64_t(transient);

  // The gradient sync: one bucket (32 MiB at most) and its shard, for each of the two groups.
  const double bucket = std::min(double(int64_t(32) << 20), kF32 * (dense + routed));
  plan.buckets = int64_t(bucket * (1 + 1.0 / double(std::max<int64_t>(stage_ranks, 1))));

  // Peak: the static state, then the larger of the two ends of backward (see plan.h). The first
  // gradient backward creates: lm_head's [V, D] on the head's stage.
  const double statics = double(plan.weights + plan.moments);
  const double first_gradient = share.head ? kF32 * double(v * d) : 0;
  const double start = double(plan.activations + plan.weight_caches + plan.transient) + first_gradient;
  // With accumulation the end of a backward still holds the micro-batches in flight after it
  // (1F1B: in_flight - 1; at least one, the next micro-batch's, at P = 1).
  const double after = saved.activations * std::max(in_flight - 1, 1.0);
  const double end = double(plan.gradients) + (config.train.grad_accum_steps > 1 ? after : 0);
  const double sync = double(plan.gradients + plan.buckets);
  // With accumulation every micro-batch after the first starts its backward with the gradients
  // already there.
  const double accumulating = config.train.grad_accum_steps > 1 ? double(plan.gradients) : 0;
  plan.peak = int64_t(statics + std::max({start + accumulating, end, sync}));
  return plan;
}

double peak_flops(const Hardware& hw, const RunConfig& config) {
  const fp8::Recipe& r = config.precision.recipe;
  if (r.is_fp8()) return hw.peak_fp8;
  return r.kind == fp8::RecipeKind::bf16 ? hw.peak_bf16 : hw.peak_fp32;
}

StepPlan plan_step(const RunConfig& config, int64_t world, const Hardware& hw) {
  const model::ModelConfig& m = config.model;
  const int64_t pp = config.parallel.pipeline_parallel, ep = config.parallel.expert_parallel;
  const int64_t stage_ranks = world / pp, replicas = stage_ranks / ep;
  const double micro = double(config.train.grad_accum_steps);
  const double tokens_micro = double(config.train.micro_batch_size * config.train.seq_len);
  const double tokens_rank = tokens_micro * micro;  // one step, one rank
  const double peak = peak_flops(hw, config);
  // Links: a group of consecutive ranks within one node talks over NVLink, across nodes over the
  // per-GPU NIC (the pipeline's neighbours are a stage's S ranks apart: across nodes unless the
  // whole world is one node).
  const auto bandwidth = [&](int64_t group) {
    return group <= hw.gpus_per_node ? hw.intra_node_bandwidth : hw.inter_node_bandwidth;
  };
  // Model FLOPs per token of each stage: its decoder layers (model/stages.h's estimate), the last
  // stage the rest of training_flops_per_token (head, MTP), so that the stages sum to the model's.
  const double model_flops = model::training_flops_per_token(m, config.train.seq_len);
  const std::vector<double> layer_flops = pp > 1 ? model::layer_costs(m, config.train.seq_len) : std::vector<double>{};
  double head_flops = model_flops;
  for (double f : layer_flops) head_flops -= f;

  const std::vector<RankShare> shares = stage_shares(config);
  StepPlan best;
  double slowest_slot = -1, sync_s = 0;
  for (size_t stage = 0; stage < shares.size(); ++stage) {
    const RankShare& share = shares[stage];
    const std::vector<int64_t> layers = held_layers(m, share);
    StepPlan s;
    s.slowest_stage = int64_t(stage);
    double flops = model_flops;
    if (pp > 1) {
      flops = share.head ? head_flops : 0;
      for (int64_t l : layers)
        if (l < m.num_hidden_layers) flops += layer_flops[size_t(l)];
    }
    s.flops_per_rank = flops * tokens_rank;
    s.compute_s = s.flops_per_rank / peak;

    // Expert parallelism: each token's row goes to the ranks holding its experts (at most k of the
    // EP-1 others) and comes back, forward and backward: 4 crossings per MoE layer, rows of hidden
    // size in the dispatch dtype (combine and gradients in BF16, or FP32 with an FP32 dispatch).
    int64_t moe_layers = 0;
    double routed = 0;
    for (int64_t l : layers) {
      moe_layers += m.is_moe_layer(l);
      routed += double(model::layer_parameters(m, l).routed) / double(ep);
    }
    if (ep > 1 && moe_layers > 0) {
      const double d = double(m.hidden_size), k = double(m.num_experts_per_tok);
      const double remote = std::min(k, double(ep - 1)) * double(ep - 1) / double(ep);
      const bool fp32 = config.parallel.dispatch_dtype == parallel::DispatchDtype::fp32;
      const double dispatch_row = config.parallel.dispatch_dtype == parallel::DispatchDtype::fp8
                                      ? d + 4 * std::ceil(d / 128)
                                      : (fp32 ? 4 : 2) * d;
      const double other_row = (fp32 ? 4 : 2) * d;
      s.all_to_all_bytes = tokens_rank * remote * double(moe_layers) * (dispatch_row + 3 * other_row);
      s.all_to_all_s = s.all_to_all_bytes / bandwidth(ep);
    }
    // Gradient sync over the stage's ranks: a ring reduce-scatter and all-gather each move
    // (n-1)/n of the data per rank.
    const MemoryPlan mem = plan_memory(config, world, share);
    if (stage_ranks > 1) {
      const double dense = 4.0 * double(mem.params_held) - 4.0 * routed;
      const double dense_volume = 2.0 * dense * double(stage_ranks - 1) / double(stage_ranks);
      const double routed_volume = replicas > 1 ? 2.0 * 4.0 * routed * double(replicas - 1) / double(replicas) : 0;
      s.grad_sync_bytes = dense_volume + routed_volume;
      s.grad_sync_s =
          dense_volume / bandwidth(stage_ranks) + (replicas > 1 ? routed_volume / hw.inter_node_bandwidth : 0);
    }
    // Pipeline: each micro-batch's hidden states [micro_batch, seq, hidden] fp32 go to the next
    // stage, and their gradient back to the previous one.
    s.p2p_bytes = micro * kF32 * tokens_micro * double(m.hidden_size) * double(int(share.sends) + int(share.receives));
    s.p2p_s = s.p2p_bytes / bandwidth(world);
    // HBM traffic: each micro-batch's three GEMM passes read the weights, its activations are
    // written and read back once, and AdamW reads and writes weights, gradients and moments once.
    const double per_micro = double(mem.activations) / double(share.in_flight);
    s.memory_bytes =
        micro * (3.0 * double(mem.weights) + 2.0 * per_micro) + 2.0 * double(mem.weights + mem.gradients + mem.moments);
    s.memory_s = s.memory_bytes / hw.memory_bandwidth;
    // One slot: this stage's time for one micro-batch's forward and backward.
    const double slot = (std::max(s.compute_s, s.memory_s) + s.all_to_all_s + s.p2p_s) / micro;
    sync_s = std::max(sync_s, s.grad_sync_s);
    if (slot > slowest_slot) {
      slowest_slot = slot;
      best = s;
    }
  }
  // 1F1B: m + P - 1 slots of the slowest stage, P - 1 of them idle; then the gradient sync.
  best.bubble = double(pp - 1) / (micro + double(pp - 1));
  best.bubble_s = double(pp - 1) * slowest_slot;
  best.step_s = (micro + double(pp - 1)) * slowest_slot + sync_s;
  const double tokens_step = tokens_rank * double(stage_ranks);
  best.tokens_per_s = tokens_step / best.step_s;
  best.mfu = model_flops * tokens_step / (best.step_s * double(world) * peak);
  best.gpu_hours_per_billion = 1e9 / best.tokens_per_s * double(world) / 3600.0;
  best.kwh_per_billion = best.gpu_hours_per_billion * hw.power_watts / 1000.0;
  best.dollars_per_billion = best.gpu_hours_per_billion * hw.price_per_hour;
  return best;
}

Plan make_plan(const RunConfig& config, int64_t world, const Hardware& hw) {
  Plan p;
  p.world = world;
  p.stages = plan_stage_memory(config, world);
  for (size_t s = 0; s < p.stages.size(); ++s)
    if (p.stages[s].peak > p.stages[size_t(p.heaviest_stage)].peak) p.heaviest_stage = int64_t(s);
  p.memory = p.stages[size_t(p.heaviest_stage)];
  p.step = plan_step(config, world, hw);
  p.fits = double(p.memory.peak) <= hw.memory_bytes;
  return p;
}

}  // namespace daedalus::train
