// The host-sync counter (autograd/host_sync.h): its API and breakdown table on any build, no sync
// at all on the CPU, and — only where a CUDA device is visible — the exact count of a known
// sequence of device operations.
#include <gtest/gtest.h>

#include "autograd/device.h"
#include "autograd/host_sync.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/nvtx.h"
#include "autograd/tensor.h"

namespace daedalus {
namespace {

// Restores the logging switch a test changed (the environment's DAEDALUS_HOST_SYNC_LOG).
struct LogSwitch {
  bool was = host_sync_log_enabled();
  explicit LogSwitch(bool on) { set_host_sync_log(on); }
  ~LogSwitch() {
    set_host_sync_log(was);
    reset_host_syncs();
  }
};

TEST(HostSync, CountsEveryCallAndResets) {
  const LogSwitch off(false);
  reset_host_syncs();
  EXPECT_EQ(host_sync_count(), 0);
  count_host_sync("a");
  count_host_sync("b");
  count_host_sync("a");
  EXPECT_EQ(host_sync_count(), 3);
  EXPECT_TRUE(host_sync_sites().empty()) << "the per-site breakdown is kept only while logging";
  reset_host_syncs();
  EXPECT_EQ(host_sync_count(), 0);
}

TEST(HostSync, BreakdownNamesTheRangesAndTheRuntimeCall) {
  const LogSwitch on(true);
  reset_host_syncs();
  {
    const nvtx::Range step("train_step");
    count_host_sync("synchronize");
    {
      const nvtx::Range moe(std::string("model.layers.1.mlp"));
      count_host_sync("copy_bytes device-to-host");
      count_host_sync("copy_bytes device-to-host");
    }
  }
  count_host_sync("cudaFree");  // outside every range: the call alone
  const std::vector<HostSyncSite> sites = host_sync_sites();
  ASSERT_EQ(sites.size(), 3u);
  // Most frequent first, ties in name order.
  EXPECT_EQ(sites[0].where, "train_step/model.layers.1.mlp: copy_bytes device-to-host");
  EXPECT_EQ(sites[0].count, 2);
  EXPECT_EQ(sites[1].where, "cudaFree");
  EXPECT_EQ(sites[2].where, "train_step: synchronize");
  EXPECT_EQ(host_sync_count(), 4);
  // Hand-computed table for 2 steps: 4 syncs = 2.0 per step; each line count / 2.
  EXPECT_EQ(format_host_sync_sites(sites, 2),
            "host syncs: 4 in 2 step(s), 2.0 per step\n"
            "   count  per step  where\n"
            "       2       1.0  train_step/model.layers.1.mlp: copy_bytes device-to-host\n"
            "       1       0.5  cudaFree\n"
            "       1       0.5  train_step: synchronize\n");
  EXPECT_THROW(format_host_sync_sites(sites, 0), Error);
}

TEST(HostSync, HostTensorsNeverSync) {
  const LogSwitch off(false);
  reset_host_syncs();
  const Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  const Tensor b = kernels::add(a, a).to(Device::cpu());
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{2, 4, 6}));
  EXPECT_EQ(b.slice(0, 1, 2).item(), 4.0);
  synchronize(Device::cpu());
  EXPECT_EQ(host_sync_count(), 0);
}

// A known sequence on a device: each host<->device copy and each synchronization is one wait;
// queued kernels and same-device copies are none.
TEST(HostSync, CountsAKnownSequenceOnADevice) {
  if (cuda_device_count() == 0) GTEST_SKIP() << (cuda_built() ? "no CUDA device visible" : "built without CUDA");
  const Device gpu = Device::cuda(0);
  const Tensor host = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {4});
  Tensor warm = host.to(gpu);  // the allocator's first blocks and the stream exist before counting
  synchronize(gpu);
  const LogSwitch on(true);
  reset_host_syncs();
  const Tensor x = host.to(gpu);        // 1: host-to-device (waits for the stream)
  const Tensor y = kernels::add(x, x);  // 0: a queued kernel
  Tensor z = Tensor::empty({4}, DType::f32, gpu);
  z.copy_(y);  // 0: a copy within the device
  EXPECT_EQ(host_sync_count(), 1);
  EXPECT_EQ(z.to_vector<float>(), (std::vector<float>{2, 4, 6, 8}));  // 2: device-to-host
  EXPECT_EQ(z.slice(0, 3, 4).item(), 8.0);                            // 3: device-to-host
  synchronize(gpu);                                                   // 4
  EXPECT_EQ(host_sync_count(), 4);
  const std::vector<HostSyncSite> sites = host_sync_sites();
  ASSERT_EQ(sites.size(), 3u);
  EXPECT_EQ(sites[0].where, "copy_bytes device-to-host");
  EXPECT_EQ(sites[0].count, 2);
  EXPECT_EQ(sites[1].where, "copy_bytes host-to-device");
  EXPECT_EQ(sites[2].where, "synchronize");
}

}  // namespace
}  // namespace daedalus
