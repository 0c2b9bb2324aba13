// What the trainer does for chat fine-tuning (data.format: chat): the packed windows of a run's
// conversation files, and the weights that make a step's LM loss the mean over its loss tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "parallel/communicator.h"
#include "train/config.h"

namespace daedalus::train {

// The conversations of `patterns` rendered with data.tokenizer and packed into seq_len windows
// (padding with EOS, whose targets carry no loss). InputError when the tokenizer's ids do not fit
// model.vocab_size = vocab_size, or as data::read_chat says.
std::unique_ptr<data::PackedWindows> open_chat(const DataConfig& d, const std::vector<std::string>& patterns,
                                               int64_t seq_len, int64_t vocab_size);

// The banner's data line for packed conversations: files, conversations, how many were cut,
// windows, loss tokens, and whether the document mask is on.
std::string describe_chat(const data::PackedWindows& windows, const std::vector<std::string>& files,
                          bool document_mask);

// Chat data masks targets, so micro-batches and ranks hold different numbers of loss tokens. The
// LM loss of a step is the mean over all of the step's loss tokens (every rank, every
// micro-batch), not a mean of per-micro-batch means: micro-batch a of a rank weighs its own mean
// by w_a = n_a · accum · world / N (n_a its loss tokens, N the step's total over `world`, one
// all-reduce). With the trainer's 1/accum scaling and the gradient mean over ranks,
// Σ w_a · mean_a / (accum · world) = Σ loss / N. A step with N = 0 gets w = 0: it contributes
// nothing, and nothing divides by zero. Unmasked data would get w_a = 1.
std::vector<double> loss_token_weights(const std::vector<data::Batch>& batches, parallel::Communicator& world);

}  // namespace daedalus::train
