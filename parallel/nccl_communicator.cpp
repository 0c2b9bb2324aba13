// The NCCL backend of Communicator: device buffers (CUDA tensors) only.
//
// Bootstrap: rank 0 of an MPI communicator creates the ncclUniqueId and broadcasts its 128 bytes;
// every rank then joins with ncclCommInitRankConfig on the GPU of its node-local rank.
//
// Failure handling (the ProcessGroupNCCL watchdog idea, done inline): communicators are created
// non-blocking (config.blocking = 0), so no NCCL call can block the host. Every operation is
// enqueued on the device's stream and then waited for by polling: the stream's completion,
// ncclCommGetAsyncError (a peer's failure or a network error reported by NCCL's proxy thread), and
// a deadline of timeout_s. An error or an expired deadline calls ncclCommAbort (which also frees
// the GPU from kernels stuck waiting on a dead peer) and throws, naming the operation; the
// communicator refuses every later call. The trainer turns the exception into exit code 2.
//
// The stream is the device's compute stream (autograd/cuda/stream.h), where Daedalus's kernels run:
// one stream per rank, so a collective starts after the kernels that produced its input and the
// kernels queued after it see its output, by stream order alone; the caching allocator may reuse a
// buffer freed during a collective for later work on the same stream. Waiting for the stream also
// waits for the kernels queued before the collective, so timeout_s covers them too (as it did when
// NCCL had a stream of its own that waited for the legacy default stream).
//
// The started collectives (start_reduce_scatter, start_all_gather: gradient buckets reduced while
// backward runs) are the exception: they run on the device's communication stream, ordered with
// the compute stream by two events, and are not waited for on the host (NcclWork below).
#include <algorithm>
#include <chrono>
#include <thread>

#include "autograd/check.h"
#include "autograd/host_sync.h"
#include "parallel/communicator.h"

#if DAEDALUS_WITH_CUDA
#include <cuda_runtime.h>
#include <nccl.h>

#include "autograd/cuda/stream.h"
#endif

namespace daedalus::parallel {

#if !DAEDALUS_WITH_CUDA

std::shared_ptr<Communicator> nccl_world(const std::shared_ptr<Communicator>&, double) {
  throw Error("nccl_world: Daedalus was built without CUDA, so there is no NCCL backend; use parallel.backend: mpi");
}
std::vector<std::shared_ptr<Communicator>> nccl_local_group(int, double) {
  throw Error("nccl_local_group: Daedalus was built without CUDA, so there is no NCCL backend");
}

#else

namespace {

using Clock = std::chrono::steady_clock;

void check_device_tensor(std::string_view op, std::string_view name, const Tensor& t, int device) {
  DAEDALUS_CHECK(t.defined(), "nccl {}: {} is an undefined tensor", op, name);
  DAEDALUS_CHECK(t.device() == Device::cuda(device),
                 "nccl {}: {} is {}, but this NCCL communicator moves tensors on cuda:{} (use the MPI backend for "
                 "host tensors)",
                 op, name, t.describe(), device);
  DAEDALUS_CHECK(t.is_contiguous(), "nccl {}: {} ({}) must be contiguous", op, name, t.describe());
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclMax; }

// An enqueue (collective, ncclSend / ncclRecv, ncclGroupEnd) on a non-blocking communicator may
// return ncclInProgress: NCCL is still launching it (e.g. while it connects peers lazily on first use).
// That is not an error: run() then polls ncclCommGetAsyncError (wait_ready) until it is launched.
// Any other status but ncclSuccess is.
#define DAEDALUS_NCCL_ENQUEUE(stmt)                                                    \
  do {                                                                                 \
    const ncclResult_t daedalus_enqueued_ = (stmt);                                    \
    if (daedalus_enqueued_ != ncclInProgress) DAEDALUS_NCCL_CHECK(daedalus_enqueued_); \
  } while (0)

ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

class NcclCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm`, already created (possibly still initializing) on `device`.
  NcclCommunicator(ncclComm_t comm, int device, double timeout_s)
      : comm_(comm), device_(device), timeout_s_(timeout_s) {
    DAEDALUS_CUDA_CHECK(cudaSetDevice(device_));
    stream_ = cuda::compute_stream(device_);  // shared with the device's kernels, not owned
    wait_ready("init");
    DAEDALUS_NCCL_CHECK(ncclCommCount(comm_, &size_));
    DAEDALUS_NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  }
  ~NcclCommunicator() override {
    // Best effort at exit: a healthy communicator is finalized (flushing its work, up to 5 s) and
    // destroyed, otherwise aborted; an aborted one is already gone. Nothing here can be reported.
    cudaSetDevice(device_);
    if (!aborted_) {
      ncclResult_t state = ncclCommFinalize(comm_);
      const auto deadline = Clock::now() + std::chrono::seconds(5);
      while (state == ncclInProgress && Clock::now() < deadline) {
        std::this_thread::yield();
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
      }
      if (state == ncclSuccess)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
    }
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  // fp32, int32, int64 natively. bf16 is widened to fp32, reduced and rounded back once, as the
  // MPI backend does: both give the bf16 rounding of the fp32 reduction.
  void all_reduce(const Tensor& t, ReduceOp op) override {
    check_device_tensor("all_reduce", "tensor", t, device_);
    if (t.dtype() == DType::bf16) {
      Tensor wide = t.to(DType::f32);
      all_reduce(wide, op);
      Tensor(t).copy_(wide);
      return;
    }
    ncclDataType_t type = ncclFloat32;
    switch (t.dtype()) {
      case DType::f32: type = ncclFloat32; break;
      case DType::i32: type = ncclInt32; break;
      case DType::i64: type = ncclInt64; break;
      default: throw_unsupported_dtype("nccl all_reduce", t.dtype(), "fp32, bf16, int32, int64");
    }
    run("all_reduce", [&] {
      DAEDALUS_NCCL_ENQUEUE(
          ncclAllReduce(t.data_ptr(), t.data_ptr(), size_t(t.numel()), type, nccl_op(op), comm_, stream_));
    });
  }

  void broadcast(const Tensor& t, int root) override {
    check_device_tensor("broadcast", "tensor", t, device_);
    DAEDALUS_CHECK(root >= 0 && root < size_, "nccl broadcast: root {} is not a rank of this communicator (size {})",
                   root, size_);
    run("broadcast", [&] {
      DAEDALUS_NCCL_ENQUEUE(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.nbytes(), ncclUint8, root, comm_, stream_));
    });
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    check_device_tensor("all_gather", "in", in, device_);
    check_device_tensor("all_gather", "out", out, device_);
    check_all_gather("nccl all_gather", in, out, size_);
    run("all_gather", [&] {
      DAEDALUS_NCCL_ENQUEUE(ncclAllGather(in.data_ptr(), out.data_ptr(), in.nbytes(), ncclUint8, comm_, stream_));
    });
  }

  // in [size * n], out [n]: ncclReduceScatter in fp32; bf16 widened, reduced in fp32 and rounded back
  // once, as all_reduce does it.
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check_device_tensor("reduce_scatter", "in", in, device_);
    check_device_tensor("reduce_scatter", "out", out, device_);
    check_reduce_scatter("nccl reduce_scatter", in, out, size_);
    if (in.dtype() == DType::bf16) {
      const Tensor wide_in = in.to(DType::f32);
      Tensor wide_out = Tensor::empty(out.shape(), DType::f32, out.device());
      reduce_scatter(wide_in, wide_out, op);
      Tensor(out).copy_(wide_out);
      return;
    }
    if (in.dtype() != DType::f32) throw_unsupported_dtype("nccl reduce_scatter", in.dtype(), "fp32, bf16");
    run("reduce_scatter", [&] {
      DAEDALUS_NCCL_ENQUEUE(ncclReduceScatter(in.data_ptr(), out.data_ptr(), size_t(out.numel()), ncclFloat32,
                                              nccl_op(op), comm_, stream_));
    });
  }

  // Started on the device's communication stream (autograd/cuda/stream.h): see start(). fp32 only;
  // bf16 takes the blocking path (widened, reduced, rounded back) and comes back completed.
  std::unique_ptr<Work> start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check_device_tensor("reduce_scatter", "in", in, device_);
    check_device_tensor("reduce_scatter", "out", out, device_);
    check_reduce_scatter("nccl reduce_scatter", in, out, size_);
    if (in.dtype() != DType::f32) return Communicator::start_reduce_scatter(in, out, op);
    return start("reduce_scatter", {in, out}, [&](cudaStream_t s) {
      DAEDALUS_NCCL_ENQUEUE(
          ncclReduceScatter(in.data_ptr(), out.data_ptr(), size_t(out.numel()), ncclFloat32, nccl_op(op), comm_, s));
    });
  }

  std::unique_ptr<Work> start_all_gather(const Tensor& in, const Tensor& out) override {
    check_device_tensor("all_gather", "in", in, device_);
    check_device_tensor("all_gather", "out", out, device_);
    check_all_gather("nccl all_gather", in, out, size_);
    return start("all_gather", {in, out}, [&](cudaStream_t s) {
      DAEDALUS_NCCL_ENQUEUE(ncclAllGather(in.data_ptr(), out.data_ptr(), in.nbytes(), ncclUint8, comm_, s));
    });
  }

  // Grouped point-to-point: one ncclSend and one ncclRecv per peer with rows to move, inside one
  // ncclGroupStart/End so that NCCL schedules them together (the all-to-all-v NCCL documents).
  // This rank's own rows are a device-to-device copy on the same stream.
  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                    const std::vector<int64_t>& recv_counts) override {
    check_device_tensor("all_to_all_v", "in", in, device_);
    check_device_tensor("all_to_all_v", "out", out, device_);
    const size_t row_bytes =
        size_t(check_all_to_all_v("nccl all_to_all_v", in, send_counts, out, recv_counts, rank_, size_));
    const std::vector<size_t> send_offsets = offsets(send_counts, row_bytes);
    const std::vector<size_t> recv_offsets = offsets(recv_counts, row_bytes);
    auto* src = static_cast<const char*>(in.data_ptr());
    auto* dst = static_cast<char*>(out.data_ptr());
    run("all_to_all_v", [&] {
      DAEDALUS_NCCL_CHECK(ncclGroupStart());
      for (int r = 0; r < size_; ++r) {
        if (r == rank_) continue;
        const size_t sent = size_t(send_counts[size_t(r)]) * row_bytes;
        const size_t received = size_t(recv_counts[size_t(r)]) * row_bytes;
        if (sent > 0)
          DAEDALUS_NCCL_ENQUEUE(ncclSend(src + send_offsets[size_t(r)], sent, ncclUint8, r, comm_, stream_));
        if (received > 0)
          DAEDALUS_NCCL_ENQUEUE(ncclRecv(dst + recv_offsets[size_t(r)], received, ncclUint8, r, comm_, stream_));
      }
      DAEDALUS_NCCL_ENQUEUE(ncclGroupEnd());
      const size_t own = size_t(send_counts[size_t(rank_)]) * row_bytes;
      if (own > 0)
        DAEDALUS_CUDA_CHECK(cudaMemcpyAsync(dst + recv_offsets[size_t(rank_)], src + send_offsets[size_t(rank_)], own,
                                            cudaMemcpyDeviceToDevice, stream_));
    });
  }

  // ncclSend / ncclRecv of raw bytes inside one group: NCCL launches them together, so a send and
  // a receive between the same two ranks cannot deadlock; per peer pair they match in order.
  void exchange(const std::vector<PeerTransfer>& transfers) override {
    check_exchange("nccl exchange", transfers, rank_, size_);
    for (size_t i = 0; i < transfers.size(); ++i)
      check_device_tensor("exchange", fmt::format("transfer {}", i), transfers[i].tensor, device_);
    run("exchange", [&] {
      DAEDALUS_NCCL_CHECK(ncclGroupStart());
      for (const PeerTransfer& t : transfers) {
        if (t.kind == PeerTransfer::Kind::send) {
          DAEDALUS_NCCL_ENQUEUE(ncclSend(t.tensor.data_ptr(), t.tensor.nbytes(), ncclUint8, t.peer, comm_, stream_));
        } else {
          DAEDALUS_NCCL_ENQUEUE(ncclRecv(t.tensor.data_ptr(), t.tensor.nbytes(), ncclUint8, t.peer, comm_, stream_));
        }
      }
      DAEDALUS_NCCL_ENQUEUE(ncclGroupEnd());
    });
  }

  void barrier() override {
    if (!barrier_token_.defined()) barrier_token_ = Tensor::zeros({1}, DType::f32, Device::cuda(device_));
    all_reduce(barrier_token_, ReduceOp::sum);
  }

  std::shared_ptr<Communicator> split(int color, int key) const override {
    DAEDALUS_CHECK(color >= 0, "nccl split: color {} must be non-negative", color);
    DAEDALUS_CHECK(!aborted_, "nccl split: the communicator was aborted after an earlier failure");
    DAEDALUS_CUDA_CHECK(cudaSetDevice(device_));
    ncclConfig_t config = nonblocking_config();
    ncclComm_t sub = nullptr;
    const ncclResult_t status = ncclCommSplit(comm_, color, key, &sub, &config);
    if (status != ncclInProgress) DAEDALUS_NCCL_CHECK(status);
    return std::make_shared<NcclCommunicator>(sub, device_, timeout_s_);
  }

 private:
  // Byte offset of each rank's rows (counts checked by check_all_to_all_v).
  static std::vector<size_t> offsets(const std::vector<int64_t>& rows, size_t row_bytes) {
    std::vector<size_t> out(rows.size());
    size_t offset = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      out[r] = offset;
      offset += size_t(rows[r]) * row_bytes;
    }
    return out;
  }

  // A collective on the communication stream: `ready` (recorded on the compute stream after the
  // work that wrote the input) is waited for first; `done` is recorded after it, and wait() makes
  // the compute stream wait for `done` before the tensors are released. Neither side blocks the
  // host; a failure or hang of the collective surfaces at the next operation the host waits for
  // (run() below: NCCL's error state and parallel.timeout_s) or the trainer's watchdog.
  class NcclWork final : public Work {
   public:
    NcclWork(NcclCommunicator& owner, std::string_view op, std::vector<Tensor> buffers)
        : owner_(owner), op_(op), buffers_(std::move(buffers)) {
      DAEDALUS_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      const cudaError_t created = cudaEventCreateWithFlags(&done_, cudaEventDisableTiming);
      if (created != cudaSuccess) cudaEventDestroy(ready_);
      DAEDALUS_CUDA_CHECK(created);
    }
    ~NcclWork() override {
      // Not waited for (an exception unwound past it): the compute stream still waits, so the
      // blocks released below are reused only after the collective. Destroying a pending event is
      // allowed (its resources go once it completes).
      if (!waited_ && recorded_) {
        cudaSetDevice(owner_.device_);
        cudaStreamWaitEvent(owner_.stream_, done_, 0);
      }
      cudaEventDestroy(ready_);
      cudaEventDestroy(done_);
    }
    NcclWork(const NcclWork&) = delete;
    NcclWork& operator=(const NcclWork&) = delete;

    void wait() override {
      if (waited_) return;
      DAEDALUS_CUDA_CHECK(cudaSetDevice(owner_.device_));
      DAEDALUS_CUDA_CHECK(cudaStreamWaitEvent(owner_.stream_, done_, 0));
      waited_ = true;
      buffers_.clear();  // later compute work on these blocks is ordered after `done`
      owner_.check_async(op_);
    }
    bool test() override {
      if (waited_) return true;
      const cudaError_t state = cudaEventQuery(done_);
      if (state == cudaErrorNotReady) return false;
      DAEDALUS_CUDA_CHECK(state);
      return true;
    }

   private:
    friend class NcclCommunicator;
    NcclCommunicator& owner_;
    std::string op_;
    std::vector<Tensor> buffers_;
    cudaEvent_t ready_ = nullptr;
    cudaEvent_t done_ = nullptr;
    bool recorded_ = false;
    bool waited_ = false;
  };

  template <typename Enqueue>
  std::unique_ptr<Work> start(std::string_view op, std::vector<Tensor> buffers, Enqueue&& enqueue) {
    DAEDALUS_CHECK(!aborted_, "nccl {}: the communicator was aborted after an earlier failure", op);
    DAEDALUS_CUDA_CHECK(cudaSetDevice(device_));
    const cudaStream_t comm = cuda::comm_stream(device_);
    auto work = std::make_unique<NcclWork>(*this, op, std::move(buffers));
    DAEDALUS_CUDA_CHECK(cudaEventRecord(work->ready_, stream_));
    DAEDALUS_CUDA_CHECK(cudaStreamWaitEvent(comm, work->ready_, 0));
    try {
      enqueue(comm);
    } catch (...) {
      abort();
      throw;
    }
    wait_ready(op);  // launched (non-blocking communicators may still be connecting peers)
    DAEDALUS_CUDA_CHECK(cudaEventRecord(work->done_, comm));
    work->recorded_ = true;
    return work;
  }

  // Enqueue with `enqueue`, then wait for the stream, watching NCCL's error state and the deadline.
  template <typename Enqueue>
  void run(std::string_view op, Enqueue&& enqueue) {
    DAEDALUS_CHECK(!aborted_, "nccl {}: the communicator was aborted after an earlier failure", op);
    DAEDALUS_CUDA_CHECK(cudaSetDevice(device_));
    try {
      enqueue();
    } catch (...) {
      abort();
      throw;
    }
    wait_ready(op);  // the group or collective has been launched (non-blocking init/launch)
    // The host polls the stream until the operation is done: a host sync.
    if (host_sync_log_enabled())
      count_host_sync(fmt::format("nccl {}", op));
    else
      count_host_sync("nccl");
    const auto deadline = deadline_from_now();
    for (;;) {
      const cudaError_t done = cudaStreamQuery(stream_);
      if (done == cudaSuccess) break;
      if (done != cudaErrorNotReady) {
        abort();
        DAEDALUS_CUDA_CHECK(done);
      }
      check_async(op);
      if (Clock::now() > deadline) fail_timeout(op);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    check_async(op);
  }

  // Polls until the communicator leaves ncclInProgress (initialization, split, group launch).
  void wait_ready(std::string_view op) {
    const auto deadline = deadline_from_now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      DAEDALUS_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) fail_async(op, state);
      if (Clock::now() > deadline) fail_timeout(op);
      std::this_thread::yield();
    }
  }

  void check_async(std::string_view op) {
    ncclResult_t state = ncclSuccess;
    DAEDALUS_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
    if (state != ncclSuccess && state != ncclInProgress) fail_async(op, state);
  }

  Clock::time_point deadline_from_now() const {
    if (timeout_s_ <= 0) return Clock::time_point::max();
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  }

  [[noreturn]] void fail_async(std::string_view op, ncclResult_t state) {
    abort();
    throw Error(fmt::format("nccl {}: rank {} of {}: NCCL reported '{}' ({}); communicator aborted", op, rank_, size_,
                            ncclGetErrorString(state), ncclGetLastError(nullptr)));
  }

  [[noreturn]] void fail_timeout(std::string_view op) {
    abort();
    throw Error(
        fmt::format("nccl {}: rank {} of {}: not complete after {} s (parallel.timeout_s): a peer died, "
                    "hangs or never joined; communicator aborted",
                    op, rank_, size_, timeout_s_));
  }

  void abort() {
    if (aborted_) return;
    aborted_ = true;
    ncclCommAbort(comm_);
  }

  ncclComm_t comm_;
  int device_;
  double timeout_s_;
  cudaStream_t stream_ = nullptr;  // the device's compute stream
  int rank_ = 0;
  int size_ = 1;
  bool aborted_ = false;
  Tensor barrier_token_;
};

int require_devices(std::string_view op, int needed) {
  const int count = cuda_device_count();
  DAEDALUS_CHECK(count >= needed, "{}: needs {} CUDA device(s), {} visible", op, needed, count);
  return count;
}

}  // namespace

std::shared_ptr<Communicator> nccl_world(const std::shared_ptr<Communicator>& bootstrap, double timeout_s) {
  const int count = require_devices("nccl_world", 1);
  const int nranks = bootstrap ? bootstrap->size() : 1;
  const int rank = bootstrap ? bootstrap->rank() : 0;
  const int device = bootstrap ? node_local_rank(*bootstrap) % count : 0;
  // The id travels as 128 bytes in a host tensor over the bootstrap communicator.
  ncclUniqueId id{};
  if (rank == 0) DAEDALUS_NCCL_CHECK(ncclGetUniqueId(&id));
  if (bootstrap) {
    Tensor bytes = Tensor::empty({int64_t(sizeof(id))}, DType::f8e4m3);  // any 1-byte dtype: raw bytes
    std::copy_n(reinterpret_cast<const char*>(&id), sizeof(id), static_cast<char*>(bytes.data_ptr()));
    bootstrap->broadcast(bytes, 0);
    std::copy_n(static_cast<const char*>(bytes.data_ptr()), sizeof(id), reinterpret_cast<char*>(&id));
  }
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device));
  ncclConfig_t config = nonblocking_config();
  ncclComm_t comm = nullptr;
  const ncclResult_t status = ncclCommInitRankConfig(&comm, nranks, id, rank, &config);
  if (status != ncclInProgress) DAEDALUS_NCCL_CHECK(status);
  return std::make_shared<NcclCommunicator>(comm, device, timeout_s);
}

std::vector<std::shared_ptr<Communicator>> nccl_local_group(int n, double timeout_s) {
  DAEDALUS_CHECK(n >= 1, "nccl_local_group: n = {} must be positive", n);
  require_devices("nccl_local_group", n);
  std::vector<ncclComm_t> comms(static_cast<size_t>(n), nullptr);
  std::vector<int> devices(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) devices[size_t(i)] = i;
  DAEDALUS_NCCL_CHECK(ncclCommInitAll(comms.data(), n, devices.data()));  // blocking communicators
  std::vector<std::shared_ptr<Communicator>> out;
  for (int i = 0; i < n; ++i) out.push_back(std::make_shared<NcclCommunicator>(comms[size_t(i)], i, timeout_s));
  return out;
}

#endif  // DAEDALUS_WITH_CUDA

std::string resolve_backend(std::string_view configured, Device tensors) {
  if (configured == "auto") return tensors.is_cuda() ? "nccl" : "mpi";
  if (configured == "nccl") {
    DAEDALUS_CHECK(tensors.is_cuda(),
                   "parallel.backend: nccl moves CUDA tensors, but this run's tensors are on the {}; use mpi or "
                   "auto",
                   tensors.str());
    return "nccl";
  }
  if (configured == "mpi") {
    DAEDALUS_CHECK(!tensors.is_cuda(),
                   "parallel.backend: mpi moves host buffers, but this run's tensors are on {}; use nccl or auto",
                   tensors.str());
    return "mpi";
  }
  throw InputError(fmt::format("parallel.backend: '{}' is not one of auto, nccl, mpi", configured));
}

}  // namespace daedalus::parallel
