// Bucketed gradient all-reduce (see grad_sync.h).
#include "parallel/grad_sync.h"

#include <algorithm>

#include "autograd/check.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/nvtx.h"

namespace daedalus::parallel {

namespace {

// One segment of the concatenated gradients: grads[index] elements [begin, end).
struct Segment {
  size_t index;
  int64_t begin;
  int64_t end;
};

}  // namespace

GradSyncStats all_reduce_gradients(Communicator& comm, const std::vector<Tensor>& grads, int64_t bucket_bytes) {
  constexpr int64_t elem = sizeof(float);
  DAEDALUS_CHECK(bucket_bytes >= elem, "all_reduce_gradients: bucket_bytes {} is smaller than one fp32 element",
                 bucket_bytes);
  GradSyncStats stats;
  if (grads.empty()) return stats;
  const nvtx::Range range("grad_sync.all_reduce");
  const Device device = grads[0].defined() ? grads[0].device() : Device::cpu();
  int64_t total = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    const Tensor& g = grads[i];
    DAEDALUS_CHECK(g.defined(), "all_reduce_gradients: gradient {} is undefined", i);
    DAEDALUS_CHECK(g.dtype() == DType::f32 && g.is_contiguous() && g.device() == device,
                   "all_reduce_gradients: gradient {} is {}; expected contiguous fp32 on {}", i, g.describe(),
                   device.str());
    total += g.numel();
  }
  const int64_t bucket_elems = bucket_bytes / elem;
  const Tensor buffer = Tensor::empty({std::min(bucket_elems, total)}, DType::f32, device);
  const Tensor world_size = Tensor::full({1}, double(comm.size()), DType::f32, device);

  size_t index = 0;      // current gradient
  int64_t consumed = 0;  // elements of grads[index] already bucketed
  while (index < grads.size()) {
    // Fill one bucket with the next elements in list order.
    std::vector<Segment> segments;
    int64_t filled = 0;
    while (index < grads.size() && filled < bucket_elems) {
      const int64_t take = std::min(grads[index].numel() - consumed, bucket_elems - filled);
      if (take > 0) {
        segments.push_back({index, consumed, consumed + take});
        Tensor src = grads[index].view({-1}).slice(0, consumed, consumed + take);
        buffer.slice(0, filled, filled + take).copy_(src);
        filled += take;
        consumed += take;
      }
      if (consumed == grads[index].numel()) {
        ++index;
        consumed = 0;
      }
    }
    if (filled == 0) break;
    const Tensor bucket = buffer.slice(0, 0, filled);
    comm.all_reduce(bucket, ReduceOp::sum);
    ++stats.calls;
    stats.bytes += filled * elem;
    // Average: an fp32 division by the size (the same bits on the host and, by the division
    // kernel, on a device).
    Tensor averaged = bucket;
    if (device.is_cpu()) {
      float* p = bucket.data<float>();
      const float n = static_cast<float>(comm.size());
      for (int64_t i = 0; i < filled; ++i) p[i] /= n;
    } else {
      averaged = kernels::div(bucket, world_size);
    }
    int64_t offset = 0;
    for (const Segment& s : segments) {
      const int64_t len = s.end - s.begin;
      grads[s.index].view({-1}).slice(0, s.begin, s.end).copy_(averaged.slice(0, offset, offset + len));
      offset += len;
    }
  }
  return stats;
}

}  // namespace daedalus::parallel
