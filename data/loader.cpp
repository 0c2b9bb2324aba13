// The rank-sharded, resumable batch loader (see loader.h for the sample order).
//
// The per-epoch shuffle is a balanced Feistel network over [0, 4^h), the smallest even power of
// two >= N, whose round function is one Philox4x32-10 block keyed by the seed with the epoch and
// round in the counter. A Feistel network is a bijection of its domain whatever the round
// function; cycle-walking (apply it again until the value lands in [0, N)) restricts it to a
// bijection of [0, N). 4^h < 4N, so a walk takes fewer than 4 steps on average.
#include "data/loader.h"

#include <vector>

#include "autograd/check.h"
#include "autograd/generator.h"

namespace daedalus::data {
namespace {

constexpr int kFeistelRounds = 6;  // >= 4 rounds: a pseudorandom permutation (Luby-Rackoff)

}  // namespace

void Loader::check_options() const {
  const LoaderOptions& options = options_;
  DAEDALUS_CHECK(options.seq_len > 0, "Loader: seq_len {} must be positive", options.seq_len);
  DAEDALUS_CHECK(options.global_batch > 0, "Loader: global_batch {} must be positive", options.global_batch);
  DAEDALUS_CHECK(options.world > 0, "Loader: world size {} must be positive", options.world);
  DAEDALUS_CHECK(options.rank >= 0 && options.rank < options.world,
                 "Loader: rank {} is outside [0, {}) (world size {})", options.rank, options.world, options.world);
  DAEDALUS_CHECK(options.global_batch % options.world == 0, "Loader: global_batch {} is not divisible by world size {}",
                 options.global_batch, options.world);
}

Loader::Loader(const TokenSource& source, const LoaderOptions& options) : source_(&source), options_(options) {
  check_options();
  const int64_t tokens = source.size();
  samples_ = tokens > 0 ? (tokens - 1) / options.seq_len : 0;
  DAEDALUS_CHECK(samples_ > 0,
                 "Loader: {} has {} tokens: corpus shorter than one window of {} tokens (seq_len {} + 1 target)",
                 source.describe(), tokens, options.seq_len + 1, options.seq_len);
  while ((int64_t{1} << (2 * half_bits_)) < samples_) ++half_bits_;
}

Loader::Loader(const PackedWindows& windows, const LoaderOptions& options) : packed_(&windows), options_(options) {
  check_options();
  DAEDALUS_CHECK(windows.seq_len == options.seq_len, "Loader: packed windows of {} positions for seq_len {}",
                 windows.seq_len, options.seq_len);
  samples_ = windows.count;
  DAEDALUS_CHECK(samples_ > 0, "Loader: no packed windows");
  while ((int64_t{1} << (2 * half_bits_)) < samples_) ++half_bits_;
}

int64_t Batch::loss_tokens() const {
  int64_t n = 0;
  const int64_t* t = targets.data<int64_t>();
  for (int64_t i = 0; i < targets.numel(); ++i) n += t[i] != -100;
  return n;
}

int64_t Loader::permute(int64_t position, uint64_t epoch) const {
  if (!options_.shuffle) return position;
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  uint64_t x = uint64_t(position);
  do {
    uint64_t left = x >> half_bits_, right = x & mask;
    for (uint64_t round = 0; round < kFeistelRounds; ++round) {
      const uint64_t f = philox4x32(right | (round << 32), epoch, options_.seed)[0] & mask;
      const uint64_t mixed = left ^ f;
      left = right;
      right = mixed;
    }
    x = (left << half_bits_) | right;
  } while (x >= uint64_t(samples_));
  return int64_t(x);
}

int64_t Loader::window_start(int64_t global_index) const {
  DAEDALUS_CHECK(global_index >= 0, "Loader::window_start: global index {} is negative", global_index);
  const uint64_t epoch = uint64_t(global_index / samples_);
  return permute(global_index % samples_, epoch) * options_.seq_len;
}

// inputs, targets: int64 [local_batch, seq_len]; row i is window g = consumed + rank·local + i,
// targets[i][t] = inputs[i][t + 1] within the window's seq_len + 1 tokens.
Batch Loader::next() {
  const int64_t local = local_batch(), seq = options_.seq_len;
  Batch batch;
  batch.first_sample = consumed_ + options_.rank * local;
  batch.inputs = Tensor::empty({local, seq}, DType::i64);
  batch.targets = Tensor::empty({local, seq}, DType::i64);
  int64_t* inputs = batch.inputs.data<int64_t>();
  int64_t* targets = batch.targets.data<int64_t>();
  if (packed_ != nullptr) {
    batch.positions = Tensor::empty({local, seq}, DType::i64);
    int64_t* positions = batch.positions.data<int64_t>();
    for (int64_t i = 0; i < local; ++i) {
      const size_t row = size_t(window_start(batch.first_sample + i));  // window index · seq_len
      for (int64_t t = 0; t < seq; ++t) {
        inputs[i * seq + t] = packed_->inputs[row + size_t(t)];
        targets[i * seq + t] = packed_->targets[row + size_t(t)];
        positions[i * seq + t] = packed_->positions[row + size_t(t)];
      }
    }
    consumed_ += options_.global_batch;
    return batch;
  }
  std::vector<int32_t> window(static_cast<size_t>(seq + 1));
  for (int64_t i = 0; i < local; ++i) {
    source_->read(window_start(batch.first_sample + i), seq + 1, window.data());
    for (int64_t t = 0; t < seq; ++t) {
      inputs[i * seq + t] = window[size_t(t)];
      targets[i * seq + t] = window[size_t(t + 1)];
    }
  }
  consumed_ += options_.global_batch;
  return batch;
}

void Loader::set_consumed_samples(int64_t consumed) {
  DAEDALUS_CHECK(consumed >= 0, "Loader: consumed_samples {} is negative", consumed);
  DAEDALUS_CHECK(consumed % options_.global_batch == 0,
                 "Loader: consumed_samples {} is not a multiple of global_batch {} (resume at a step boundary)",
                 consumed, options_.global_batch);
  consumed_ = consumed;
}

}  // namespace daedalus::data
