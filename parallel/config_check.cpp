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

}  // namespace daedalus::parallel
