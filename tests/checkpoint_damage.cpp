// Bit-flip trials over checkpoint files (see checkpoint_damage.h).
#include "tests/checkpoint_damage.h"

#include <hdf5.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "train/checkpoint.h"
#include "train/checkpoint_h5.h"
#include "train/trainer.h"

namespace daedalus::testing {

namespace {

namespace fs = std::filesystem;
using train::CheckpointReadError;

// [begin, end) byte ranges of every dataset chunk of a checkpoint (where the values live).
std::vector<std::pair<int64_t, int64_t>> chunk_ranges(const std::string& path) {
  std::vector<std::pair<int64_t, int64_t>> out;
  train::h5::Handle file = train::h5::open_file(path);
  for (const char* group : {"model", "optimizer", "fp8"}) {
    for (const std::string& name : train::h5::list_datasets(file.get(), group)) {
      train::h5::Handle d = train::h5::open_dataset(file.get(), name);
      train::h5::Handle space(H5Dget_space(d.get()), H5Sclose);
      hsize_t n = 0;
      H5Dget_num_chunks(d.get(), space.get(), &n);
      for (hsize_t i = 0; i < n; ++i) {
        hsize_t offset[8] = {};
        unsigned mask = 0;
        haddr_t addr = 0;
        hsize_t size = 0;
        if (H5Dget_chunk_info(d.get(), space.get(), i, offset, &mask, &addr, &size) >= 0)
          out.emplace_back(int64_t(addr), int64_t(addr + size));
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A position in [0, size) outside every chunk range.
int64_t metadata_position(const std::vector<std::pair<int64_t, int64_t>>& chunks, int64_t size, std::mt19937_64& rng) {
  for (;;) {
    const int64_t p = int64_t(rng() % uint64_t(size));
    bool inside = false;
    for (const auto& [b, e] : chunks) inside = inside || (p >= b && p < e);
    if (!inside) return p;
  }
}

// 64-bit hash of everything a load restores.
struct Fingerprint {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
  void add(const Tensor& t) {
    const Tensor c = t.to(Device::cpu()).to(DType::f32).contiguous();
    add(c.data<float>(), size_t(c.numel()) * sizeof(float));
  }
  void add(const fp8::LinearState& s) {
    for (const fp8::AmaxHistory* a : {&s.x, &s.w, &s.dy}) {
      const uint64_t n = a->values().size();
      add(&n, sizeof(n));
      for (float v : a->values()) add(&v, sizeof(v));
    }
  }
};

struct Loaded {
  std::unique_ptr<model::CausalLM> model;
  std::unique_ptr<train::AdamW> optimizer;
};

Loaded fresh(const train::RunConfig& config) {
  Loaded l;
  l.model = std::make_unique<model::CausalLM>(train::lm_options(config, nullptr));
  std::vector<train::Param> params;
  for (const model::Parameter& p : l.model->parameters().all())
    if (p.trainable) params.push_back(train::Param{p.name, p.var, p.weight_decay, false});
  l.optimizer = std::make_unique<train::AdamW>(std::move(params), config.optimizer);
  return l;
}

uint64_t fingerprint(Loaded& l, const train::TrainerState& s) {
  Fingerprint f;
  for (const model::Parameter& p : l.model->parameters().all()) f.add(p.var.value());
  for (const train::Param& p : l.optimizer->params()) {
    f.add(l.optimizer->exp_avg(p.name));
    f.add(l.optimizer->exp_avg_sq(p.name));
  }
  const int64_t step = l.optimizer->step_count();
  f.add(&step, sizeof(step));
  for (model::Linear* m : l.model->linears()) f.add(m->state());
  for (model::GroupedLinear* m : l.model->grouped_linears())
    for (const fp8::LinearState& s2 : m->states()) f.add(s2);
  for (int64_t v : {s.step, s.tokens_seen, s.consumed_samples, s.skipped_steps, s.consecutive_skips, s.world_size,
                    s.expert_parallel, s.format_version, int64_t(s.complete)})
    f.add(&v, sizeof(v));
  f.add(s.config.data(), s.config.size());
  f.add(s.recipe.data(), s.recipe.size());
  return f.h;
}

// Everything inspect reports: the /trainer values and every dataset's path, shape and digest.
std::string inspect_summary(const std::string& path) {
  const train::CheckpointInfo info = train::read_checkpoint_info(path);
  const train::Verification v = train::verify_checkpoint(path, info);
  const train::TrainerState& s = info.state;
  std::string out = fmt::format("{} {} {} {} {} {} {} {} {} {}\n{}\n{}\n", s.step, s.tokens_seen, s.consumed_samples,
                                s.skipped_steps, s.consecutive_skips, s.world_size, s.expert_parallel,
                                s.format_version, s.complete, info.optimizer_step.value_or(-1), s.recipe, s.config);
  for (size_t i = 0; i < info.tensors.size(); ++i)
    out += fmt::format("{} {} {} {:x}\n", info.tensors[i].path, info.tensors[i].dtype, shape_str(info.tensors[i].shape),
                       v.digests[i]);
  return out;
}

int quiet_inspect(const std::string& path) {
  std::FILE* sink = std::fopen("/dev/null", "w");
  const int code = train::inspect_checkpoint(path, sink);
  std::fclose(sink);
  return code;
}

}  // namespace

int flip_trial_count(int in_suite) {
  const char* v = std::getenv("DAEDALUS_FLIP_TRIALS");
  return v != nullptr ? std::atoi(v) : in_suite;
}

void copy_with_flips(const std::string& from, const std::string& to, uint64_t seed, int bits, bool metadata_only) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  const int64_t size = int64_t(fs::file_size(to));
  std::mt19937_64 rng(seed);
  const auto chunks = metadata_only ? chunk_ranges(from) : std::vector<std::pair<int64_t, int64_t>>{};
  std::fstream f(to, std::ios::in | std::ios::out | std::ios::binary);
  for (int b = 0; b < bits; ++b) {
    const int64_t p = metadata_only ? metadata_position(chunks, size, rng) : int64_t(rng() % uint64_t(size));
    char c = 0;
    f.seekg(p);
    f.read(&c, 1);
    c = char(c ^ char(1 << (rng() % 8)));
    f.seekp(p);
    f.write(&c, 1);
  }
}

FlipTally flip_trials(const std::string& pristine, const std::string& work, const train::RunConfig& config,
                      uint64_t seed, int trials) {
  FlipTally t;
  const std::string reference_summary = inspect_summary(pristine);
  Loaded reference = fresh(config);
  const train::TrainerState rs = train::load_checkpoint(pristine, *reference.model, reference.optimizer.get(),
                                                        train::LoadOptions{}, train::Placement{});
  const uint64_t reference_print = fingerprint(reference, rs);

  for (int i = 0; i < trials; ++i) {
    const uint64_t trial_seed = seed * 1000003u + uint64_t(i);
    copy_with_flips(pristine, work, trial_seed, 1 + i % 2, /*metadata_only=*/i % 4 < 2);
    ++t.trials;
    const std::string tag = fmt::format("trial {} (seed {})", i, trial_seed);
    if (quiet_inspect(work) != 0) {
      ++t.inspect_detected;
    } else {
      std::string summary;
      try {
        summary = inspect_summary(work);
      } catch (const std::exception& e) {
        t.failures.push_back(fmt::format("{}: inspect said OK, then reading failed: {}", tag, e.what()));
      }
      if (summary == reference_summary) {
        ++t.inspect_same;
      } else if (!summary.empty()) {
        t.failures.push_back(fmt::format("{}: inspect said OK but the file reads differently", tag));
      }
    }
    Loaded l = fresh(config);
    try {
      const train::TrainerState s =
          train::load_checkpoint(work, *l.model, l.optimizer.get(), train::LoadOptions{}, train::Placement{});
      if (fingerprint(l, s) == reference_print) {
        ++t.load_same;
      } else {
        t.failures.push_back(fmt::format("{}: loaded without error but the state differs", tag));
      }
    } catch (const CheckpointReadError&) {
      ++t.load_detected;
    } catch (const std::exception& e) {
      t.failures.push_back(fmt::format("{}: load failed with another kind of error: {}", tag, e.what()));
    }
  }
  return t;
}

}  // namespace daedalus::testing
