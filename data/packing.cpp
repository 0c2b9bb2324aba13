// Packing samples into windows (see packing.h).
#include "data/packing.h"

#include "autograd/check.h"

namespace daedalus::data {

namespace {

constexpr int32_t kIgnore = -100;  // the cross-entropy's ignore_index

}  // namespace

PackedWindows pack_samples(const std::vector<ChatSample>& samples, int64_t seq_len, int32_t pad_id) {
  DAEDALUS_CHECK(seq_len >= 1, "packing: seq_len {} must be positive", seq_len);
  PackedWindows w;
  w.seq_len = seq_len;
  int64_t used = 0;  // positions filled in the current (last) window
  auto new_window = [&] {
    w.inputs.resize(w.inputs.size() + size_t(seq_len), pad_id);
    w.targets.resize(w.targets.size() + size_t(seq_len), kIgnore);
    w.positions.resize(w.positions.size() + size_t(seq_len), 0);
    ++w.count;
    used = 0;
  };
  auto close_window = [&] {  // the rest of the window is padding, one document of its own
    const size_t row = size_t(w.count - 1) * size_t(seq_len);
    for (int64_t t = used; t < seq_len; ++t) w.positions[row + size_t(t)] = int32_t(t - used);
    used = seq_len;
  };
  for (const ChatSample& s : samples) {
    const int64_t n = int64_t(s.ids.size()) - 1;  // positions this sample needs
    if (n < 1) continue;
    ++w.samples;
    if (n > seq_len) ++w.split_samples;
    if (w.count == 0 || used + n > seq_len) {
      if (w.count > 0) close_window();
      new_window();
    }
    for (int64_t begin = 0; begin < n; begin += seq_len) {
      if (begin > 0) {  // the next piece of a sample longer than a window
        close_window();
        new_window();
      }
      const int64_t len = std::min(seq_len, n - begin);
      const size_t row = size_t(w.count - 1) * size_t(seq_len) + size_t(used);
      for (int64_t t = 0; t < len; ++t) {
        const size_t k = size_t(begin + t);
        w.inputs[row + size_t(t)] = s.ids[k];
        w.targets[row + size_t(t)] = s.loss[k + 1] ? s.ids[k + 1] : kIgnore;
        w.positions[row + size_t(t)] = int32_t(t);
        w.loss_tokens += s.loss[k + 1];
      }
      used += len;
    }
  }
  DAEDALUS_CHECK(w.count > 0, "packing: no sample has two tokens");
  close_window();
  return w;
}

}  // namespace daedalus::data
