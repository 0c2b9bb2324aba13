// Samples of different lengths (chat conversations) packed into training windows of seq_len
// positions, for supervised fine-tuning.
//
// A sample of n tokens gives n - 1 positions: inputs ids[0 .. n-2], targets ids[1 .. n-1], a
// target kept where loss[t + 1] is set and -100 (ignored by the loss) elsewhere. Samples are
// placed in order; one that does not fit in what is left of the current window starts the next
// window (the rest is padding: input pad_id, target -100), so a sample is never split when it
// fits in one window. A sample longer than a window is cut into window-sized pieces, each in a
// window of its own, each its own document (it sees nothing of the piece before it).
// positions restart at 0 where each sample (or piece, or the padding) starts: with
// data.document_mask they are the RoPE positions and define the block-diagonal attention mask.
#pragma once

#include <cstdint>
#include <vector>

#include "data/chat.h"

namespace daedalus::data {

struct PackedWindows {
  int64_t seq_len = 0;
  int64_t count = 0;                                // windows
  std::vector<int32_t> inputs, targets, positions;  // [count, seq_len] each, row-major
  int64_t samples = 0;                              // samples placed (those of one token give nothing)
  int64_t split_samples = 0;                        // samples longer than a window, cut into pieces
  int64_t loss_tokens = 0;                          // targets that carry loss
};

// InputError when seq_len < 1 or no sample has two tokens.
PackedWindows pack_samples(const std::vector<ChatSample>& samples, int64_t seq_len, int32_t pad_id);

}  // namespace daedalus::data
