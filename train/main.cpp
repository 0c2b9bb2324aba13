// The `daedalus` command line: one subcommand per user task (shared/design/CONTRACT.md).
// Library code throws; this is the one place that catches, prints and picks the exit code:
// 0 success, 1 bad input (InputError), 2 runtime failure (anything else).
#include <omp.h>
#include <unistd.h>

#include <hdf5.h>
#include <mpi.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <dnnl.hpp>

#include "autograd/check.h"
#include "autograd/device.h"
#include "autograd/kernels/gemm.h"
#include "data/prepare.h"
#include "parallel/communicator.h"
#include "parallel/watchdog.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/export_hf.h"
#include "train/generate.h"
#include "train/text_commands.h"
#include "train/trainer.h"

namespace {

int world_rank = 0, world_size = 1;  // set once the trainer has a world

using daedalus::cuda_built;
using daedalus::cuda_device_count;

void print_info() {
  const dnnl_version_t* dnnl = dnnl_version();
  unsigned h5_major = 0, h5_minor = 0, h5_release = 0;
  H5get_libversion(&h5_major, &h5_minor, &h5_release);
  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING];
  int mpi_len = 0;
  MPI_Get_library_version(mpi_version, &mpi_len);
  std::string mpi(mpi_version, size_t(mpi_len));
  if (auto nl = mpi.find_first_of(",\n"); nl != std::string::npos) mpi.resize(nl);

  fmt::print("daedalus {}\n", DAEDALUS_VERSION);
  fmt::print("  CUDA backend : {}\n", cuda_built() ? fmt::format("built, {} device(s) visible", cuda_device_count())
                                                   : std::string("built without CUDA"));
  fmt::print("  oneDNN       : {}.{}.{} (CPU runtime threads: {}, BF16 matmul: {})\n", dnnl->major, dnnl->minor,
             dnnl->patch, omp_get_max_threads(),
             daedalus::kernels::cpu_has_bf16_matmul() ? "native" : "none on this CPU, widened to FP32");
  fmt::print("  MPI          : {}\n", mpi);
  fmt::print("  HDF5         : {}.{}.{}{}\n", h5_major, h5_minor, h5_release,
#ifdef H5_HAVE_PARALLEL
             " (parallel)"
#else
             " (serial)"
#endif
  );
}

// "[#########           ]  45%  1.2 / 2.8 MB" on a terminal, redrawn in place; nothing otherwise.
void draw_progress(int64_t done, int64_t total) {
  static const bool tty = isatty(fileno(stderr)) != 0;
  if (!tty || total <= 0) return;
  constexpr int kWidth = 30;
  const double f = double(done) / double(total);
  const int filled = int(f * kWidth);
  fmt::print(stderr, "\r[{}{}] {:3.0f}%  {:.1f} / {:.1f} MB{}", std::string(size_t(filled), '#'),
             std::string(size_t(kWidth - filled), ' '), 100 * f, double(done) / 1e6, double(total) / 1e6,
             done >= total ? "\n" : "");
}

void run_prepare_data(const std::vector<std::string>& inputs, const std::string& out, double val_fraction) {
  const daedalus::data::PrepareSummary s = daedalus::data::prepare_data(inputs, out, val_fraction, draw_progress);
  const auto train_shards = std::count_if(s.shards.begin(), s.shards.end(), [](const std::string& path) {
    return path.find("/train_") != std::string::npos;
  });
  fmt::print("prepared {} files, {} bytes -> {} train tokens in {} shard(s), {} validation tokens, in {}\n", s.files,
             s.bytes, s.train_tokens, train_shards, s.val_tokens, out);
}

void run_train(const std::string& config_path, const std::vector<std::string>& overrides) {
  // The world first: an error on one rank (even in its config) then ends the whole job.
  auto world = daedalus::parallel::mpi_world();
  world_rank = world->rank();
  world_size = world->size();
  daedalus::train::RunConfig config = daedalus::train::load_config(config_path, overrides);
  config.validate(world_size);  // names parallel.expert_parallel when the world does not divide
  // MPI alone for CPU tensors; an NCCL world bootstrapped from it for train.device cuda.
  auto groups = daedalus::train::make_run_groups(config, world);
  daedalus::train::Trainer trainer(std::move(config), std::move(groups));
  trainer.run();
}

// The config a checkpoint was trained with (or `config_path` when given), with `overrides`.
daedalus::train::RunConfig checkpoint_config(const std::string& checkpoint, const std::string& config_path,
                                             const std::vector<std::string>& overrides) {
  if (!config_path.empty()) return daedalus::train::load_config(config_path, overrides);
  const daedalus::train::CheckpointInfo info = daedalus::train::read_checkpoint_info(checkpoint);
  if (info.state.config.empty())
    throw daedalus::InputError(fmt::format("{}: no config stored in /trainer; pass --config", checkpoint));
  return daedalus::train::parse_config(info.state.config, overrides, checkpoint + ":/trainer/config");
}

void run_export_hf(const std::string& checkpoint, const std::string& out, const std::string& dtype_name,
                   const std::string& experts) {
  using namespace daedalus::train;
  const RunConfig config = checkpoint_config(checkpoint, "", {});
  daedalus::model::CausalLM model(lm_options(config, nullptr));  // one process holds every expert
  LoadOptions o;
  o.optimizer = false;
  o.fp8 = false;
  LoadReport report;
  const TrainerState s = load_checkpoint(checkpoint, model, nullptr, o, Placement{}, &report);
  const daedalus::DType dtype = dtype_name == "fp32" ? daedalus::DType::f32 : daedalus::DType::bf16;
  export_hf(model.parameters(), config.model, out, dtype, experts == "mxfp4");
  fmt::print("exported {} (step {}): {} tensors as {}{} -> {}/config.json, {}/model.safetensors\n", checkpoint, s.step,
             report.tensors, dtype_name, experts == "mxfp4" ? " (routed experts MXFP4)" : "", out, out);
}

void run_eval(const std::string& checkpoint, const std::string& config_path,
              const std::vector<std::string>& overrides) {
  using namespace daedalus::train;
  RunConfig config = checkpoint_config(checkpoint, config_path, overrides);
  auto world = daedalus::parallel::mpi_world();
  world_rank = world->rank();
  world_size = world->size();
  // The checkpoint's run may have used expert parallelism this world cannot: any EP size loads.
  if (world_size % config.parallel.expert_parallel != 0) config.parallel.expert_parallel = 1;
  auto groups = make_run_groups(config, world);
  Trainer trainer(std::move(config), std::move(groups), TrainerMode::evaluate);
  if (trainer.eval_batch_count() == 0)
    throw daedalus::InputError("data.val: the config has no validation data (set data.val, or --set data.val=...)");
  trainer.load_weights(checkpoint);
  const EvalMetrics e = trainer.evaluate();
  if (world_rank == 0)
    fmt::print(
        "{} (step {}): val_loss {:.6f}, {:.6f} bits per token, perplexity {:.3f} ({} batches of {} x {} tokens "
        "per rank)\n",
        checkpoint, e.step, e.val_loss, e.val_loss / std::log(2.0), std::exp(e.val_loss), trainer.eval_batch_count(),
        trainer.config().train.micro_batch_size, trainer.config().train.seq_len);
}

// `daedalus generate`: the checkpoint's model on this one process (every expert), fp32 at decode
// whatever recipe it trained under, dropless routing; the prompt's bytes are its tokens. Streams the
// text to stdout, then the timing and the cache accounting to stderr (docs/generation.md).
void run_generate(const std::string& checkpoint, const std::vector<std::string>& overrides, const std::string& prompt,
                  const daedalus::train::GenerateOptions& options) {
  using namespace daedalus::train;
  namespace model = daedalus::model;
  const RunConfig config = checkpoint_config(checkpoint, "", overrides);
  model::LmOptions mo = lm_options(config, nullptr);  // one process holds every expert
  daedalus::fp8::Recipe fp32;
  fp32.kind = daedalus::fp8::RecipeKind::fp32;
  mo.recipes = daedalus::fp8::RecipeTable(fp32);  // recipes are for training: decode uses the fp32 weights
  mo.moe.capacity_factor.reset();                 // inference drops no tokens
  model::CausalLM lm(mo);
  LoadOptions lo;
  lo.optimizer = false;
  lo.fp8 = false;
  const TrainerState state = load_checkpoint(checkpoint, lm, nullptr, lo, Placement{}, nullptr);

  const std::vector<int64_t> ids(reinterpret_cast<const unsigned char*>(prompt.data()),
                                 reinterpret_cast<const unsigned char*>(prompt.data()) + prompt.size());
  check_generate_inputs(config.model, ids, options);  // before any output
  fmt::print("{}", prompt);
  std::fflush(stdout);
  GenerateStats st;
  const auto stream = [](int64_t token) {
    fmt::print("{}", bytes_to_text({token}));
    std::fflush(stdout);
  };
  generate(lm, ids, options, stream, &st);
  fmt::print("\n");
  std::fflush(stdout);

  const model::ModelConfig& c = config.model;
  if (st.context_full)
    fmt::print(stderr,
               "generate: stopped after {} new tokens: the sequence reached model.max_position_embeddings = {}\n",
               st.new_tokens, c.max_position_embeddings);
  const auto rate = [](int64_t n, double s) { return s > 0 ? double(n) / s : 0.0; };
  fmt::print(stderr, "{} (step {}): {} prompt + {} new tokens, {} cache, {} layers\n", checkpoint, state.step,
             st.prompt_tokens, st.new_tokens, options.cache == model::CacheKind::latent ? "latent" : "expanded",
             c.num_hidden_layers);
  fmt::print(stderr,
             "prefill: {} tokens in {:.4f} s = {:.1f} tokens/s; decode: {} steps in {:.4f} s = {:.1f} tokens/s\n",
             st.prompt_tokens, st.prefill_s, rate(st.prompt_tokens, st.prefill_s), st.decode_steps, st.decode_s,
             rate(st.decode_steps, st.decode_s));
  const model::CacheFootprint f = model::cache_footprint(c);
  const auto line = [&](const char* name, int64_t elements, const char* what) {
    fmt::print(stderr, "  {:<9} {:>9} elements = {:>9} B fp32, {:>9} B bf16   {}\n", name, elements, 4 * elements,
               2 * elements, what);
  };
  fmt::print(stderr, "KV cache per token per layer:\n");
  line("latent", f.latent, "kv_lora_rank + qk_rope_head_dim");
  line("expanded", f.expanded, "heads x (qk_nope + qk_rope + v_head_dim)");
  line("MHA", f.mha, "2 x heads x v_head_dim (plain MHA of the same heads)");
  fmt::print(stderr, "  latent / expanded = 1 / {:.1f}; this run's cache held {} B fp32 ({} tokens x {} layers)\n",
             double(f.expanded) / double(f.latent), st.cache_bytes,
             st.prompt_tokens + std::max<int64_t>(st.decode_steps, 0), c.num_hidden_layers);
}

// An error on one rank of several: the others may be blocked in a collective, so the whole job is
// aborted (MPI_Abort) with this rank's message and exit code instead of hanging.
[[noreturn]] void fail(int code, const char* what) {
  if (world_size > 1)
    daedalus::parallel::abort_job(code, fmt::format("rank {} of {}: {}", world_rank, world_size, what));
  fmt::print(stderr, "daedalus: {}\n", what);
  std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  // HDF5's exit handler closes whatever is still open, and crashes on a file whose save failed (a
  // full disk): every file is closed by its owner, so the handler has nothing to do.
  H5dont_atexit();
  // A file-size limit (ulimit -f) makes write() fail with EFBIG, reported like a full disk, instead
  // of killing the process silently.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"Daedalus: FP8 mixed-precision training for DeepSeek-V3-style models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("daedalus ") + DAEDALUS_VERSION);

  auto* info = app.add_subcommand("info", "Print the build: CUDA, oneDNN, MPI, HDF5 versions and devices");

  std::string config;
  std::vector<std::string> overrides;
  auto* train = app.add_subcommand("train", "Train a model from a YAML config");
  train->add_option("--config", config, "YAML config file")->required()->check(CLI::ExistingFile);
  train->add_option("--set", overrides, "Override a config key: --set a.b=c (repeatable)");

  std::vector<std::string> prepare_inputs;
  std::string prepare_out;
  double val_fraction = 0.01;
  auto* prepare = app.add_subcommand("prepare-data", "Turn text files into llm.c token shards (byte-level tokens)");
  prepare->add_option("--input", prepare_inputs, "Text files or glob patterns")->required();
  prepare->add_option("--out", prepare_out, "Output directory for train_*.bin, val_000000.bin, summary.json")
      ->required();
  prepare->add_option("--val-fraction", val_fraction, "Share of tokens held out for validation (default 0.01)");

  daedalus::train::TokenizeOptions tokenize_options;
  auto* tokenize = app.add_subcommand("tokenize", "Text on stdin -> token ids on stdout, or back (--decode)");
  tokenize->add_option("--tokenizer", tokenize_options.tokenizer, "HuggingFace tokenizer.json (byte-level BPE)")
      ->required();
  tokenize->add_flag("--decode", tokenize_options.decode, "Read ids (spaces or a JSON array), write the text");
  tokenize->add_flag("--json", tokenize_options.json, "JSON out: {\"ids\", \"tokens\"} (or {\"text\"} with --decode)");

  std::string inspect_file;
  auto* inspect = app.add_subcommand("inspect", "Checkpoint summary and integrity verdict (exit 1 unless OK)");
  inspect->add_option("file", inspect_file, "Checkpoint file (.h5)")->required();

  std::string checkpoint, export_out, export_dtype = "bf16", export_experts = "same";
  auto* export_hf =
      app.add_subcommand("export-hf", "Write a checkpoint as HuggingFace config.json + model.safetensors");
  export_hf->add_option("--checkpoint", checkpoint, "Checkpoint file (.h5)")->required();
  export_hf->add_option("--out", export_out, "Output directory")->required();
  export_hf->add_option("--dtype", export_dtype, "Tensor dtype: bf16 (default) or fp32")
      ->check(CLI::IsMember({"bf16", "fp32"}));
  export_hf
      ->add_option("--experts", export_experts,
                   "Routed experts: same (default, --dtype) or mxfp4 (OCP MXFP4 in Quark's layout, which vLLM loads)")
      ->check(CLI::IsMember({"same", "mxfp4"}));

  std::string eval_config;
  auto* eval = app.add_subcommand("eval", "Validation loss and bits per token of a checkpoint");
  eval->add_option("--checkpoint", checkpoint, "Checkpoint file (.h5)")->required();
  eval->add_option("--config", eval_config, "YAML config (default: the one stored in the checkpoint)")
      ->check(CLI::ExistingFile);
  eval->add_option("--set", overrides, "Override a config key: --set a.b=c (repeatable)");

  std::string prompt, cache_kind = "latent";
  daedalus::train::GenerateOptions gen;
  auto* generate = app.add_subcommand("generate", "Sample text from a checkpoint (prefill, then cached MLA decode)");
  generate->add_option("--checkpoint", checkpoint, "Checkpoint file (.h5)")->required();
  generate->add_option("--prompt", prompt, "Prompt text (its bytes are the tokens)")->required();
  generate->add_option("--max-new-tokens", gen.max_new_tokens, "Tokens to generate (default 64)");
  generate->add_option("--temperature", gen.sampling.temperature, "Softmax temperature; 0 = greedy (default 0.8)");
  generate->add_option("--top-k", gen.sampling.top_k, "Sample from the k most likely tokens; 0 = all (default)");
  generate->add_option("--top-p", gen.sampling.top_p, "Nucleus: the smallest set of mass p; 1 = off (default)");
  generate->add_option("--seed", gen.seed, "Sampling seed (default 0)");
  generate->add_option("--cache", cache_kind, "KV cache: latent (absorbed MLA, default) or expanded (per-head k, v)")
      ->check(CLI::IsMember({"latent", "expanded"}));
  generate->add_option("--set", overrides, "Override a key of the checkpoint's config: --set a.b=c (repeatable)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }

  try {
    if (*info) {
      print_info();
    } else if (*prepare) {
      run_prepare_data(prepare_inputs, prepare_out, val_fraction);
    } else if (*tokenize) {
      daedalus::train::run_tokenize(tokenize_options, stdin, stdout);
    } else if (*train) {
      run_train(config, overrides);
    } else if (*inspect) {
      return daedalus::train::inspect_checkpoint(inspect_file, stdout);
    } else if (*export_hf) {
      run_export_hf(checkpoint, export_out, export_dtype, export_experts);
    } else if (*eval) {
      run_eval(checkpoint, eval_config, overrides);
    } else if (*generate) {
      gen.cache = cache_kind == "expanded" ? daedalus::model::CacheKind::expanded : daedalus::model::CacheKind::latent;
      run_generate(checkpoint, overrides, prompt, gen);
    }
  } catch (const daedalus::InputError& e) {
    fail(1, e.what());
  } catch (const daedalus::train::SaveError& e) {
    // Every rank failed this save together (checkpoint_save.cpp): each reports, none aborts the others.
    // std::_Exit: MPI_Finalize would run HDF5's termination, which crashes on the abandoned file.
    fmt::print(stderr, "daedalus: {}{}\n", world_size > 1 ? fmt::format("rank {} of {}: ", world_rank, world_size) : "",
               e.what());
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(2);
  } catch (const std::exception& e) {
    fail(2, e.what());
  }
  return 0;
}
