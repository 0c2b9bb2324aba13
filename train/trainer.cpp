// The training loop (see trainer.h for one step, top-down).
#include "train/trainer.h"

#include <fmt/format.h>
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "autograd/allocator.h"
#include "autograd/host_sync.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/nvtx.h"
#include "autograd/ops/arithmetic.h"
#include "model/param_count.h"
#include "parallel/communicator.h"
#include "parallel/config_check.h"
#include "parallel/watchdog.h"
#include "train/chat_training.h"
#include "train/generate.h"
#include "train/import_hf.h"
#include "train/plan.h"
#include "train/text_commands.h"
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

// `key` (data.train or data.val) names the config key in the message when the files are not found;
// a relative path says where it was looked for and how to set it.
std::unique_ptr<data::TokenSource> open_source(const DataConfig& d, const std::vector<std::string>& patterns,
                                               const char* key) {
  std::vector<std::string> files;
  try {
    files = data::expand_inputs(patterns);
  } catch (const InputError& e) {
    std::string hint;
    for (const std::string& p : patterns)
      if (!p.empty() && p.front() != '/') {
        std::error_code ec;
        hint = fmt::format(
            " ({}: a relative path is looked up from the current directory {}: set {} to where the "
            "file is, e.g. --set {}=/path/to/file)",
            key, std::filesystem::current_path(ec).string(), key, key);
        break;
      }
    throw InputError(fmt::format("{}: {}{}", key, e.what(), hint));
  }
  switch (d.format) {
    case DataFormat::llmc: return data::open_llmc(files);
    case DataFormat::hdf5: return data::open_hdf5(files);
    case DataFormat::text:
      return d.tokenizer.empty() ? data::open_text(files) : data::open_text(files, data::Tokenizer::load(d.tokenizer));
    case DataFormat::synthetic:
    case DataFormat::chat: break;
  }
  DAEDALUS_FAIL("data: a {} source is not a token stream", d.format == DataFormat::chat ? "chat" : "synthetic");
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
  mo.recompute = config.train.recompute;
  if (groups != nullptr && groups->ep_size > 1) mo.block.ep.group = groups->ep.get();
  if (groups != nullptr && groups->pp_size > 1) mo.stage = model::stage_span(stage_layers(config), groups->pp_stage);
  mo.block.ep.dispatch_dtype = config.parallel.dispatch_dtype;
  // Results come back in BF16 as DeepSeek-V3 combines them, or in FP32 when the dispatch is FP32
  // (an all-FP32 run, e.g. to compare expert parallelism with one rank exactly).
  mo.block.ep.combine_dtype = config.parallel.dispatch_dtype == parallel::DispatchDtype::fp32
                                  ? parallel::DispatchDtype::fp32
                                  : parallel::DispatchDtype::bf16;
  return mo;
}

std::vector<int64_t> stage_layers(const RunConfig& config) {
  const ParallelConfig& p = config.parallel;
  if (!p.pipeline_layers.empty()) return p.pipeline_layers;
  return model::balanced_stage_layers(config.model, p.pipeline_parallel, config.train.seq_len);
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
  parallel::ProcessGroups groups = parallel::make_process_groups(world, int(config.parallel.expert_parallel),
                                                                 int(config.parallel.pipeline_parallel));
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

Trainer::Trainer(RunConfig config, parallel::ProcessGroups groups, TrainerMode mode, parallel::Watchdog* watchdog)
    : config_(std::move(config)), groups_(std::move(groups)), mode_(mode), watchdog_(watchdog) {
  const int world = groups_.world->size(), rank = groups_.world->rank();
  // checkpoint.init_from: an HF directory brings its model section (train/import_hf.h).
  if (mode_ == TrainerMode::train && config_.checkpoint.init_from && is_hf_directory(*config_.checkpoint.init_from))
    adopt_hf_model(config_, *config_.checkpoint.init_from);
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
    run_lock_ = RunDirLock(config_.run.dir);
    std::ofstream out(config_.run.dir + "/config.yaml");
    out << resolved;
    if (!out.flush())
      throw Error(fmt::format("{}/config.yaml: cannot write: {}", config_.run.dir, std::strerror(errno)));
  }
  beat("opening the data");

  // Data: this rank's slice of every global batch.
  const DataConfig& d = config_.data;
  const int64_t seq = config_.train.seq_len;
  if (d.format == DataFormat::synthetic) {
    train_source_ = data::open_synthetic(d.synthetic);
    const int64_t n = train_source_->size(), nv = synthetic_val_tokens(n, seq);
    val_source_ = data::slice_of(*train_source_, n - nv, n);
    train_view_ = data::slice_of(*train_source_, 0, n - nv);
  } else if (d.format == DataFormat::chat) {
    const int64_t vocab = config_.model.vocab_size;
    if (mode_ == TrainerMode::train) train_packed_ = open_chat(d, d.train, seq, vocab);
    if (!d.val.empty()) val_packed_ = open_chat(d, d.val, seq, vocab);
  } else {
    if (mode_ == TrainerMode::train) train_source_ = open_source(d, d.train, "data.train");  // eval: data.val only
    if (!d.val.empty()) val_source_ = open_source(d, d.val, "data.val");
  }
  if (train_source_) data::check_vocab(train_view_ ? *train_view_ : *train_source_, config_.model.vocab_size);
  if (val_source_) data::check_vocab(*val_source_, config_.model.vocab_size);
  data::LoaderOptions lo;
  lo.seq_len = seq;
  // Data parallel over the ranks of a stage: the same position in every stage reads the same slice.
  const int data_ranks = groups_.stage->size();
  lo.global_batch = config_.train.micro_batch_size * data_ranks;
  lo.seed = uint64_t(config_.run.seed);
  lo.rank = groups_.stage->rank();
  lo.world = data_ranks;
  if (train_source_) train_loader_ = std::make_unique<data::Loader>(train_view_ ? *train_view_ : *train_source_, lo);
  if (train_packed_) train_loader_ = std::make_unique<data::Loader>(*train_packed_, lo);
  if ((val_source_ || val_packed_) && (config_.train.eval_every > 0 || mode_ == TrainerMode::evaluate)) {
    lo.shuffle = false;
    val_loader_ = val_packed_ ? std::make_unique<data::Loader>(*val_packed_, lo)
                              : std::make_unique<data::Loader>(*val_source_, lo);
  }

  const bool tty = isatty(fileno(stderr)) != 0;
  const bool interactive = rank == 0 && (config_.logging.progress == Progress::always ||
                                         (config_.logging.progress == Progress::automatic && tty));
  progress_ = std::make_unique<ProgressLine>(interactive, config_.train.steps, rank == 0 ? config_.train.log_every : 0);

  beat("building the model");
  build_model();
  if (mode_ == TrainerMode::train) {
    beat("resuming");
    restore();
    open_metrics(!resumed_from_.empty());
    if (groups_.world->rank() == 0 && config_.precision.stats_every > 0) {
      const std::string path = config_.run.dir + "/fp8_stats.jsonl";
      if (!resumed_from_.empty()) drop_lines_after_step(path, step_);  // as metrics.jsonl
      fp8_stats_ = MetricsLog(path, /*append=*/!resumed_from_.empty());
    }
  }

  // MFU against the hardware table of this device: DAEDALUS_HARDWARE (a name or file, as `daedalus
  // plan --hardware` takes), else configs/hardware/cpu.yaml for CPU runs; none when no table is found.
  const char* hardware = std::getenv("DAEDALUS_HARDWARE");
  if (hardware != nullptr || device_.is_cpu()) {
    try {
      peak_flops_ = train::peak_flops(load_hardware(hardware != nullptr ? hardware : "cpu"), config_);
    } catch (const InputError&) {
      if (hardware != nullptr) throw;  // asked for: a bad table is the user's to fix
    }
  }
  if (const char* nan_step = std::getenv("DAEDALUS_TEST_NAN_AT_STEP")) inject_nan_at_ = std::atoll(nan_step);
  if (const char* sig_step = std::getenv("DAEDALUS_TEST_SIGNAL_AT_STEP")) inject_signal_at_ = std::atoll(sig_step);
  if (const char* hang_step = std::getenv("DAEDALUS_TEST_HANG_AT_STEP")) inject_hang_at_ = std::atoll(hang_step);
}

void Trainer::beat(std::string_view what) {
  if (watchdog_ != nullptr) watchdog_->beat(what);
}

void Trainer::build_model() {
  model_ = std::make_unique<model::CausalLM>(lm_options(config_, &groups_, device_));
  std::vector<Param> params;
  std::vector<bool> expert;
  for (const model::Parameter& p : model_->parameters().all()) {
    if (!p.trainable) continue;
    // The last stage's copy of a shared embedding: the first stage counts it in the gradient norm.
    const bool copy = groups_.pp_size > 1 && !groups_.first_stage() && p.name == "model.embed_tokens.weight";
    params.push_back(Param{p.name, p.var, p.weight_decay, p.expert && groups_.ep_size > 1, /*counted=*/!copy});
    expert.push_back(p.expert);
  }
  if (config_.parallel.zero_stage == 1)
    zero_ = std::make_unique<ZeroShards>(params, expert, groups_, config_.parallel.grad_bucket_bytes());
  expert_ = std::move(expert);
  optimizer_ = std::make_unique<AdamW>(std::move(params), config_.optimizer);
  schedule_ = std::make_unique<PipelineSchedule>(*model_, groups_.pipeline.get(), device_, config_.data.document_mask);
}

Trainer::~Trainer() = default;

double Trainer::model_flops_per_token() const {
  return model::training_flops_per_token(config_.model, config_.train.seq_len);
}

void Trainer::sum_router_loads() {
  if (groups_.stage->size() == 1) return;
  for (model::Moe* moe : model_->moe_layers()) {
    Tensor t = Tensor::from_vector(moe->load().tokens, {int64_t(moe->load().tokens.size())});
    groups_.stage->all_reduce(t);
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

void Trainer::set_rounding_seeds(int64_t step, int64_t first_sample) {
  // A module is named by its parameter name (and an expert by its global index), not by its place
  // in this rank's module list: the same Linear draws the same words at any PP or EP layout.
  const auto set = [&](fp8::LinearState& s, const std::string& module) {
    s.rounding_seed =
        fp8::rounding_seed(uint64_t(config_.run.seed), uint64_t(step), uint64_t(first_sample), parallel::fnv1a_64(module));
  };
  for (model::Linear* l : model_->linears()) set(l->state(), l->name());
  for (model::GroupedLinear* g : model_->grouped_linears()) {
    const int64_t first = model_->parameters().get(g->name() + ".weight").expert_offset;
    for (size_t e = 0; e < g->states().size(); ++e)
      set(g->states()[e], fmt::format("{}.{}", g->name(), first + int64_t(e)));
  }
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
  const int64_t syncs_before = host_sync_count();  // the step's own timing syncs stay out
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
  std::vector<data::Batch> batches;
  std::vector<int64_t> first_samples;  // each micro-batch's first global sample: its rounding seeds
  for (int64_t a = 0; a < accum; ++a) {
    batches.push_back(train_loader_->next());
    first_samples.push_back(batches.back().first_sample);
  }
  // Masked (chat) targets: the LM loss is the mean over the step's loss tokens (chat_training.h).
  const std::vector<double> lm_weight = config_.data.format == DataFormat::chat
                                            ? loss_token_weights(batches, *groups_.world)
                                            : std::vector<double>(size_t(accum), 1.0);
  const auto next_batch = [&, a = int64_t(0)]() mutable {
    data::Batch batch = std::move(batches[size_t(a)]);
    if (step_ == 0 && a == 0) {
      const std::vector<int64_t> t = batch.inputs.to_vector<int64_t>();
      Fnv1a h;
      h.add(t.data(), t.size() * sizeof(int64_t));
      m.batch_digest = h.hex();
    }
    ++a;
    return batch;
  };
  const auto seed_scale = [&](int64_t a) {
    double scale = 1.0 / double(accum);
    if (inject_nan_at_ && *inject_nan_at_ == m.step && a == 0) scale = std::nan("");  // test hook
    if (inject_hang_at_ && *inject_hang_at_ == m.step && groups_.world->rank() == groups_.world->size() - 1)
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // test hook: the last rank hangs
    return scale;
  };
  const std::unique_ptr<parallel::OverlappedGradSync> grad_sync = start_grad_sync();  // null: after backward
  const StageResult stage = schedule_->train(
      next_batch, accum, seed_scale, lm_weight,
      [&](int64_t a) { set_rounding_seeds(m.step, first_samples[size_t(a)]); }, grad_sync.get());
  if (stats) {
    if (groups_.world->rank() == 0) write_fp8_stats(m.step);
    set_fp8_stats(/*collect=*/false);
  }
  const auto sync_start = Clock::now();
  sync_gradients(grad_sync.get());
  if (groups_.world->size() > 1) m.grad_sync_ms = 1e3 * seconds_since(sync_start);
  overlapped_buckets_ =
      grad_sync ? std::pair(grad_sync->started_in_backward(), grad_sync->buckets()) : std::pair(0L, 0L);
  sum_router_loads();
  reduce_stage_metrics(stage, m);
  m.grad_norm = global_grad_norm();
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
  const int64_t tokens = config_.train.micro_batch_size * config_.train.seq_len * accum * groups_.stage->size();
  tokens_seen_ += tokens;
  m.tokens = tokens_seen_;
  if (device_.is_cuda()) m.host_syncs = host_sync_count() - syncs_before;
  if (gpu_timer) gpu_timer->stop();
  synchronize(device_);  // every kernel of the step is done before the clock stops
  const double s = seconds_since(t0);
  m.step_ms = 1e3 * s;
  if (gpu_timer) m.gpu_ms = gpu_timer->elapsed_ms();
  m.tokens_per_s = double(tokens) / s;
  m.model_flops_per_s = model_flops_per_token() * double(tokens) / s;
  if (peak_flops_ > 0) m.mfu = m.model_flops_per_s / (double(groups_.world->size()) * peak_flops_);
  m.mem_bytes = allocator_for(device_).stats().peak_bytes;
  return m;
}

int64_t Trainer::eval_batch_count() const {
  if (!val_loader_) return 0;
  return std::min(config_.train.eval_batches,
                  std::max<int64_t>(
                      1, val_loader_->samples_per_epoch() / (config_.train.micro_batch_size * groups_.stage->size())));
}

EvalMetrics Trainer::evaluate() {
  EvalMetrics e;
  e.step = step_;
  e.tokens = tokens_seen_;
  if (!val_loader_) return e;
  NoGradGuard no_grad;
  const Fp8Histories kept(*model_);  // evaluation must not move the delayed scales
  val_loader_->set_consumed_samples(0);
  // The mean over every loss token of the last stage's batches (nothing on the other stages),
  // over the data-parallel ranks: Σ (batch mean × its loss tokens) / Σ loss tokens. The all-reduce
  // is fp32: one rounding of each rank's sum (6e-8 relative), token counts exact below 2^24.
  const PipelineSchedule::EvalSum local = schedule_->evaluate([&] { return val_loader_->next(); }, eval_batch_count());
  double sums[2] = {local.loss_sum, double(local.tokens)};
  if (groups_.world->size() > 1) {
    Tensor t = Tensor::from_values({sums[0], sums[1]}, {2});
    groups_.world->all_reduce(t);
    const std::vector<double> v = t.to_doubles();
    sums[0] = v[0];
    sums[1] = v[1];
  }
  kept.restore(*model_);
  e.val_loss = sums[1] > 0 ? sums[0] / sums[1] : 0.0;
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
  std::optional<parallel::Watchdog> own;
  if (watchdog_ == nullptr) own.emplace(groups_.world->size() > 1 ? config_.parallel.timeout_s : 0.0);
  parallel::Watchdog& watchdog = watchdog_ != nullptr ? *watchdog_ : *own;
  if (host_sync_log_enabled()) reset_host_syncs();  // the breakdown printed at the end is this run's
  while (step_ < stop) {
    const auto step_start = Clock::now();
    watchdog.beat(fmt::format("step {}", step_ + 1));
    const StepMetrics m = train_step();
    if (rank0 && step_ == first + 1) {
      // The plan's prediction (train/plan.h) for this rank's stage next to what the allocator
      // measured on this rank.
      const int64_t predicted = plan_memory(config_, groups_.world->size(), int64_t(groups_.pp_stage)).peak;
      progress_->message(fmt::format("memory     step {} peak {} on rank 0; daedalus plan predicted {} ({:+.1f}%)",
                                     m.step, format_bytes(double(m.mem_bytes)), format_bytes(double(predicted)),
                                     100.0 * (double(predicted) - double(m.mem_bytes)) / double(m.mem_bytes)));
    }
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
    if (host_sync_log_enabled() && device_.is_cuda() && step_ > first)  // DAEDALUS_HOST_SYNC_LOG=1
      progress_->message(format_host_sync_sites(host_sync_sites(), step_ - first));
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
  if (groups_.pp_size > 1) {  // generation runs the whole model on one rank
    if (groups_.world->rank() == 0)
      progress_->message(
          "sample: skipped (pipeline stages: each rank holds part of the model; `daedalus generate "
          "--checkpoint` on the saved checkpoint runs the whole model)");
    return;
  }
  // Runs with a data.tokenizer and byte-level corpora (vocab 256, as prepare-data writes) print
  // text, others token ids; a chat run samples the reply to a user turn.
  const bool chat = config_.data.format == DataFormat::chat;
  const bool text = !config_.data.tokenizer.empty() ||
                    (config_.model.vocab_size == 256 && config_.data.format != DataFormat::synthetic);
  const PromptCodec codec(config_.data.tokenizer);  // bytes without one
  const std::vector<int64_t> prompt =
      text ? codec.encode(chat ? "Tell me something about life." : "The ", chat) : std::vector<int64_t>{0};
  SampleOptions o;
  o.max_new_tokens = 96;
  o.seed = uint64_t(config_.run.seed);
  o.context = config_.train.seq_len;
  const Fp8Histories kept(*model_);
  const std::vector<int64_t> tokens = sample(*model_, prompt, o);
  kept.restore(*model_);
  if (groups_.world->rank() != 0) return;
  if (text) {
    progress_->message(std::string("sample (temperature 0.8") + (chat ? ", reply to a chat prompt" : "") +
                       "): " + (chat ? "" : codec.text(prompt)) + codec.text(tokens));
  } else {
    std::string ids;
    for (int64_t t : tokens) ids += fmt::format("{} ", t);
    progress_->message("sample (temperature 0.8, token ids): " + ids);
  }
}

}  // namespace daedalus::train
