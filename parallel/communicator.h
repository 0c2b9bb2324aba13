// Communicators: the collective and point-to-point operations that expert, data and pipeline
// parallelism need, over MPI (host buffers; CPU clusters and CI) or NCCL (device buffers), behind
// one interface.
//
// Process layout (world = pipeline_parallel × replicas × expert_parallel), pipeline stage outermost:
//   rank r = stage · S + replica · E + ep_rank,   S = world / P ranks per stage, E = ep_size
// The S ranks of one stage hold the same decoder layers and split every global batch between them
// (data parallel); inside a stage the expert layout is the one without pipelining: EP group
// (r mod S) / E holds one copy of every routed expert, ep_rank = r mod E its slice, and the replica
// group (same stage, same ep_rank) the ranks holding the same slice. The pipeline group of r is
// the P ranks with the same position r mod S in every stage: activations go to the next one,
// gradients to the previous one. Dense gradients are all-reduced over the stage, expert gradients
// over the replica group, weights shared by the first and last stage (tied or MTP embeddings)
// over the embedding group (those two ranks of the pipeline group).
// With ZeRO-1 the stage's gradients are reduce-scattered over the same groups instead, and the
// updated weights all-gathered (grad_sync.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/tensor.h"

namespace daedalus::parallel {

enum class ReduceOp : uint8_t { sum, max };

// One point-to-point message of Communicator::exchange: `tensor` (contiguous, any dtype: its bytes
// travel) goes to rank `peer` of the communicator, or is filled from it. The receiver allocates the
// tensor with the sender's byte count.
struct PeerTransfer {
  enum class Kind : uint8_t { send, recv };
  Kind kind;
  Tensor tensor;
  int peer;
};

// A collective started by Communicator::start_reduce_scatter / start_all_gather, running while the
// caller does other work. It holds the tensors it reads and writes until wait() has returned, so
// their memory cannot be handed to other work while the collective may still touch it.
//   MPI: a nonblocking collective on host buffers; wait() blocks until it is complete (MPI_Wait),
//        test() lets MPI progress it (MPI_Test: Open MPI moves nonblocking collectives forward only
//        inside MPI calls, so a caller that wants overlap calls test() now and then).
//   NCCL: the collective runs on the device's communication stream; wait() makes the compute
//        stream wait for it (an event), without blocking the host.
// A Work that is destroyed without wait() waits in its destructor (errors are then not reported).
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;  // true once complete (wait() then returns at once); never blocks
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi" or "nccl"

  // In place over all ranks of this communicator; t contiguous, fp32/bf16/int32/int64.
  virtual void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
  virtual void broadcast(const Tensor& t, int root) = 0;
  // out [size * n] = concatenation of every rank's in [n] (same dtype).
  virtual void all_gather(const Tensor& in, const Tensor& out) = 0;
  // in [size * n] on every rank; out [n] on rank r = block r of the element-wise reduction of every
  // rank's in (ZeRO-1's gradient reduce-scatter); fp32 or bf16 (widened, reduced in fp32, rounded once).
  virtual void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op = ReduceOp::sum) = 0;
  // The same two collectives, started and returned as a Work (same arguments and checks, which run
  // before anything starts). The result is the same bits as the blocking call's: MPI's blocking
  // reduce_scatter is start + wait itself, so that a reduction overlapped or not adds in the same
  // order. A backend without a nonblocking form runs the blocking call and returns it completed.
  virtual std::unique_ptr<Work> start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op = ReduceOp::sum);
  virtual std::unique_ptr<Work> start_all_gather(const Tensor& in, const Tensor& out);
  // Rows of `in` [sum(send_counts), D] go to ranks in order (send_counts[r] rows to rank r); `out`
  // [sum(recv_counts), D] receives recv_counts[r] rows from rank r, in rank order.
  virtual void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                            const std::vector<int64_t>& recv_counts) = 0;
  virtual void barrier() = 0;
  // Point-to-point: every transfer is started, then all complete before this returns, so sends and
  // receives between two ranks in one call cannot deadlock whatever their order. Messages from one
  // rank to another arrive in the order they were started. A received message of another byte
  // count than its tensor is an Error naming both.
  virtual void exchange(const std::vector<PeerTransfer>& transfers) = 0;
  void send(const Tensor& t, int peer) { exchange({PeerTransfer{PeerTransfer::Kind::send, t, peer}}); }
  void recv(const Tensor& t, int peer) { exchange({PeerTransfer{PeerTransfer::Kind::recv, t, peer}}); }
  // Collective over this communicator: a new one holding the ranks that passed the same `color`
  // (>= 0), ordered by `key`. Same backend as this one (MPI_Comm_split, ncclCommSplit).
  virtual std::shared_ptr<Communicator> split(int color, int key) const = 0;
};

// The argument checks every backend's all_to_all_v makes (InputError prefixed with `op`): in and
// out of one dtype with a row dimension and equal row shapes; send_counts and recv_counts one per
// rank (`size`), non-negative, summing to in's and out's rows; the rows this rank (`rank`) sends
// itself equal the rows it expects from itself. Checked before anything is launched, so a bad call
// leaves no transfer half-started. Returns the bytes of one row.
int64_t check_all_to_all_v(std::string_view op, const Tensor& in, const std::vector<int64_t>& send_counts,
                           const Tensor& out, const std::vector<int64_t>& recv_counts, int rank, int size);

// The argument checks of every backend's reduce_scatter (InputError prefixed with `op`): in and out
// of one dtype, in holding `size` blocks of out.numel() elements.
void check_reduce_scatter(std::string_view op, const Tensor& in, const Tensor& out, int size);
// The argument checks of every backend's all_gather (InputError prefixed with `op`): in and out of
// one dtype, out holding `size` blocks of in.numel() elements.
void check_all_gather(std::string_view op, const Tensor& in, const Tensor& out, int size);

// Collective over `comm`: the sum of every rank's `value`, added in double in rank order (the
// values travel as their 8 bytes through all_gather), so every rank gets the same bits and no fp32
// rounding enters (the squared gradient norms of clipping).
double sum_in_rank_order(Communicator& comm, double value);

// MPI: initializes MPI if nobody did (MPI_THREAD_FUNNELED) and finalizes it at exit; a single
// process without mpirun is a world of size 1.
std::shared_ptr<Communicator> mpi_world();
// This process's rank among the ranks of `mpi` on the same node (MPI_COMM_TYPE_SHARED): which
// GPU a rank drives. `mpi` must be an MPI communicator.
int node_local_rank(const Communicator& mpi);

// NCCL: device buffers (CUDA tensors) only. `bootstrap` is an MPI communicator over the same ranks:
// its rank 0 creates the ncclUniqueId and broadcasts it; null means a single process (a world of
// one, no MPI needed). Each rank drives GPU node_local_rank % visible devices (NCCL refuses two
// ranks of one communicator on one GPU). Every operation waits for completion while polling
// ncclCommGetAsyncError; an NCCL error, or an operation not finished within timeout_s (> 0; a peer
// died or hangs), aborts the communicator (ncclCommAbort) and throws, naming the operation.
// Built without CUDA, or with no device visible: Error saying so.
std::shared_ptr<Communicator> nccl_world(const std::shared_ptr<Communicator>& bootstrap, double timeout_s);
// n communicators in this process over devices 0..n-1 (ncclCommInitAll), rank i on device i: a
// multi-rank NCCL group without MPI, for tests on one multi-GPU machine (drive each from its own
// thread). Error when fewer than n devices are visible.
std::vector<std::shared_ptr<Communicator>> nccl_local_group(int n, double timeout_s);

// `inner` (a device communicator: NCCL on `device`) that also takes host tensors: each is copied
// to `device`, moved by `inner`, and copied back (the control values of a GPU run: losses, loads,
// stop flags, dispatch counts). Device tensors pass straight through; split() results stage too.
std::shared_ptr<Communicator> with_host_staging(std::shared_ptr<Communicator> inner, Device device);

// parallel.backend resolved for where the run's tensors live: "auto" -> "nccl" for CUDA tensors,
// "mpi" otherwise; "mpi" or "nccl" as given. InputError (naming parallel.backend) for "nccl" with
// CPU tensors, "mpi" with CUDA tensors (MPI here moves host buffers only), or any other value.
std::string resolve_backend(std::string_view configured, Device tensors);

// The argument checks of exchange (InputError prefixed with `op`): defined contiguous tensors,
// peers that are ranks of a communicator of `size` other than `rank`.
void check_exchange(std::string_view op, const std::vector<PeerTransfer>& transfers, int rank, int size);

struct ProcessGroups {
  std::shared_ptr<Communicator> world;      // all ranks: config check, stop flags, checkpoint files
  std::shared_ptr<Communicator> stage;      // this pipeline stage's ranks (the world when P = 1):
                                            // dense gradients, losses, router loads, data slices
  std::shared_ptr<Communicator> ep;         // this rank's EP group: token dispatch / combine
  std::shared_ptr<Communicator> replicas;   // ranks with the same expert slice: expert gradients
  std::shared_ptr<Communicator> pipeline;   // one rank per stage at this rank's position: p2p
  std::shared_ptr<Communicator> embedding;  // first and last rank of `pipeline` (P > 1; for any
                                            // other stage a group of its own, unused)
  int ep_size = 1;
  int ep_rank = 0;  // which slice of the routed experts this rank owns
  int pp_size = 1;
  int pp_stage = 0;               // which stage this rank runs (0 holds the embedding)
  Device device = Device::cpu();  // where this rank's tensors live (a GPU run: its NCCL world's GPU)
  bool first_stage() const { return pp_stage == 0; }
  bool last_stage() const { return pp_stage == pp_size - 1; }
};
// The layout above. InputError when the world size is not divisible by pp_size × ep_size
// (naming the three numbers).
ProcessGroups make_process_groups(std::shared_ptr<Communicator> world, int ep_size, int pp_size = 1);

}  // namespace daedalus::parallel
