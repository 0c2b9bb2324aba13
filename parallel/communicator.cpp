// What the backends share: the argument checks of all_to_all_v, exchange and reduce_scatter,
// the rank-order double sum, and the blocking fallback of the started collectives.
#include "parallel/communicator.h"

#include <cstring>

#include "autograd/check.h"

namespace daedalus::parallel {

namespace {

void check_counts(std::string_view op, std::string_view name, const std::vector<int64_t>& rows, const Tensor& t,
                  int size) {
  DAEDALUS_CHECK(static_cast<int64_t>(rows.size()) == size, "{}: {} has {} entries for {} ranks", op, name, rows.size(),
                 size);
  int64_t total = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    DAEDALUS_CHECK(rows[r] >= 0, "{}: {}[{}] = {} is negative", op, name, r, rows[r]);
    total += rows[r];
  }
  DAEDALUS_CHECK(total == t.size(0), "{}: {} sum to {} rows but the tensor is {}", op, name, total, t.describe());
}

// What a backend without a nonblocking form returns: the blocking call, already done.
class CompletedWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

std::unique_ptr<Work> Communicator::start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) {
  reduce_scatter(in, out, op);
  return std::make_unique<CompletedWork>();
}

std::unique_ptr<Work> Communicator::start_all_gather(const Tensor& in, const Tensor& out) {
  all_gather(in, out);
  return std::make_unique<CompletedWork>();
}

int64_t check_all_to_all_v(std::string_view op, const Tensor& in, const std::vector<int64_t>& send_counts,
                           const Tensor& out, const std::vector<int64_t>& recv_counts, int rank, int size) {
  DAEDALUS_CHECK(in.dtype() == out.dtype(), "{}: in is {} but out is {}", op, in.describe(), out.describe());
  DAEDALUS_CHECK(in.dim() >= 1 && out.dim() >= 1, "{}: in {} and out {} need a row dimension", op, in.describe(),
                 out.describe());
  const Shape row(in.shape().begin() + 1, in.shape().end());
  DAEDALUS_CHECK(row == Shape(out.shape().begin() + 1, out.shape().end()),
                 "{}: rows of in {} and out {} differ in shape", op, in.describe(), out.describe());
  check_counts(op, "send_counts", send_counts, in, size);
  check_counts(op, "recv_counts", recv_counts, out, size);
  DAEDALUS_CHECK(send_counts[size_t(rank)] == recv_counts[size_t(rank)],
                 "{}: rank {} sends itself {} rows but expects {}", op, rank, send_counts[size_t(rank)],
                 recv_counts[size_t(rank)]);
  int64_t elements = 1;
  for (int64_t d : row) elements *= d;
  return elements * int64_t(in.element_size());
}

void check_exchange(std::string_view op, const std::vector<PeerTransfer>& transfers, int rank, int size) {
  for (size_t i = 0; i < transfers.size(); ++i) {
    const PeerTransfer& t = transfers[i];
    const char* kind = t.kind == PeerTransfer::Kind::send ? "send" : "recv";
    DAEDALUS_CHECK(t.tensor.defined(), "{}: transfer {} ({}) has an undefined tensor", op, i, kind);
    DAEDALUS_CHECK(t.tensor.is_contiguous(), "{}: transfer {} ({}): {} must be contiguous", op, i, kind,
                   t.tensor.describe());
    DAEDALUS_CHECK(t.peer >= 0 && t.peer < size && t.peer != rank,
                   "{}: transfer {} ({}): peer {} is not another rank of this communicator (rank {} of {})", op, i,
                   kind, t.peer, rank, size);
  }
}

double sum_in_rank_order(Communicator& comm, double value) {
  if (comm.size() == 1) return value;
  int64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  const Tensor mine = Tensor::from_vector<int64_t>({bits}, {1});
  const Tensor all = Tensor::empty({comm.size()}, DType::i64);
  comm.all_gather(mine, all);
  double sum = 0;
  for (int64_t b : all.to_vector<int64_t>()) {
    double v = 0;
    std::memcpy(&v, &b, sizeof(v));
    sum += v;
  }
  return sum;
}

void check_reduce_scatter(std::string_view op, const Tensor& in, const Tensor& out, int size) {
  DAEDALUS_CHECK(in.dtype() == out.dtype(), "{}: in is {} but out is {}", op, in.describe(), out.describe());
  DAEDALUS_CHECK(in.numel() == out.numel() * size, "{}: in {} must hold {} ranks x {} elements of out {}", op,
                 in.describe(), size, out.numel(), out.describe());
}

void check_all_gather(std::string_view op, const Tensor& in, const Tensor& out, int size) {
  DAEDALUS_CHECK(in.dtype() == out.dtype(), "{}: in is {} but out is {}", op, in.describe(), out.describe());
  DAEDALUS_CHECK(out.numel() == in.numel() * size, "{}: out {} must hold {} ranks x {} elements of in {}", op,
                 out.describe(), size, in.numel(), in.describe());
}

}  // namespace daedalus::parallel
