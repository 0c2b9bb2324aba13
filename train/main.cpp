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
#include <optional>

#include "autograd/check.h"
#include "autograd/device.h"
#include "autograd/kernels/attention_backend.h"
#include "autograd/kernels/gemm.h"
#include "parallel/communicator.h"
#include "parallel/watchdog.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/export_hf.h"
#include "train/generate.h"
#include "train/import_hf.h"
#include "train/plan.h"
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
  if (daedalus::kernels::cudnn_attention_built()) {  // DAEDALUS_ATTENTION=cudnn's library (docs/gpu.md)
    const int v = daedalus::kernels::cudnn_runtime_version();
    fmt::print("  cuDNN        : {}\n", v > 0 ? fmt::format("{}.{}.{} (attention with DAEDALUS_ATTENTION=cudnn)",
                                                            v / 10000, v / 100 % 100, v % 100)
                                              : "built in, not loadable: " + daedalus::kernels::cudnn_load_error());
  }
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

void run_train(const std::string& config_path, const std::vector<std::string>& overrides) {
  // The watchdog before anything that waits for the other ranks (MPI_Init itself does), with the
  // config's parallel.timeout_s when it reads (errors are reported below, once MPI is up).
  namespace parallel = daedalus::parallel;
  const int launched = parallel::launched_world_size();
  double timeout_s = daedalus::train::ParallelConfig{}.timeout_s;
  try {
    timeout_s = daedalus::train::load_config(config_path, overrides).parallel.timeout_s;
  } catch (const std::exception&) {
  }
  std::optional<parallel::Watchdog> watchdog;
  if (launched > 1) watchdog.emplace(timeout_s);
  auto beat = [&](const char* what) {
    if (watchdog) watchdog->beat(what);
  };
  beat("start-up: MPI_Init");
  if (const char* r = std::getenv("OMPI_COMM_WORLD_RANK")) parallel::test_stop_point("mpi_init", std::atoi(r));
  // The world first: an error on one rank (even in its config) then ends the whole job.
  auto world = parallel::mpi_world();
  world_rank = world->rank();
  world_size = world->size();
  if (world_size == 1) watchdog.reset();  // no peer to wait for
  beat("start-up: reading the config");
  daedalus::train::RunConfig config = daedalus::train::load_config(config_path, overrides);
  config.validate(world_size);  // names parallel.expert_parallel when the world does not divide
  // MPI alone for CPU tensors; an NCCL world bootstrapped from it for train.device cuda.
  beat("start-up: creating the process groups");
  auto groups = daedalus::train::make_run_groups(config, world);
  beat("start-up: the config check across ranks");
  daedalus::train::Trainer trainer(std::move(config), std::move(groups), daedalus::train::TrainerMode::train,
                                   watchdog ? &*watchdog : nullptr);
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
                   const std::string& format, const std::string& experts) {
  using namespace daedalus::train;
  const RunConfig config = checkpoint_config(checkpoint, "", {});
  HfExportOptions eo;
  eo.dtype = dtype_name == "fp32" ? daedalus::DType::f32 : daedalus::DType::bf16;
  eo.fp8 = format == "fp8";
  eo.mxfp4_experts = experts == "mxfp4";
  eo.ue8m0 = config.precision.recipe.scale.power_of_two;             // the recipe's scales: power of two -> ue8m0
  const std::string config_text = hf_config_json(config.model, eo);  // refuses what HF cannot express, first
  daedalus::model::CausalLM model(lm_options(config, nullptr));      // one process holds every expert
  LoadOptions o;
  o.optimizer = false;
  o.fp8 = false;
  LoadReport report;
  const TrainerState s = load_checkpoint(checkpoint, model, nullptr, o, Placement{}, &report);
  export_hf(model.parameters(), config.model, out, eo);
  std::string tokenizer;
  if (!config.data.tokenizer.empty())
    for (const std::string& name : copy_tokenizer_files(config.data.tokenizer, out)) tokenizer += ", " + out + "/" + name;
  fmt::print(
      "exported {} (step {}): {} tensors as {} -> {}/config.json, {}/generation_config.json, "
      "{}/model.safetensors{}\n",
      checkpoint, s.step, report.tensors,
      eo.fp8 ? fmt::format("fp8 e4m3 {}x{} blocks with {} scales (other tensors bf16)", eo.block, eo.block,
                           eo.ue8m0 ? "ue8m0" : "fp32")
             : dtype_name + (eo.mxfp4_experts ? " (routed experts MXFP4)" : ""),
      out, out, out, tokenizer);
}

void run_import_hf(const std::string& dir, const std::string& out, const std::string& dtype_name) {
  using namespace daedalus::train;
  auto world = daedalus::parallel::mpi_world();
  world_rank = world->rank();
  world_size = world->size();
  const daedalus::DType dtype = dtype_name == "bf16" ? daedalus::DType::bf16 : daedalus::DType::f32;
  const HfImportSummary s = import_hf(dir, out, dtype, world);
  if (world_rank != 0) return;
  const daedalus::model::ModelConfig& c = s.config.model;
  const HfImportReport& r = s.report;
  std::string rope = "rope";
  if (c.rope_scaling)
    rope = fmt::format("yarn rope (factor {}, original {})", c.rope_scaling->factor,
                       c.rope_scaling->original_max_position_embeddings);
  std::string format = s.config.dtype.empty() ? "weights" : s.config.dtype + " weights";
  if (s.config.fp8.enabled)
    format = fmt::format("FP8 e4m3 weights ({}x{} blocks, {} scales)", s.config.fp8.block_rows, s.config.fp8.block_cols,
                         s.config.fp8.ue8m0 ? "ue8m0" : "float");
  fmt::print("{}: {} layers ({} MoE with {} experts), {} MTP, {}, {}\n", dir, c.num_hidden_layers,
             c.n_routed_experts > 0 ? c.num_hidden_layers - c.first_k_dense_replace : 0, c.n_routed_experts,
             c.num_nextn_predict_layers, rope, format);
  for (const std::string& n : r.notes) fmt::print("  note: {}\n", n);
  if (!s.config.ignored.empty()) {
    std::string keys;
    for (const std::string& k : s.config.ignored) keys += (keys.empty() ? "" : ", ") + k;
    fmt::print("  config.json fields without effect on the function: {}\n", keys);
  }
  fmt::print(
      "imported {} tensors ({} parameters) from {} file(s): {:.1f} MB read in {:.2f} s = {:.0f} MB/s ({:.0f} MB per "
      "CPU second) -> {} ({:.1f} MB, fp32 master weights{})\n",
      r.tensors, s.parameters, r.files, double(r.bytes) / 1e6, r.seconds, r.mb_per_s(), r.mb_per_cpu_s(), out,
      double(s.out_bytes) / 1e6, dtype_name == "bf16" ? " rounded to bf16" : "");
}

void run_eval(const std::string& checkpoint, const std::string& config_path,
              const std::vector<std::string>& overrides) {
  using namespace daedalus::train;
  RunConfig config = checkpoint_config(checkpoint, config_path, overrides);
  auto world = daedalus::parallel::mpi_world();
  world_rank = world->rank();
  world_size = world->size();
  // The checkpoint's run may have used expert parallelism or pipeline stages this world cannot:
  // any EP and PP size loads.
  if (world_size % (config.parallel.expert_parallel * config.parallel.pipeline_parallel) != 0) {
    config.parallel.pipeline_parallel = 1;
    config.parallel.pipeline_layers.clear();
    if (world_size % config.parallel.expert_parallel != 0) config.parallel.expert_parallel = 1;
  }
  auto groups = make_run_groups(config, world);
  Trainer trainer(std::move(config), std::move(groups), TrainerMode::evaluate);
  if (trainer.eval_batch_count() == 0)
    throw daedalus::InputError("data.val: the config has no validation data (set data.val, or --set data.val=...)");
  trainer.load_weights(checkpoint);
  if (world_rank == 0) {
    const RunConfig& c = trainer.config();
    const bool recipe_set = std::any_of(overrides.begin(), overrides.end(),
                                        [](const std::string& o) { return o.starts_with("precision.recipe="); });
    const std::string from = recipe_set            ? std::string("--set precision.recipe")
                             : config_path.empty() ? std::string("the checkpoint's precision.recipe")
                                                   : "precision.recipe of " + config_path;
    fmt::print("eval: precision {}{} ({}; --set precision.recipe=NAME to change, fp32 for full precision)\n",
               daedalus::fp8::recipe_name(c.precision.recipe.kind),
               c.precision.overrides.empty() ? "" : " with overrides", from);
  }
  const EvalMetrics e = trainer.evaluate();
  if (world_rank == 0)
    fmt::print(
        "{} (step {}): val_loss {:.6f}, {:.6f} bits per token, perplexity {:.3f} ({} batches of {} x {} tokens "
        "per rank)\n",
        checkpoint, e.step, e.val_loss, e.val_loss / std::log(2.0), std::exp(e.val_loss), trainer.eval_batch_count(),
        trainer.config().train.micro_batch_size, trainer.config().train.seq_len);
}

// `daedalus generate`: the checkpoint's model on this one process (every expert), fp32 at decode
// whatever recipe it trained under (unless --set precision.recipe=NAME), dropless routing; the prompt goes
// through the run's tokenizer (data.tokenizer; --chat: a user turn) or is bytes. Streams the text to stdout, then
// the timing and the cache accounting to stderr (docs/generation.md).
void run_generate(const std::string& checkpoint, const std::vector<std::string>& overrides, const std::string& prompt,
                  daedalus::train::GenerateOptions options, bool chat) {
  using namespace daedalus::train;
  namespace model = daedalus::model;
  const RunConfig config = checkpoint_config(checkpoint, "", overrides);
  model::LmOptions mo = lm_options(config, nullptr);  // one process holds every expert
  // fp32 unless --set precision.recipe=... asks for the Linears under a recipe (the attention core
  // and the absorbed kv_b_proj of the decode cache always use the fp32 master weights).
  const bool recipe_set = std::any_of(overrides.begin(), overrides.end(),
                                      [](const std::string& o) { return o.starts_with("precision.recipe="); });
  if (!recipe_set) {
    daedalus::fp8::Recipe fp32;
    fp32.kind = daedalus::fp8::RecipeKind::fp32;
    mo.recipes = daedalus::fp8::RecipeTable(fp32);
  }
  fmt::print(
      stderr, "generate: precision {} ({})\n",
      recipe_set ? daedalus::fp8::recipe_name(config.precision.recipe.kind) : std::string_view("fp32"),
      recipe_set ? "--set precision.recipe" : "the fp32 master weights; --set precision.recipe=NAME for a recipe");
  mo.moe.capacity_factor.reset();  // inference drops no tokens
  model::CausalLM lm(mo);
  LoadOptions lo;
  lo.optimizer = false;
  lo.fp8 = false;
  const TrainerState state = load_checkpoint(checkpoint, lm, nullptr, lo, Placement{}, nullptr);

  const PromptCodec codec(config.data.tokenizer);  // the run's tokenizer, or bytes
  const std::vector<int64_t> ids = codec.encode(prompt, chat);
  options.stop_token = codec.stop_token(chat);
  check_generate_inputs(config.model, ids, options);  // before any output
  fmt::print("{}{}", prompt, chat ? "\n" : "");
  std::fflush(stdout);
  GenerateStats st;
  const auto stream = [&](int64_t token) {
    if (token == options.stop_token) return;  // the end of the assistant's turn
    fmt::print("{}", codec.text(token));
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

  daedalus::train::PrepareOptions prep;
  auto* prepare = app.add_subcommand("prepare-data", "Turn text or JSONL corpora into llm.c token shards");
  prepare->add_option("--input", prep.inputs, "Text or JSONL files (.gz, .zst too) or glob patterns")->required();
  prepare->add_option("--out", prep.out, "Output directory for train_*.bin, val_000000.bin, summary.json")->required();
  prepare->add_option("--val-fraction", prep.val_fraction, "Share of tokens held out for validation (default 0.01)");
  prepare->add_option("--tokenizer", prep.tokenizer, "tokenizer.json (byte-level BPE); default: byte tokens");
  prepare->add_option("--text-key", prep.text_key, "JSONL key holding each document (default text)");
  prepare->add_flag("--bos", prep.bos, "Start each document with the tokenizer's BOS token");
  prepare->add_option("--threads", prep.threads, "Encoding threads (default: all hardware threads)");

  daedalus::train::TokenizeOptions tokenize_options;
  auto* tokenize = app.add_subcommand("tokenize", "Text on stdin -> token ids on stdout, or back (--decode)");
  tokenize->add_option("--tokenizer", tokenize_options.tokenizer, "HuggingFace tokenizer.json (byte-level BPE)")
      ->required();
  tokenize->add_flag("--decode", tokenize_options.decode, "Read ids (spaces or a JSON array), write the text");
  tokenize->add_flag("--json", tokenize_options.json, "JSON out: {\"ids\", \"tokens\"} (or {\"text\"} with --decode)");

  std::string inspect_file;
  auto* inspect = app.add_subcommand("inspect", "Checkpoint summary and integrity verdict (exit 1 unless OK)");
  inspect->add_option("file", inspect_file, "Checkpoint file (.h5)")->required();

  std::string checkpoint, export_out, export_dtype = "bf16", export_format = "hf", export_experts = "same";
  auto* export_hf =
      app.add_subcommand("export-hf", "Write a checkpoint as HuggingFace config.json + model.safetensors");
  export_hf->add_option("--checkpoint", checkpoint, "Checkpoint file (.h5)")->required();
  export_hf->add_option("--out", export_out, "Output directory")->required();
  export_hf->add_option("--dtype", export_dtype, "Tensor dtype: bf16 (default) or fp32")
      ->check(CLI::IsMember({"bf16", "fp32"}));
  export_hf
      ->add_option("--format", export_format,
                   "hf (default) or fp8: DeepSeek's block FP8 (E4M3 + weight_scale_inv per 128x128 block)")
      ->check(CLI::IsMember({"hf", "fp8"}));
  export_hf
      ->add_option("--experts", export_experts,
                   "Routed experts: same (default, --dtype) or mxfp4 (OCP MXFP4 in Quark's layout, which vLLM loads)")
      ->check(CLI::IsMember({"same", "mxfp4"}));

  std::string import_dir, import_out, import_dtype = "fp32";
  auto* import_hf = app.add_subcommand(
      "import-hf", "Turn a HuggingFace DeepseekV3 directory (sharded, BF16/FP16/FP32/FP8 blocks) into a checkpoint");
  import_hf->add_option("dir", import_dir, "Directory with config.json and model.safetensors[.index.json]")->required();
  import_hf->add_option("--out", import_out, "Checkpoint file to write (.h5)")->required();
  import_hf->add_option("--dtype", import_dtype, "Master weights as stored (fp32, default) or rounded to bf16")
      ->check(CLI::IsMember({"fp32", "bf16"}));

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
  generate->add_option("--prompt", prompt, "Prompt text (through data.tokenizer when set, else its bytes)")->required();
  bool chat = false;
  generate->add_flag("--chat", chat, "The prompt is a user turn in DeepSeek-V3's chat format; stop at its EOS");
  generate->add_option("--max-new-tokens", gen.max_new_tokens, "Tokens to generate (default 64)");
  generate->add_option("--temperature", gen.sampling.temperature, "Softmax temperature; 0 = greedy (default 0.8)");
  generate->add_option("--top-k", gen.sampling.top_k, "Sample from the k most likely tokens; 0 = all (default)");
  generate->add_option("--top-p", gen.sampling.top_p, "Nucleus: the smallest set of mass p; 1 = off (default)");
  generate->add_option("--seed", gen.seed, "Sampling seed (default 0)");
  generate->add_option("--cache", cache_kind, "KV cache: latent (absorbed MLA, default) or expanded (per-head k, v)")
      ->check(CLI::IsMember({"latent", "expanded"}));
  generate->add_option("--set", overrides, "Override a key of the checkpoint's config: --set a.b=c (repeatable)");

  std::string plan_config, plan_hardware = "h100";
  int64_t plan_world = 1;
  auto* plan = app.add_subcommand("plan", "Per-rank memory, step time and cost per token of a config on some hardware");
  plan->add_option("config", plan_config, "YAML config")->required()->check(CLI::ExistingFile);
  plan->add_option("--world", plan_world, "Ranks (GPUs) in the job (default 1)");
  plan->add_option("--set", overrides, "Override a config key: --set a.b=c (repeatable)");
  plan->add_option("--hardware", plan_hardware,
                   "h100 (default), h800, h200, b200, cpu, or a YAML file like configs/hardware/h100.yaml");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;
  }

  try {
    if (*info) {
      print_info();
    } else if (*prepare) {
      daedalus::train::run_prepare_data(prep);
    } else if (*tokenize) {
      daedalus::train::run_tokenize(tokenize_options, stdin, stdout);
    } else if (*train) {
      run_train(config, overrides);
    } else if (*plan) {
      return daedalus::train::run_plan(plan_config, plan_world, overrides, plan_hardware, stdout);
    } else if (*inspect) {
      return daedalus::train::inspect_checkpoint(inspect_file, stdout);
    } else if (*export_hf) {
      run_export_hf(checkpoint, export_out, export_dtype, export_format, export_experts);
    } else if (*import_hf) {
      run_import_hf(import_dir, import_out, import_dtype);
    } else if (*eval) {
      run_eval(checkpoint, eval_config, overrides);
    } else if (*generate) {
      gen.cache = cache_kind == "expanded" ? daedalus::model::CacheKind::expanded : daedalus::model::CacheKind::latent;
      run_generate(checkpoint, overrides, prompt, gen, chat);
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
