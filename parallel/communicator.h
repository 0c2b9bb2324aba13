// Communicators: the collective operations expert and data parallelism need, over MPI (host
// buffers; CPU clusters and CI) or NCCL (device buffers), behind one interface.
//
// Process layout (world = expert_parallel × replicas): rank r sits in EP group r / ep_size
// (the ranks that together hold one copy of every routed expert: ep_rank = r % ep_size) and in
// replica group r % ep_size (the ranks holding the same expert slice: replica = r / ep_size).
// Dense gradients are all-reduced over the world, expert gradients over the replica group (or,
// with ZeRO-1, reduce-scattered over them, and the updated weights all-gathered: grad_sync.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/tensor.h"

namespace daedalus::parallel {

enum class ReduceOp : uint8_t { sum, max };

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
  // Rows of `in` [sum(send_counts), D] go to ranks in order (send_counts[r] rows to rank r); `out`
  // [sum(recv_counts), D] receives recv_counts[r] rows from rank r, in rank order.
  virtual void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                            const std::vector<int64_t>& recv_counts) = 0;
  virtual void barrier() = 0;
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

struct ProcessGroups {
  std::shared_ptr<Communicator> world;     // all ranks: dense gradients, config check, metrics
  std::shared_ptr<Communicator> ep;        // this rank's EP group: token dispatch / combine
  std::shared_ptr<Communicator> replicas;  // ranks with the same expert slice: expert gradients
  int ep_size = 1;
  int ep_rank = 0;                // which slice of the routed experts this rank owns
  Device device = Device::cpu();  // where this rank's tensors live (a GPU run: its NCCL world's GPU)
};
// InputError when world size is not divisible by ep_size (naming both).
ProcessGroups make_process_groups(std::shared_ptr<Communicator> world, int ep_size);

}  // namespace daedalus::parallel
