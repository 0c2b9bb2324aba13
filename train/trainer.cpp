// The training loop (see trainer.h for one step, top-down).
#include "train/trainer.h"

#include <fmt/format.h>
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "autograd/allocator.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/nvtx.h"
#include "autograd/ops/arithmetic.h"
#include "model/param_count.h"
#include "parallel/communicator.h"
#include "parallel/config_check.h"
#include "parallel/grad_sync.h"
#include "parallel/watchdog.h"
#include "train/generate.h"
#include "train/zero.h"

namespace daedalus::train {

namespace {

using Clock = std::chrono::steady_clock;

// About when the process started: train.time_limit_min counts from here.
const Clock::time_point kProcessStart = Clock::now();

std::string sigabbrev(int signal) {
  return signal == SIGTERM ? "SIGTERM" : signal == SIGUSR1 ? "SIGUSR1" : fmt::format("signal {}", signal);
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::unique_ptr<data::TokenSource> open_source(const DataConfig& d, const std::vector<std::string>& patterns) {
  const std::vector<std::string> files = data::expand_inputs(patterns);
  switch (d.format) {
    case DataFormat::llmc: return data::open_llmc(files);
    case DataFormat::hdf5: return data::open_hdf5(files);
    case DataFormat::text: return data::open_text(files);
    case DataFormat::synthetic: break;
  }
  DAEDALUS_FAIL("data: a synthetic source has no files");
}

// Validation share of a synthetic stream: its last 5% (at least a few windows).
int64_t synthetic_val_tokens(int64_t total, int64_t seq_len) {
  return std::min(total / 2, std::max(total / 20, 8 * (seq_len + 1)));
}

// The delayed-scaling amax histories of every module, to put back after a pass that must leave no
// trace in the training state (evaluation, sampling): a resumed run then matches an uninterrupted one.
class Fp8Histories {
 public:
  explicit Fp8Histories(model::CausalLM& m) {
    for_each(m, [&](fp8::LinearState& s) { saved_.insert(saved_.end(), {s.x, s.w, s.dy}); });
  }
  void restore(model::CausalLM& m) const {
    size_t i = 0;
    for_each(m, [&](fp8::LinearState& s) {
      s.x = saved_[i++];
      s.w = saved_[i++];
      s.dy = saved_[i++];
    });
  }

 private:
  template <class F>
  static void for_each(model::CausalLM& m, F&& f) {
    for (model::Linear* l : m.linears())
      if (l->recipe().delayed()) f(l->state());
    for (model::GroupedLinear* g : m.grouped_linears())
      if (g->recipe().delayed())
        for (fp8::LinearState& s : g->states()) f(s);
  }
  std::vector<fp8::AmaxHistory> saved_;
};

// FNV-1a, 64 bit: a cheap digest for "these two runs started from the same bytes".
class Fnv1a {
 public:
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ULL;
  }
  std::string hex() const { return fmt::format("{:016x}", h_); }

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

// SIGTERM and SIGUSR1 (what Slurm and job schedulers send before a job's end) set a flag that the
// loop reads after each step; the previous handlers come back when run() returns.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int signal) { g_stop_signal = signal; }

class SignalGuard {
 public:
  SignalGuard() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // blocking calls (MPI, file I/O) carry on; the loop polls the flag
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGUSR1, &sa, &old_usr1_);
  }
  ~SignalGuard() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGUSR1, &old_usr1_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  struct sigaction old_term_ {
  }, old_usr1_{};
};

}  // namespace

model::LmOptions lm_options(const RunConfig& config, const parallel::ProcessGroups* groups, Device device) {
  model::LmOptions mo;
  mo.config = config.model;
  mo.moe = config.moe;
  mo.mtp = config.mtp;
  mo.recipes = fp8::RecipeTable(config.precision.recipe, config.precision.overrides);
  mo.seed = uint64_t(config.run.seed);
  mo.device = device;
  if (groups != nullptr && groups->ep_size > 1) mo.block.ep.group = groups->ep.get();
  mo.block.ep.dispatch_dtype = config.parallel.dispatch_dtype;
  // Results come back in BF16 as DeepSeek-V3 combines them, or in FP32 when the dispatch is FP32
  // (an all-FP32 run, e.g. to compare expert parallelism with one rank exactly).
  mo.block.ep.combine_dtype = config.parallel.dispatch_dtype == parallel::DispatchDtype::fp32
                                  ? parallel::DispatchDtype::fp32
                                  : parallel::DispatchDtype::bf16;
  return mo;
}

Device run_device(DeviceChoice choice, int local_rank) {
  switch (choice) {
    case DeviceChoice::cpu:
    case DeviceChoice::automatic: return Device::cpu();  // see trainer.h: auto stays on the CPU for now
    case DeviceChoice::cuda: break;
  }
  if (!cuda_built())
    throw InputError("train.device: cuda, but this build has no CUDA backend (rebuild with the CUDA toolkit)");
  const int count = cuda_device_count();
  if (count == 0) throw InputError("train.device: cuda, but no CUDA device is visible (nvidia-smi lists none)");
  return Device::cuda(local_rank % count);
}

parallel::ProcessGroups make_run_groups(const RunConfig& config, const std::shared_ptr<parallel::Communicator>& mpi) {
  DAEDALUS_CHECK(mpi != nullptr, "make_run_groups: no MPI world");
  const int local_rank = mpi->size() > 1 ? parallel::node_local_rank(*mpi) : 0;
  const Device device = run_device(config.train.device, local_rank);
  const std::string_view configured = backend_name(config.parallel.backend);
  std::shared_ptr<parallel::Communicator> world = mpi;
  if (parallel::resolve_backend(configured, device) == "nccl") {
    // NCCL bootstrapped from MPI (none needed for one process); it drives GPU local_rank % devices,
    // the device run_device picked. Host control values are staged through that GPU.
    world = parallel::with_host_staging(
        parallel::nccl_world(mpi->size() > 1 ? mpi : nullptr, config.parallel.timeout_s), device);
  }
  parallel::ProcessGroups groups = parallel::make_process_groups(world, int(config.parallel.expert_parallel));
  groups.device = device;
  return groups;
}

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::finished: return "finished";
    case StopReason::stop_after: return "train.stop_after";
    case StopReason::time_limit: return "train.time_limit_min";
    case StopReason::signal: return "signal";
  }
  return "?";
}

Trainer::Trainer(RunConfig config, parallel::ProcessGroups groups, TrainerMode mode)
    : config_(std::move(config)), groups_(std::move(groups)), mode_(mode) {
  const int world = groups_.world->size(), rank = groups_.world->rank();
  config_.validate(world);
  // Every rank must run the same config: compare hashes of the resolved text before anything else.
  const std::string resolved = to_yaml(config_);
  if (world > 1) parallel::check_same_config(*groups_.world, resolved);
  // Where the tensors live: a CUDA run's GPU is the one its NCCL world drives (make_run_groups).
  device_ = config_.train.device == DeviceChoice::cuda
                ? (groups_.device.is_cuda() ? groups_.device : run_device(config_.train.device, 0))
                : Device::cpu();
  // parallel.backend against where the tensors live and the world the launcher built.
  const std::string_view configured = backend_name(config_.parallel.backend);
  const std::string backend = parallel::resolve_backend(configured, device_);
  DAEDALUS_CHECK(groups_.world->backend() == backend, "parallel.backend: {} resolves to {}, but the world is {}",
                 configured, backend, groups_.world->backend());

  // Run directory and resolved config (rank 0 writes).
  if (rank == 0 && mode_ == TrainerMode::train) {
    std::error_code ec;
    std::filesystem::create_directories(config_.run.dir, ec);
    DAEDALUS_CHECK(!ec, "run.dir: cannot create {}: {}", config_.run.dir, ec.message());
    std::ofstream(config_.run.dir + "/config.yaml") << resolved;
  }

  // Data: this rank's slice of every global batch.
  const DataConfig& d = config_.data;
  const int64_t seq = config_.train.seq_len;
  if (d.format == DataFormat::synthetic) {
    train_source_ = data::open_synthetic(d.synthetic);
    const int64_t n = train_source_->size(), nv = synthetic_val_tokens(n, seq);
    val_source_ = data::slice_of(*train_source_, n - nv, n);
    train_view_ = data::slice_of(*train_source_, 0, n - nv);
  } else {
    if (mode_ == TrainerMode::train) train_source_ = open_source(d, d.train);  // evaluation needs only data.val
    if (!d.val.empty()) val_source_ = open_source(d, d.val);
  }
  if (train_source_) data::check_vocab(train_view_ ? *train_view_ : *train_source_, config_.model.vocab_size);
  if (val_source_) data::check_vocab(*val_source_, config_.model.vocab_size);
  data::LoaderOptions lo;
  lo.seq_len = seq;
  lo.global_batch = config_.train.micro_batch_size * world;
  lo.seed = uint64_t(config_.run.seed);
  lo.rank = rank;
  lo.world = world;
  if (train_source_) train_loader_ = std::make_unique<data::Loader>(train_view_ ? *train_view_ : *train_source_, lo);
  if (val_source_ && (config_.train.eval_every > 0 || mode_ == TrainerMode::evaluate)) {
    lo.shuffle = false;
    val_loader_ = std::make_unique<data::Loader>(*val_source_, lo);
  }

  const bool tty = isatty(fileno(stderr)) != 0;
  const bool interactive = rank == 0 && (config_.logging.progress == Progress::always ||
                                         (config_.logging.progress == Progress::automatic && tty));
  progress_ = std::make_unique<ProgressLine>(interactive, config_.train.steps, rank == 0 ? config_.train.log_every : 0);

  build_model();
  if (mode_ == TrainerMode::train) {
    restore();
    open_metrics(!resumed_from_.empty());
    if (groups_.world->rank() == 0 && config_.precision.stats_every > 0) {
      const std::string path = config_.run.dir + "/fp8_stats.jsonl";
      if (!resumed_from_.empty()) drop_lines_after_step(path, step_);  // as metrics.jsonl
      fp8_stats_ = MetricsLog(path, /*append=*/!resumed_from_.empty());
    }
  }

  if (const char* nan_step = std::getenv("DAEDALUS_TEST_NAN_AT_STEP")) inject_nan_at_ = std::atoll(nan_step);
  if (const char* sig_step = std::getenv("DAEDALUS_TEST_SIGNAL_AT_STEP")) inject_signal_at_ = std::atoll(sig_step);
  if (const char* hang_step = std::getenv("DAEDALUS_TEST_HANG_AT_STEP")) inject_hang_at_ = std::atoll(hang_step);
}

void Trainer::build_model() {
  model_ = std::make_unique<model::CausalLM>(lm_options(config_, &groups_, device_));
  std::vector<Param> params;
  std::vector<bool> expert;
  for (const model::Parameter& p : model_->parameters().all()) {
    if (!p.trainable) continue;
    params.push_back(Param{p.name, p.var, p.weight_decay, p.expert && groups_.ep_size > 1});
    expert.push_back(p.expert);
  }
  if (config_.parallel.zero_stage == 1) zero_ = std::make_unique<ZeroShards>(params, expert, groups_);
  expert_ = std::move(expert);
  optimizer_ = std::make_unique<AdamW>(std::move(params), config_.optimizer);
}

Trainer::~Trainer() = default;

std::string Trainer::banner() const {
  const model::ModelConfig& c = config_.model;
  const model::ParameterCounts p = model::count_parameters(c);
  const int64_t moe_layers =
      c.n_routed_experts > 0 ? c.num_hidden_layers - std::min(c.first_k_dense_replace, c.num_hidden_layers) : 0;
  const int world = groups_.world->size();
  const int64_t tokens_per_step =
      config_.train.micro_batch_size * config_.train.seq_len * config_.train.grad_accum_steps * world;
  std::string overrides;
  for (const fp8::RecipeOverride& o : config_.precision.overrides)
    overrides += fmt::format("{}{} -> {}", overrides.empty() ? "" : ", ", o.match, fp8::recipe_name(o.recipe));
  std::string s = fmt::format("daedalus train: {} -> {}\n", config_.run.name, config_.run.dir);
  s += fmt::format("  model      {} layers ({} dense, {} MoE), hidden {}, {} heads, MLA q_lora {} kv_lora {}",
                   c.num_hidden_layers, c.num_hidden_layers - moe_layers, moe_layers, c.hidden_size,
                   c.num_attention_heads, c.q_lora_rank ? std::to_string(*c.q_lora_rank) : "none", c.kv_lora_rank);
  if (c.n_routed_experts > 0)
    s += fmt::format(", {} routed + {} shared experts, top-{}", c.n_routed_experts, c.n_shared_experts,
                     c.num_experts_per_tok);
  if (c.num_nextn_predict_layers > 0) s += fmt::format(", MTP depth {}", c.num_nextn_predict_layers);
  s += fmt::format("\n  params     {} total, {} activated per token, + {} MTP\n", format_count(double(p.total)),
                   format_count(double(p.activated)), format_count(double(p.mtp_trained)));
  s += fmt::format("  precision  {}{}\n", fp8::recipe_name(config_.precision.recipe.kind),
                   overrides.empty() ? "" : " (overrides: " + overrides + ")");
  s += fmt::format("  parallel   world {}, expert parallel {}, {} replica(s), ZeRO stage {}\n", world, groups_.ep_size,
                   world / groups_.ep_size, config_.parallel.zero_stage);
  s += fmt::format("  optimizer  AdamW, {} moments: {} per rank\n", dtype_name(config_.optimizer.state_dtype),
                   format_bytes(double(optimizer_->state_bytes())));
  s += fmt::format("  data       {}\n",
                   train_loader_ ? (train_view_ ? train_view_->describe() : train_source_->describe()) : "");
  if (val_source_) s += fmt::format("  validation {}\n", val_source_->describe());
  s += fmt::format("  batch      {} x {} tokens x {} accum x {} rank(s) = {} tokens/step, {} steps\n",
                   config_.train.micro_batch_size, config_.train.seq_len, config_.train.grad_accum_steps, world,
                   tokens_per_step, config_.train.steps);
  if (device_.is_cuda()) {
    s += fmt::format("  device     {} ({} host threads)", device_.str(), omp_get_max_threads());
  } else {
    s += fmt::format("  device     {} ({} threads)", device_.str(), omp_get_max_threads());
  }
  return s;
}

double Trainer::model_flops_per_token() const {
  return model::training_flops_per_token(config_.model, config_.train.seq_len);
}

void Trainer::sync_gradients() {
  if (zero_) return zero_->reduce_scatter_gradients(optimizer_->params(), device_);
  const int world = groups_.world->size();
  if (world == 1) return;
  const nvtx::Range range("sync_gradients");
  // Dense weights over the world, routed experts over their replicas (the world when ep_size is 1):
  // the same two groups and buckets as ZeRO-1's, so both stages add in the same order.
  std::vector<Tensor> dense, experts;
  for (size_t i = 0; i < optimizer_->params().size(); ++i) {
    const Param& p = optimizer_->params()[i];
    if (!p.var.grad().defined())
      p.var.slot()->accumulate("grad sync", Tensor::zeros(p.var.shape(), DType::f32, device_));
    (expert_[i] ? experts : dense).push_back(p.var.grad());
  }
  parallel::all_reduce_gradients(*groups_.world, dense);
  if (experts.empty()) return;
  parallel::all_reduce_gradients(*groups_.replicas, experts);
  // An expert's gradient already sums its whole EP group's tokens; averaging over replicas leaves
  // a factor ep_size against the world mean the dense weights get.
  if (groups_.ep_size > 1)
    for (Tensor g : experts) g.copy_(kernels::affine(g, 1.0 / double(groups_.ep_size)));
}

void Trainer::sum_router_loads() {
  if (groups_.world->size() == 1) return;
  for (model::Moe* moe : model_->moe_layers()) {
    Tensor t = Tensor::from_vector(moe->load().tokens, {int64_t(moe->load().tokens.size())});
    groups_.world->all_reduce(t);
    moe->load().tokens = t.to_vector<int64_t>();
  }
}

void Trainer::set_fp8_stats(bool collect) {
  auto set = [collect](fp8::LinearState& s) {
    s.collect_stats = collect;
    s.stats.clear();  // an expert that gets no tokens this step must not report an old step's numbers
  };
  for (model::Linear* l : model_->linears()) set(l->state());
  for (model::GroupedLinear* g : model_->grouped_linears())
    for (fp8::LinearState& s : g->states()) set(s);
}

void Trainer::set_rounding_seeds(int64_t step, int64_t micro) {
  uint64_t module = 0;
  auto set = [&](fp8::LinearState& s) {
    s.rounding_seed = fp8::rounding_seed(uint64_t(config_.run.seed), uint64_t(step), uint64_t(micro), module++);
  };
  for (model::Linear* l : model_->linears()) set(l->state());
  for (model::GroupedLinear* g : model_->grouped_linears())
    for (fp8::LinearState& s : g->states()) set(s);
}

void Trainer::write_fp8_stats(int64_t step) {
  auto write = [&](const std::string& module, const fp8::LinearState& s) {
    for (const char* operand : {"x", "w", "dy"}) {
      const auto it = s.stats.find(operand);
      if (it != s.stats.end()) fp8_stats_.write(fp8_stats_json(step, module, operand, it->second));
    }
  };
  for (model::Linear* l : model_->linears()) write(l->name(), l->state());
  for (model::GroupedLinear* g : model_->grouped_linears()) {
    // Expert e of this rank's slice: HF's per-expert name, model.layers.L.mlp.experts.E.gate_proj.
    const std::string& name = g->name();
    const size_t dot = name.rfind('.');
    const int64_t first = model_->parameters().get(name + ".weight").expert_offset;
    for (size_t e = 0; e < g->states().size(); ++e)
      write(fmt::format("{}.{}{}", name.substr(0, dot), first + int64_t(e), name.substr(dot)), g->states()[e]);
  }
}

StepMetrics Trainer::train_step() {
  const nvtx::Range step_range("train_step");
  synchronize(device_);  // the step's time starts with an idle device (a no-op on the CPU)
  const auto t0 = Clock::now();
  std::optional<DeviceTimer> gpu_timer;  // CUDA runs: the step's span on the device's compute stream
  if (device_.is_cuda()) {
    gpu_timer.emplace(device_);
    gpu_timer->start();
  }
  allocator_for(device_).reset_peak();
  const int64_t accum = config_.train.grad_accum_steps;
  StepMetrics m;
  m.step = step_ + 1;
  if (step_ == 0) {  // digests of the starting point (a fresh run's first step)
    Fnv1a h;
    for (const model::Parameter& p : model_->parameters().all()) {
      const std::vector<float> v = p.var.value().to_vector<float>();
      h.add(p.name.data(), p.name.size());
      h.add(v.data(), v.size() * sizeof(float));
    }
    m.init_digest = h.hex();
  }
  const bool stats = config_.precision.stats_every > 0 && m.step % config_.precision.stats_every == 0;
  if (stats) set_fp8_stats(/*collect=*/true);
  double loss = 0, lm = 0, mtp = 0, aux = 0;
  for (int64_t a = 0; a < accum; ++a) {
    set_rounding_seeds(m.step, a);
    const data::Batch batch = train_loader_->next();
    if (step_ == 0 && a == 0) {
      const std::vector<int64_t> t = batch.inputs.to_vector<int64_t>();
      Fnv1a h;
      h.add(t.data(), t.size() * sizeof(int64_t));
      m.batch_digest = h.hex();
    }
    std::optional<nvtx::Range> phase(std::in_place, "forward");
    const model::LmOutput out = model_->forward(batch.inputs.to(device_), batch.targets.to(device_));
    phase.emplace("backward");
    double scale = 1.0 / double(accum);
    if (inject_nan_at_ && *inject_nan_at_ == m.step && a == 0) scale = std::nan("");  // test hook
    if (inject_hang_at_ && *inject_hang_at_ == m.step && groups_.world->rank() == groups_.world->size() - 1)
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // test hook: the last rank hangs
    backward(ops::affine(out.loss, scale));
    phase.reset();
    // The losses come to the host for logging (one small copy each; the last waits for the step).
    loss += out.loss.value().item() / double(accum);
    lm += out.lm_loss.value().item() / double(accum);
    if (out.mtp_loss.defined()) mtp += out.mtp_loss.value().item() / double(accum);
    if (out.aux_loss.defined()) aux += out.aux_loss.value().item() / double(accum);
    if (a == 0) {
      if (out.mtp_loss.defined()) m.mtp_loss = 0.0;
      if (out.aux_loss.defined()) m.moe_aux_loss = 0.0;
    }
  }
  if (stats) {
    if (groups_.world->rank() == 0) write_fp8_stats(m.step);
    set_fp8_stats(/*collect=*/false);
  }
  sync_gradients();
  sum_router_loads();
  const int world = groups_.world->size();
  if (world > 1) {  // the reported losses are means over ranks
    Tensor l = Tensor::from_values({loss, lm, mtp, aux}, {4});
    groups_.world->all_reduce(l);
    const std::vector<double> v = l.to_doubles();
    loss = v[0] / world, lm = v[1] / world, mtp = v[2] / world, aux = v[3] / world;
  }
  m.loss = loss;
  m.lm_loss = lm;
  if (m.mtp_loss) m.mtp_loss = mtp;
  if (m.moe_aux_loss) m.moe_aux_loss = aux;
  for (model::Moe* moe : model_->moe_layers()) m.expert_load_max_over_mean.push_back(moe->load().max_over_mean());
  // Expert-parallel traffic of this step, this rank's bytes to other ranks: forward dispatch and
  // combine apart (what parallel.dispatch_dtype changes), and their backward mirror together.
  for (model::Moe* moe : model_->moe_layers()) {
    for (const auto& t : moe->load().traffic) {
      m.dispatch_bytes += t->dispatch_bytes;
      m.combine_bytes += t->combine_bytes;
      m.backward_all_to_all_bytes += t->dispatch_backward_bytes + t->combine_backward_bytes;
      m.all_to_all_ms += 1e3 * t->exchange_seconds;
    }
    moe->load().traffic.clear();
  }

  parallel::Communicator* ep = groups_.ep_size > 1 ? groups_.ep.get() : nullptr;
  m.grad_norm = optimizer_->grad_norm([this, ep](double sq) {
    if (zero_) return zero_->sum_over_world(sq);  // ZeRO-1: every rank's owned elements, once each
    return ep == nullptr ? sq : parallel::sum_in_rank_order(*ep, sq);
  });
  m.lr = learning_rate(config_.schedule, config_.optimizer.lr, step_, config_.train.steps);
  if (!std::isfinite(m.grad_norm)) {
    m.skipped = true;
    ++consecutive_skips_;
    ++skipped_total_;
    for (model::Moe* moe : model_->moe_layers()) {  // this step's loads are not applied
      std::fill(moe->load().tokens.begin(), moe->load().tokens.end(), 0);
      moe->load().dropped = 0;
    }
    if (config_.train.on_nonfinite == OnNonfinite::abort)
      throw Error(
          fmt::format("step {}: non-finite gradient norm ({}) and train.on_nonfinite is abort", m.step, m.grad_norm));
    if (consecutive_skips_ > config_.train.max_skipped_steps)
      throw Error(fmt::format("step {}: {} steps in a row had non-finite gradients (train.max_skipped_steps = {})",
                              m.step, consecutive_skips_, config_.train.max_skipped_steps));
  } else {
    consecutive_skips_ = 0;
    model_->update_router_biases();
    optimizer_->clip_and_step(m.lr, m.grad_norm);
    if (zero_) zero_->all_gather_weights(optimizer_->params());
  }
  optimizer_->zero_grad();
  ++step_;
  const int64_t tokens = config_.train.micro_batch_size * config_.train.seq_len * accum * world;
  tokens_seen_ += tokens;
  m.tokens = tokens_seen_;
  if (gpu_timer) gpu_timer->stop();
  synchronize(device_);  // every kernel of the step is done before the clock stops
  const double s = seconds_since(t0);
  m.step_ms = 1e3 * s;
  if (gpu_timer) m.gpu_ms = gpu_timer->elapsed_ms();
  m.tokens_per_s = double(tokens) / s;
  m.model_flops_per_s = model_flops_per_token() * double(tokens) / s;
  m.mem_bytes = allocator_for(device_).stats().peak_bytes;
  return m;
}

int64_t Trainer::eval_batch_count() const {
  if (!val_loader_) return 0;
  return std::min(config_.train.eval_batches,
                  std::max<int64_t>(
                      1, val_loader_->samples_per_epoch() / (config_.train.micro_batch_size * groups_.world->size())));
}

EvalMetrics Trainer::evaluate() {
  EvalMetrics e;
  e.step = step_;
  e.tokens = tokens_seen_;
  if (!val_loader_) return e;
  NoGradGuard no_grad;
  const Fp8Histories kept(*model_);  // evaluation must not move the delayed scales
  val_loader_->set_consumed_samples(0);
  const int64_t batches = eval_batch_count();
  double sum = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const data::Batch batch = val_loader_->next();
    sum += model_->forward(batch.inputs.to(device_), batch.targets.to(device_)).lm_loss.value().item();
  }
  double mean = sum / double(batches);
  if (groups_.world->size() > 1) {
    Tensor t = Tensor::from_values({mean}, {1});
    groups_.world->all_reduce(t);
    mean = t.item() / groups_.world->size();
  }
  kept.restore(*model_);
  e.val_loss = mean;
  return e;
}

StopReason Trainer::run() {
  const SignalGuard signals;  // SIGTERM / SIGUSR1: finish the step, save, return
  const bool rank0 = groups_.world->rank() == 0;
  if (rank0) progress_->message(banner());
  const int64_t total = config_.train.steps;
  const int64_t stop = config_.train.stop_after ? std::min(total, step_ + *config_.train.stop_after) : total;
  const int64_t first = step_;
  const auto t0 = Clock::now();
  StopReason reason = StopReason::finished;
  // With several ranks a dead or stuck peer would block the others in a collective forever: the
  // watchdog turns "no progress for parallel.timeout_s" into a job-wide abort (exit 2).
  parallel::Watchdog watchdog(groups_.world->size() > 1 ? config_.parallel.timeout_s : 0.0);
  while (step_ < stop) {
    const auto step_start = Clock::now();
    watchdog.beat(fmt::format("step {}", step_ + 1));
    const StepMetrics m = train_step();
    if (rank0) {
      if (config_.train.log_every > 0 && (m.step % config_.train.log_every == 0 || m.step == stop || m.skipped))
        metrics_.write(m.to_json());
      progress_->step(m, seconds_since(t0), first);
    }
    if (config_.train.eval_every > 0 && val_loader_ && (step_ % config_.train.eval_every == 0 || step_ == stop)) {
      watchdog.beat(fmt::format("evaluation after step {}", step_));
      const EvalMetrics e = evaluate();
      if (rank0) {
        metrics_.write(e.to_json());
        progress_->eval(e);
      }
    }
    if (inject_signal_at_ && *inject_signal_at_ == step_ && rank0) std::raise(SIGTERM);  // test hook
    reason = poll_stop(seconds_since(step_start));
    if (reason != StopReason::finished) break;
    if (config_.checkpoint.every > 0 && step_ % config_.checkpoint.every == 0) {
      watchdog.beat(fmt::format("checkpoint save at step {}", step_));
      save();
    }
  }
  if (reason == StopReason::finished && step_ < total) reason = StopReason::stop_after;
  watchdog.beat(fmt::format("final checkpoint save at step {}", step_));
  if (saved_step_ != step_) save();
  watchdog.beat("the final sample");
  if (rank0) {
    progress_->finish();
    progress_->message(fmt::format("done: {} steps ({} skipped) in {}, {} tokens", step_ - first, skipped_total_,
                                   format_duration(seconds_since(t0)), format_count(double(tokens_seen_))));
    if (reason != StopReason::finished)
      progress_->message(
          fmt::format("stopped at step {} of {} ({}); the next run with checkpoint.resume: auto "
                      "continues from {}",
                      step_, total, stop_reason_name(reason), checkpoint_path(config_.run.dir, step_)));
  }
  // A job ending on a signal or its time limit has no time to spare for a sample.
  if (reason == StopReason::finished || reason == StopReason::stop_after) print_sample();
  return reason;
}

StopReason Trainer::poll_stop(double step_s) {
  max_step_s_ = std::max(max_step_s_, step_s);
  enum : int32_t { kGo = 0, kTimeLimit = 1, kSignal = 2 };
  int32_t code = kGo;
  if (g_stop_signal != 0) {
    code = kSignal;
  } else if (config_.train.time_limit_min) {
    // Another step and a save must fit before the limit, with 50% headroom on both. Before the first
    // save its time is estimated from the bytes to write at 100 MB/s (plus a second).
    const double limit_s = *config_.train.time_limit_min * 60.0;
    double save_s = last_save_s_;
    if (save_s <= 0) {
      const double bytes = 4.0 * double(model_->parameters().numel()) * 3.0;  // weights and two moments
      save_s = 1.0 + bytes / 100e6;
    }
    if (seconds_since(kProcessStart) + 1.5 * (max_step_s_ + save_s) > limit_s) code = kTimeLimit;
  }
  if (groups_.world->size() > 1) {  // every rank stops at the same step
    Tensor t = Tensor::from_vector<int32_t>({code}, {1});
    groups_.world->all_reduce(t, parallel::ReduceOp::max);
    code = t.to_vector<int32_t>()[0];
  }
  if (code == kGo) return StopReason::finished;
  if (groups_.world->rank() == 0) {
    progress_->finish();
    if (code == kSignal) {
      progress_->message(fmt::format("step {}: {}: saving a checkpoint and stopping", step_,
                                     g_stop_signal != 0 ? fmt::format("received {}", sigabbrev(g_stop_signal))
                                                        : std::string("another rank received a stop signal")));
    } else {
      progress_->message(
          fmt::format("step {}: train.time_limit_min = {} would be exceeded by another step and a "
                      "save ({:.1f} s per step): saving a checkpoint and stopping",
                      step_, *config_.train.time_limit_min, max_step_s_));
    }
  }
  return code == kSignal ? StopReason::signal : StopReason::time_limit;
}

void Trainer::print_sample() {
  // Byte-level corpora (vocab 256, as prepare-data writes) print as text; others as token ids.
  const bool bytes = config_.model.vocab_size == 256 && config_.data.format != DataFormat::synthetic;
  std::vector<int64_t> prompt;
  if (bytes) {
    for (char ch : std::string("The ")) prompt.push_back(int64_t(uint8_t(ch)));
  } else {
    prompt.push_back(0);
  }
  SampleOptions o;
  o.max_new_tokens = 96;
  o.seed = uint64_t(config_.run.seed);
  o.context = config_.train.seq_len;
  const Fp8Histories kept(*model_);
  const std::vector<int64_t> tokens = sample(*model_, prompt, o);
  kept.restore(*model_);
  if (groups_.world->rank() != 0) return;
  if (bytes) {
    progress_->message("sample (temperature 0.8): " + bytes_to_text(prompt) + bytes_to_text(tokens));
  } else {
    std::string ids;
    for (int64_t t : tokens) ids += fmt::format("{} ", t);
    progress_->message("sample (temperature 0.8, token ids): " + ids);
  }
}

}  // namespace daedalus::train
