// Config agreement across ranks (see config_check.h).
#include "parallel/config_check.h"

#include <cstring>
#include <vector>

#include "autograd/check.h"
#include "autograd/tensor.h"

namespace daedalus::parallel {

uint64_t fnv1a_64(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV offset basis
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;  // FNV prime
  }
  return hash;
}

void check_same_config(Communicator& comm, const std::string& resolved_config_text) {
  const uint64_t mine = fnv1a_64(resolved_config_text);
  int64_t bits = 0;
  std::memcpy(&bits, &mine, sizeof bits);  // int64 carries the hash's bits unchanged
  const Tensor in = Tensor::from_vector<int64_t>({bits}, {1});
  const Tensor out = Tensor::empty({comm.size()}, DType::i64);
  comm.all_gather(in, out);
  const std::vector<int64_t> all = out.to_vector<int64_t>();
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    uint64_t h0 = 0, hr = 0;
    std::memcpy(&h0, &all[0], sizeof h0);
    std::memcpy(&hr, &all[r], sizeof hr);
    DAEDALUS_FAIL("config mismatch: rank {}'s resolved config differs from rank 0's (hash {:016x} vs {:016x})", r, hr,
                  h0);
  }
}

bool agree(Communicator& comm, bool ok, std::string* message) {
  if (comm.size() == 1) return ok;
  Tensor flag = Tensor::from_vector<int32_t>({ok ? 0 : comm.size() - comm.rank()}, {1});
  comm.all_reduce(flag, ReduceOp::max);
  const int32_t top = flag.to_vector<int32_t>()[0];
  if (top == 0) return true;
  const int root = comm.size() - top;
  constexpr int64_t kChars = 1024;
  std::vector<int32_t> text(size_t(kChars), 0);
  if (comm.rank() == root) {
    const std::string m = fmt::format("{}{}", root == 0 ? "" : fmt::format("(rank {}) ", root), *message);
    for (size_t i = 0; i < m.size() && i + 1 < size_t(kChars); ++i) text[i] = int32_t(uint8_t(m[i]));
  }
  Tensor t = Tensor::from_vector(text, {kChars});
  comm.broadcast(t, root);
  message->clear();
  for (int32_t c : t.to_vector<int32_t>()) {
    if (c == 0) break;
    message->push_back(char(c));
  }
  return false;
}

}  // namespace daedalus::parallel
