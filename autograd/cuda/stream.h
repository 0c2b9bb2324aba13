// The compute stream of each CUDA device: one per device (one per rank), and everything Daedalus
// queues on a device goes on it — every kernel, cuBLASLt matmul, cub sort, copy and NCCL collective
// — so stream order is program order, and the caching allocator (which knows no streams) may hand a
// freed block to the next operation at once: that operation runs after every earlier user.
//
// The stream is created blocking (cudaStreamDefault, not cudaStreamNonBlocking): it still orders
// with the legacy default stream, so anything a library or a test queues there without a stream
// cannot race with Daedalus's work. Only the started collectives of gradient reduction run
// elsewhere: on the device's communication stream, below.
#pragma once

#include <cuda_runtime.h>

namespace daedalus::cuda {

// The compute stream of CUDA device `index`, created on first use (thread-safe) and kept for the
// process (never destroyed: the CUDA context may be gone during static destruction). Launchers
// call it after cudaSetDevice(index): a kernel may only be launched on a stream of the current device.
cudaStream_t compute_stream(int index);

// The communication stream of CUDA device `index` (created on first use, kept for the process):
// the started collectives (Communicator::start_reduce_scatter / start_all_gather over NCCL) run
// here, so they overlap the kernels of the compute stream. Created non-blocking
// (cudaStreamNonBlocking): it orders with nothing but the events it is told to wait for. The rule
// between the two streams (parallel/nccl_communicator.cpp): a collective first waits for an event
// recorded on the compute stream after the work that wrote its input, and the compute stream
// waits for an event recorded after the collective before anything reads its output; the
// collective's tensors are held until that second wait has been queued, so the caching allocator
// (which knows no streams) can only hand their blocks to compute work ordered after the collective.
cudaStream_t comm_stream(int index);

}  // namespace daedalus::cuda
