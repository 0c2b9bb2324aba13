// The MPI backend of Communicator: host buffers only (CPU clusters, CI). Library traffic runs on
// a duplicate of MPI_COMM_WORLD, so it never matches a user's own messages, and every
// communicator returns MPI errors (MPI_ERRORS_RETURN) so that DAEDALUS_MPI_CHECK turns them into
// exceptions naming the failing call instead of MPI aborting the job.
//
// MPI 3 counts are int: every element or byte count and displacement handed to MPI is checked to
// fit, and a count that does not is an InputError naming it.
#include <climits>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <numeric>

#include "autograd/check.h"
#include "parallel/communicator.h"

#if !DAEDALUS_MINIMAL
#include <mpi.h>
#endif

namespace daedalus::parallel {

#if DAEDALUS_MINIMAL

// Built without MPI (DAEDALUS_MINIMAL): there is no MPI backend to hand out.
std::shared_ptr<Communicator> mpi_world() {
  throw Error("mpi_world: Daedalus was built with DAEDALUS_MINIMAL (no MPI); rebuild without it for multi-rank runs");
}
int node_local_rank(const Communicator&) {
  throw Error("node_local_rank: Daedalus was built with DAEDALUS_MINIMAL (no MPI)");
}

#else

namespace {

// MPI 3 takes int counts; anything larger is refused with the op and the count named.
int checked_count(std::string_view op, std::string_view what, int64_t count) {
  DAEDALUS_CHECK(count >= 0 && count <= INT_MAX, "{}: {} {} does not fit MPI's int counts (0..{})", op, what, count,
                 INT_MAX);
  return static_cast<int>(count);
}

void check_host_tensor(std::string_view op, std::string_view name, const Tensor& t) {
  DAEDALUS_CHECK(t.defined(), "{}: {} is an undefined tensor", op, name);
  DAEDALUS_CHECK(!t.device().is_cuda(),
                 "{}: {} is {}, but the MPI backend needs host buffers; use the NCCL backend for CUDA tensors", op,
                 name, t.describe());
  DAEDALUS_CHECK(t.is_contiguous(), "{}: {} ({}) must be contiguous", op, name, t.describe());
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::sum ? MPI_SUM : MPI_MAX; }

// A started nonblocking collective: its request, the tensors MPI reads and writes (held until it
// completes), and what to do once it has (the bf16 reduce-scatter's rounding back).
class MpiWork final : public Work {
 public:
  explicit MpiWork(std::vector<Tensor> buffers, std::function<void()> then = {})
      : buffers_(std::move(buffers)), then_(std::move(then)) {}
  ~MpiWork() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);  // best effort (see Work)
  }
  MpiWork(const MpiWork&) = delete;
  MpiWork& operator=(const MpiWork&) = delete;

  MPI_Request* request() { return &request_; }

  void wait() override {
    if (!done_) {
      DAEDALUS_MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
      complete();
    }
  }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    DAEDALUS_MPI_CHECK(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
    if (flag != 0) complete();
    return done_;
  }

 private:
  void complete() {
    done_ = true;
    if (then_) then_();
    buffers_.clear();
  }

  std::vector<Tensor> buffers_;
  std::function<void()> then_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed on destruction unless MPI is already finalized).
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    DAEDALUS_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    DAEDALUS_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    DAEDALUS_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  MPI_Comm comm() const { return comm_; }

  // fp32, int32, int64 are reduced natively. bf16 has no MPI type: it is widened to fp32, reduced
  // in fp32 and rounded back to bf16 once (round-to-nearest-even), so the result is the bf16
  // rounding of the fp32 reduction, not a sum of bf16 partial roundings.
  void all_reduce(const Tensor& t, ReduceOp op) override {
    check_host_tensor("all_reduce", "tensor", t);
    const int count = checked_count("all_reduce", "element count", t.numel());
    switch (t.dtype()) {
      case DType::f32:
        DAEDALUS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), count, MPI_FLOAT, mpi_op(op), comm_));
        return;
      case DType::i32:
        DAEDALUS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), count, MPI_INT32_T, mpi_op(op), comm_));
        return;
      case DType::i64:
        DAEDALUS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), count, MPI_INT64_T, mpi_op(op), comm_));
        return;
      case DType::bf16: {
        Tensor wide = t.to(DType::f32);
        DAEDALUS_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, wide.data_ptr(), count, MPI_FLOAT, mpi_op(op), comm_));
        Tensor(t).copy_(wide);  // Tensor is a handle: the copy writes t's storage
        return;
      }
      default: throw_unsupported_dtype("all_reduce", t.dtype(), "fp32, bf16, int32, int64");
    }
  }

  // Bytes from root to everyone; any dtype (FP8 included).
  void broadcast(const Tensor& t, int root) override {
    check_host_tensor("broadcast", "tensor", t);
    DAEDALUS_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank of this communicator (size {})", root,
                   size_);
    const int bytes = checked_count("broadcast", "byte count", static_cast<int64_t>(t.nbytes()));
    DAEDALUS_MPI_CHECK(MPI_Bcast(t.data_ptr(), bytes, MPI_BYTE, root, comm_));
  }

  // out holds size() blocks of in.numel() elements, rank order; any shapes with those numels.
  void all_gather(const Tensor& in, const Tensor& out) override {
    check_gather_args(in, out);
    const int bytes = static_cast<int>(in.nbytes());
    DAEDALUS_MPI_CHECK(MPI_Allgather(in.data_ptr(), bytes, MPI_BYTE, out.data_ptr(), bytes, MPI_BYTE, comm_));
  }

  // in [size * n], out [n]: MPI_Ireduce_scatter_block in fp32, then MPI_Wait — the blocking call is
  // the started one waited for, so overlapped and blocking reductions add in the same order (Open
  // MPI's blocking and nonblocking collectives are different algorithms). bf16 as all_reduce does
  // it (widened, reduced in fp32, rounded to bf16 once).
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    start_reduce_scatter(in, out, op)->wait();
  }

  std::unique_ptr<Work> start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check_host_tensor("reduce_scatter", "in", in);
    check_host_tensor("reduce_scatter", "out", out);
    check_reduce_scatter("reduce_scatter", in, out, size_);
    const int count = checked_count("reduce_scatter", "block element count", out.numel());
    checked_count("reduce_scatter", "input element count", in.numel());
    switch (in.dtype()) {
      case DType::f32: {
        auto work = std::make_unique<MpiWork>(std::vector<Tensor>{in, out});
        DAEDALUS_MPI_CHECK(MPI_Ireduce_scatter_block(in.data_ptr(), out.data_ptr(), count, MPI_FLOAT, mpi_op(op), comm_,
                                                     work->request()));
        return work;
      }
      case DType::bf16: {
        const Tensor wide_in = in.to(DType::f32);
        const Tensor wide_out = Tensor::empty(out.shape(), DType::f32);
        auto work = std::make_unique<MpiWork>(std::vector<Tensor>{wide_in, wide_out, out},
                                              [wide_out, out] { Tensor(out).copy_(wide_out); });
        DAEDALUS_MPI_CHECK(MPI_Ireduce_scatter_block(wide_in.data_ptr(), wide_out.data_ptr(), count, MPI_FLOAT,
                                                     mpi_op(op), comm_, work->request()));
        return work;
      }
      default: throw_unsupported_dtype("reduce_scatter", in.dtype(), "fp32, bf16");
    }
  }

  std::unique_ptr<Work> start_all_gather(const Tensor& in, const Tensor& out) override {
    check_gather_args(in, out);
    const int bytes = static_cast<int>(in.nbytes());
    auto work = std::make_unique<MpiWork>(std::vector<Tensor>{in, out});
    DAEDALUS_MPI_CHECK(
        MPI_Iallgather(in.data_ptr(), bytes, MPI_BYTE, out.data_ptr(), bytes, MPI_BYTE, comm_, work->request()));
    return work;
  }

  // in [sum(send_counts), ...] and out [sum(recv_counts), ...] with the same row shape and dtype.
  // Counts are rows; MPI sees bytes (rows x row bytes) with displacements as prefix sums. The
  // counts must agree across ranks (send_counts[r] here == recv_counts[me] on rank r): MPI cannot
  // check that, so callers exchange counts first (as dispatch does).
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                    const std::vector<int64_t>& recv_counts) override {
    constexpr std::string_view op = "all_to_all_v";
    check_host_tensor(op, "in", in);
    check_host_tensor(op, "out", out);
    const int64_t row_bytes = check_all_to_all_v(op, in, send_counts, out, recv_counts, rank_, size_);
    const std::vector<int> send_bytes = byte_counts("send_counts", send_counts, row_bytes);
    const std::vector<int> recv_bytes = byte_counts("recv_counts", recv_counts, row_bytes);
    const std::vector<int> send_displs = displacements("send", send_bytes);
    const std::vector<int> recv_displs = displacements("recv", recv_bytes);
    DAEDALUS_MPI_CHECK(MPI_Alltoallv(in.data_ptr(), send_bytes.data(), send_displs.data(), MPI_BYTE, out.data_ptr(),
                                     recv_bytes.data(), recv_displs.data(), MPI_BYTE, comm_));
  }

  void barrier() override { DAEDALUS_MPI_CHECK(MPI_Barrier(comm_)); }

  // Isend / Irecv of raw bytes, all posted, then one MPI_Waitall. One tag for every message, so
  // messages between two ranks match in the order they were posted (MPI's non-overtaking rule).
  void exchange(const std::vector<PeerTransfer>& transfers) override {
    constexpr std::string_view op = "exchange";
    check_exchange(op, transfers, rank_, size_);
    std::vector<MPI_Request> requests(transfers.size(), MPI_REQUEST_NULL);
    for (size_t i = 0; i < transfers.size(); ++i) {
      const PeerTransfer& t = transfers[i];
      check_host_tensor(op, fmt::format("transfer {}", i), t.tensor);
      const int bytes = checked_count(op, "byte count", int64_t(t.tensor.nbytes()));
      if (t.kind == PeerTransfer::Kind::send) {
        DAEDALUS_MPI_CHECK(MPI_Isend(t.tensor.data_ptr(), bytes, MPI_BYTE, t.peer, kTag, comm_, &requests[i]));
      } else {
        DAEDALUS_MPI_CHECK(MPI_Irecv(t.tensor.data_ptr(), bytes, MPI_BYTE, t.peer, kTag, comm_, &requests[i]));
      }
    }
    std::vector<MPI_Status> statuses(transfers.size());
    const int status = MPI_Waitall(int(requests.size()), requests.data(), statuses.data());
    // A longer message than the buffer fails the wait (MPI_ERR_TRUNCATE); a shorter one succeeds
    // and is caught here.
    DAEDALUS_MPI_CHECK(status);
    for (size_t i = 0; i < transfers.size(); ++i) {
      if (transfers[i].kind != PeerTransfer::Kind::recv) continue;
      int received = 0;
      DAEDALUS_MPI_CHECK(MPI_Get_count(&statuses[i], MPI_BYTE, &received));
      if (int64_t(received) != int64_t(transfers[i].tensor.nbytes()))
        throw Error(fmt::format("exchange: received {} bytes from rank {} for {} ({} bytes)", received,
                                transfers[i].peer, transfers[i].tensor.describe(), transfers[i].tensor.nbytes()));
    }
  }

  std::shared_ptr<Communicator> split(int color, int key) const override {
    DAEDALUS_CHECK(color >= 0, "split: color {} must be non-negative", color);
    MPI_Comm sub = MPI_COMM_NULL;
    DAEDALUS_MPI_CHECK(MPI_Comm_split(comm_, color, key, &sub));
    return std::make_shared<MpiCommunicator>(sub);
  }

 private:
  void check_gather_args(const Tensor& in, const Tensor& out) const {
    check_host_tensor("all_gather", "in", in);
    check_host_tensor("all_gather", "out", out);
    check_all_gather("all_gather", in, out, size_);
    checked_count("all_gather", "byte count", static_cast<int64_t>(in.nbytes()));
    checked_count("all_gather", "output byte count", static_cast<int64_t>(out.nbytes()));
  }

  // Row counts (checked by check_all_to_all_v) -> byte counts that fit MPI's int.
  static std::vector<int> byte_counts(std::string_view name, const std::vector<int64_t>& rows, int64_t row_bytes) {
    std::vector<int> bytes(rows.size());
    for (size_t r = 0; r < rows.size(); ++r)
      bytes[r] = checked_count("all_to_all_v", fmt::format("{}[{}] in bytes", name, r), rows[r] * row_bytes);
    return bytes;
  }
  static std::vector<int> displacements(std::string_view name, const std::vector<int>& bytes) {
    std::vector<int> displs(bytes.size());
    int64_t offset = 0;
    for (size_t r = 0; r < bytes.size(); ++r) {
      displs[r] = checked_count("all_to_all_v", fmt::format("{} displacement of rank {} in bytes", name, r), offset);
      offset += bytes[r];
    }
    return displs;
  }

  static constexpr int kTag = 7;  // exchange's messages (collectives do not use tags)

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

void finalize_mpi_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

std::shared_ptr<Communicator> mpi_world() {
  static std::mutex mutex;
  static std::shared_ptr<Communicator> world;  // one duplicate of MPI_COMM_WORLD per process
  std::lock_guard lock(mutex);
  if (world) return world;
  int initialized = 0;
  DAEDALUS_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    DAEDALUS_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    std::atexit(finalize_mpi_at_exit);  // only when we initialized: otherwise the owner finalizes
    if (provided < MPI_THREAD_FUNNELED)
      throw Error(fmt::format("mpi_world: MPI provides thread level {} but Daedalus needs MPI_THREAD_FUNNELED ({})",
                              provided, MPI_THREAD_FUNNELED));
  }
  MPI_Comm dup = MPI_COMM_NULL;
  DAEDALUS_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
  world = std::make_shared<MpiCommunicator>(dup);
  return world;
}

int node_local_rank(const Communicator& mpi) {
  const auto* comm = dynamic_cast<const MpiCommunicator*>(&mpi);
  DAEDALUS_CHECK(comm != nullptr, "node_local_rank: needs an MPI communicator, got a {} one", mpi.backend());
  MPI_Comm node = MPI_COMM_NULL;
  DAEDALUS_MPI_CHECK(MPI_Comm_split_type(comm->comm(), MPI_COMM_TYPE_SHARED, comm->rank(), MPI_INFO_NULL, &node));
  int local = 0;
  const int status = MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  DAEDALUS_MPI_CHECK(status);
  return local;
}

#endif  // DAEDALUS_MINIMAL

}  // namespace daedalus::parallel
