// The BPE model over bytes: merge ranks in an open-addressing table keyed by the id pair, and the
// merge loop of HuggingFace tokenizers (a min-heap of candidate merges ordered by rank, then by
// position; a candidate whose pair changed since it was queued is dropped when popped).
#include <algorithm>
#include <bit>

#include "autograd/check.h"
#include "data/tokenizer_internal.h"

namespace daedalus::data::detail {

void MergeTable::build(const std::vector<std::array<int32_t, 3>>& merges) {
  size_t capacity = 16;
  while (capacity < 2 * merges.size()) capacity *= 2;  // load factor <= 1/2
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  shift_ = 64 - std::countr_zero(capacity);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right, merged] = merges[rank];
    const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> shift_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.rank < 0) {
        s = {key, int32_t(rank), merged};
        break;
      }
      if (s.key == key) {  // a repeated pair: tokenizers keeps the last one's rank and id
        s.rank = int32_t(rank);
        s.merged = merged;
        break;
      }
    }
  }
}

void BpeModel::encode_word(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    const auto it = by_bytes.find(word);
    if (it != by_bytes.end()) {
      out.push_back(it->second);
      return;
    }
  }
  auto& symbols = scratch.symbols;
  symbols.clear();
  for (const char c : word) {
    const int32_t id = byte_id[uint8_t(c)];
    if (id < 0) continue;  // a byte missing from the vocabulary (and no unk token): dropped, as tokenizers does
    const auto pos = int32_t(symbols.size());
    symbols.push_back({id, pos - 1, pos + 1, false});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  if (symbols.size() == 1) {
    out.push_back(symbols[0].id);
    return;
  }

  // Min-heap on (rank, pos): the lowest rank first, the leftmost among equal ranks.
  using Candidate = BpeScratch::Candidate;
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  auto& heap = scratch.heap;
  heap.clear();
  auto push = [&](int32_t pos) {
    const auto [rank, merged] = merges.find(symbols[size_t(pos)].id, symbols[size_t(symbols[size_t(pos)].next)].id);
    if (rank < 0) return;
    heap.push_back({rank, pos, merged});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t pos = 0; pos + 1 < int32_t(symbols.size()); ++pos) push(pos);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    auto& left = symbols[size_t(top.pos)];
    if (left.removed || left.next < 0) continue;
    auto& right = symbols[size_t(left.next)];
    if (merges.find(left.id, right.id).second != top.merged) continue;  // queued for a pair since changed
    left.id = top.merged;
    right.removed = true;
    left.next = right.next;
    if (right.next >= 0) symbols[size_t(right.next)].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    if (left.next >= 0) push(top.pos);
  }
  for (int32_t pos = 0; pos >= 0; pos = symbols[size_t(pos)].next) out.push_back(symbols[size_t(pos)].id);
}

}  // namespace daedalus::data::detail
