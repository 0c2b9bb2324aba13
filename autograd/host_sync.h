// Host syncs: every point where the host thread waits for a device (a device-to-host copy, a
// stream, event or device synchronization, a NCCL wait polled on the host, cudaFree's implicit
// device synchronization). The CUDA runtime layer (autograd/cuda/runtime.cu, device_checks.cu) and
// the NCCL communicator call count_host_sync() at each of them; a CPU build never does, so its
// count stays 0.
//
// The count is one relaxed atomic add per sync: always on. With DAEDALUS_HOST_SYNC_LOG=1 in the
// environment (read once; set_host_sync_log() for tests) each sync is also filed under where it
// came from: the thread's stack of nvtx::Range names (autograd/nvtx.h: "train_step/backward/
// model.layers.3.mlp") and the runtime call ("copy_bytes device-to-host"), so a profile of one step
// names what still makes the host wait. Both are process-wide (all threads, all devices).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace daedalus {

// `site` names the runtime call that waited ("copy_bytes device-to-host", "nccl all_reduce").
void count_host_sync(std::string_view site) noexcept;
int64_t host_sync_count();  // since the process started or the last reset_host_syncs()
void reset_host_syncs();    // the count and the per-site breakdown

bool host_sync_log_enabled();  // DAEDALUS_HOST_SYNC_LOG=1 (or set_host_sync_log(true))
void set_host_sync_log(bool on);

// nvtx::Range's hooks: the range names that label a sync while logging is on.
void push_host_sync_context(const char* name);
void pop_host_sync_context();

struct HostSyncSite {
  std::string where;  // "<range>/<range>: <site>", or "<site>" outside every range
  int64_t count = 0;
};
// The breakdown since the last reset, most frequent first (ties by name); empty unless logging.
std::vector<HostSyncSite> host_sync_sites();

// A table for `steps` steps (> 0): one line per site with its count and count per step, under a
// header with the total. For example (steps = 2):
//   host syncs: 6 in 2 step(s), 3.0 per step
//     count  per step  where
//         4       2.0  train_step/forward: copy_bytes device-to-host
//         2       1.0  synchronize
std::string format_host_sync_sites(const std::vector<HostSyncSite>& sites, int64_t steps);

}  // namespace daedalus
