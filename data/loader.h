// The rank-sharded batch loader that resumes exactly at any world size.
//
// Over a token stream (pretraining) or over packed windows (fine-tuning, packing.h: the same
// order, with each window as one sample).
//
// Samples are windows of seq_len + 1 tokens starting at multiples of seq_len (inputs are the first
// seq_len, targets the last seq_len: the usual shift by one), so a source of S tokens holds
// N = (S - 1) / seq_len windows. The sample at global index g (g counts samples consumed since
// training began) is a pure function of (seed, g): epoch e = g / N and position p = g % N are mapped
// through a seeded bijection of [0, N) per epoch (no O(N) table: a Feistel network keyed by
// (seed, e), cycle-walked into [0, N)). Global batch b holds indices [b·B, (b+1)·B); rank r of w
// takes the contiguous slice [b·B + r·B/w, b·B + (r+1)·B/w). So the union of all ranks' samples,
// in rank order, is the world-size-1 batch, and resuming from consumed_samples continues the
// identical stream at any world size. Batches may straddle an epoch boundary.
//
// Checkpoint/resume: save consumed_samples() (and, to detect a changed run, seed, seq_len and
// samples_per_epoch()); on resume build the Loader with the same source, seq_len and seed (any
// rank/world whose world divides global_batch) and call set_consumed_samples(saved).
#pragma once

#include <cstdint>

#include "autograd/tensor.h"
#include "data/packing.h"
#include "data/source.h"

namespace daedalus::data {

struct LoaderOptions {
  int64_t seq_len = 128;
  int64_t global_batch = 8;  // samples per optimizer micro-step across all ranks
  uint64_t seed = 1234;
  int rank = 0;
  int world = 1;
  bool shuffle = true;  // false: windows in order (validation)
};

struct Batch {
  Tensor inputs;             // int64 [local_batch, seq_len]
  Tensor targets;            // int64 [local_batch, seq_len]; -100 where no loss (packed windows)
  Tensor positions;          // int64 [local_batch, seq_len] for packed windows: restarting per sample
  int64_t first_sample = 0;  // global index of this rank's first sample
  // Targets that carry loss (not -100) in this batch.
  int64_t loss_tokens() const;
};

class Loader {
 public:
  // InputError when the source is shorter than one window, seq_len or global_batch is not
  // positive, global_batch is not divisible by world, or rank is outside [0, world).
  // The source is read on every next() and must outlive the Loader.
  Loader(const TokenSource& source, const LoaderOptions& options);
  // Packed windows (packing.h) instead of a token stream: sample g is window permute(g) of
  // `windows` (its seq_len must equal options.seq_len), with its masked targets and positions.
  Loader(const PackedWindows& windows, const LoaderOptions& options);

  int64_t samples_per_epoch() const { return samples_; }
  int64_t local_batch() const { return options_.global_batch / options_.world; }
  // Global index -> window start token (the permutation); exposed for tests.
  int64_t window_start(int64_t global_index) const;

  Batch next();  // this rank's slice of the next global batch; consumed_samples += global_batch
  int64_t consumed_samples() const { return consumed_; }
  // Resume: consumed must be >= 0 and a multiple of global_batch (checkpoints are taken at step
  // boundaries), else InputError.
  void set_consumed_samples(int64_t consumed);

 private:
  int64_t permute(int64_t position, uint64_t epoch) const;  // the bijection of [0, N) for one epoch

  void check_options() const;

  const TokenSource* source_ = nullptr;
  const PackedWindows* packed_ = nullptr;
  LoaderOptions options_;
  int64_t samples_ = 0;
  int half_bits_ = 1;  // Feistel halves: the network permutes [0, 2^(2·half_bits)) ⊇ [0, N)
  int64_t consumed_ = 0;
};

}  // namespace daedalus::data
