// The compute stream of each CUDA device: one per device (one per rank), and everything Daedalus
// queues on a device goes on it — every kernel, cuBLASLt matmul, cub sort, copy and NCCL collective
// — so stream order is program order, and the caching allocator (which knows no streams) may hand a
// freed block to the next operation at once: that operation runs after every earlier user.
//
// The stream is created blocking (cudaStreamDefault, not cudaStreamNonBlocking): it still orders
// with the legacy default stream, so anything a library or a test queues there without a stream
// cannot race with Daedalus's work. Nothing overlaps yet: one stream runs one thing at a time.
#pragma once

#include <cuda_runtime.h>

namespace daedalus::cuda {

// The compute stream of CUDA device `index`, created on first use (thread-safe) and kept for the
// process (never destroyed: the CUDA context may be gone during static destruction). Launchers
// call it after cudaSetDevice(index): a kernel may only be launched on a stream of the current device.
cudaStream_t compute_stream(int index);

}  // namespace daedalus::cuda
