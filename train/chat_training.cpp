// Chat fine-tuning in the trainer (see chat_training.h).
#include "train/chat_training.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "autograd/check.h"
#include "data/chat.h"
#include "data/packing.h"
#include "data/tokenizer.h"

namespace daedalus::train {

std::unique_ptr<data::PackedWindows> open_chat(const DataConfig& d, const std::vector<std::string>& patterns,
                                               int64_t seq_len, int64_t vocab_size) {
  const data::Tokenizer tokenizer = data::Tokenizer::load(d.tokenizer);
  DAEDALUS_CHECK(tokenizer.vocab_size() <= vocab_size, "model.vocab_size: {}, but data.tokenizer {} has {} tokens",
                 vocab_size, d.tokenizer, tokenizer.vocab_size());
  return std::make_unique<data::PackedWindows>(
      data::pack_samples(data::read_chat(patterns, tokenizer), seq_len, *tokenizer.eos_id()));
}

std::string describe_chat(const data::PackedWindows& w, const std::vector<std::string>& files, bool document_mask) {
  return fmt::format("chat {} ({} conversations, {} cut, in {} windows; {} loss tokens{})", fmt::join(files, " "),
                     w.samples, w.split_samples, w.count, w.loss_tokens, document_mask ? ", document mask" : "");
}

std::vector<double> loss_token_weights(const std::vector<data::Batch>& batches, parallel::Communicator& world) {
  std::vector<double> counts;
  double total = 0;
  for (const data::Batch& b : batches) {
    counts.push_back(double(b.loss_tokens()));
    total += counts.back();
  }
  if (world.size() > 1) {
    Tensor t = Tensor::from_values({total}, {1});
    world.all_reduce(t);
    total = t.item();
  }
  const double parts = double(batches.size()) * double(world.size());  // accum · world
  std::vector<double> weights;
  for (double n : counts) weights.push_back(total > 0 ? n * parts / total : 0.0);
  return weights;
}

}  // namespace daedalus::train
