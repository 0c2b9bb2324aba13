// Bucketed gradient all-reduce, and ZeRO-1's bucketed reduce-scatter and all-gather (see grad_sync.h).
#include "parallel/grad_sync.h"

#include <algorithm>
#include <optional>
#include <string_view>

#include "autograd/check.h"
#include "autograd/kernels/elementwise.h"
#include "autograd/nvtx.h"

namespace daedalus::parallel {

namespace {

// bucket /= n in place: an fp32 division by the size (the same bits on the host and, by the
// division kernel, on a device). Returns the tensor holding the result (bucket itself on the CPU).
Tensor average(const Tensor& bucket, int n) {
  if (bucket.device().is_cpu()) {
    float* p = bucket.data<float>();
    const float d = static_cast<float>(n);
    const int64_t count = bucket.numel();
    for (int64_t i = 0; i < count; ++i) p[i] /= d;
    return bucket;
  }
  return kernels::div(bucket, Tensor::full({1}, double(n), DType::f32, bucket.device()));
}

// Calls f(index, begin, end, at) for every piece of the concatenation's elements [lo, hi): tensor
// `index` elements [begin, end), at offset `at` from lo.
template <class F>
void for_each_piece(const std::vector<int64_t>& starts, const std::vector<int64_t>& numels, int64_t lo, int64_t hi,
                    F&& f) {
  // The last tensor starting at or before lo (a zero-size tensor there is followed by one that holds lo).
  size_t i = size_t(std::upper_bound(starts.begin(), starts.end(), lo) - starts.begin());
  i = i == 0 ? 0 : i - 1;
  for (; i < starts.size() && starts[i] < hi; ++i) {
    const int64_t b = std::max(lo, starts[i]), e = std::min(hi, starts[i] + numels[i]);
    if (b < e) f(i, b - starts[i], e - starts[i], b - lo);
  }
}

std::vector<int64_t> starts_of(const std::vector<int64_t>& numels) {
  std::vector<int64_t> starts(numels.size());
  int64_t at = 0;
  for (size_t i = 0; i < numels.size(); ++i) {
    starts[i] = at;
    at += numels[i];
  }
  return starts;
}

Tensor flat(const Tensor& t) { return t.view({-1}); }

// The checks both ZeRO collectives make on their tensors against the layout.
void check_sharded(std::string_view op, Communicator& comm, const std::vector<Tensor>& tensors,
                   const ShardLayout& layout, std::optional<DType> dtype) {
  DAEDALUS_CHECK(layout.ranks == comm.size(), "{}: the layout is for {} ranks, the communicator has {}", op,
                 layout.ranks, comm.size());
  DAEDALUS_CHECK(tensors.size() == layout.numels.size(), "{}: {} tensors for a layout of {}", op, tensors.size(),
                 layout.numels.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    DAEDALUS_CHECK(t.defined() && t.is_contiguous() && t.numel() == layout.numels[i] &&
                       t.dtype() == (dtype ? *dtype : tensors[0].dtype()) && t.device() == tensors[0].device(),
                   "{}: tensor {} is {}; expected a contiguous {} of {} elements on {}", op, i,
                   t.defined() ? t.describe() : std::string("undefined"),
                   dtype_name(dtype ? *dtype : tensors[0].dtype()), layout.numels[i], tensors[0].device().str());
  }
}

}  // namespace

ShardLayout::ShardLayout(std::vector<int64_t> sizes, int n, int64_t bucket_bytes) : ranks(n), numels(std::move(sizes)) {
  DAEDALUS_CHECK(ranks >= 1, "ShardLayout: {} ranks", ranks);
  const int64_t per_bucket = std::max<int64_t>(ranks, (bucket_bytes / int64_t(sizeof(float))) / ranks * ranks);
  int64_t total = 0;
  for (int64_t n_i : numels) {
    DAEDALUS_CHECK(n_i >= 0, "ShardLayout: a tensor of {} elements", n_i);
    total += n_i;
  }
  for (int64_t begin = 0; begin < total; begin += per_bucket) {
    const int64_t size = std::min(per_bucket, total - begin);
    buckets.push_back({begin, size, (size + ranks - 1) / ranks});
  }
}

std::vector<ElementRange> ShardLayout::owned(size_t index, int rank) const {
  DAEDALUS_CHECK(index < numels.size() && rank >= 0 && rank < ranks,
                 "ShardLayout::owned: tensor {} of {}, rank {} of {}", index, numels.size(), rank, ranks);
  const std::vector<int64_t> starts = starts_of(numels);
  std::vector<ElementRange> out;
  for (const Bucket& b : buckets) {
    const int64_t lo = b.begin + rank * b.shard, hi = std::min(b.begin + b.size, lo + b.shard);
    if (lo >= hi || hi <= starts[index] || lo >= starts[index] + numels[index]) continue;
    out.emplace_back(std::max(lo, starts[index]) - starts[index],
                     std::min(hi, starts[index] + numels[index]) - starts[index]);
  }
  return out;
}

int64_t ShardLayout::owned_elements(int rank) const {
  int64_t n = 0;
  for (const Bucket& b : buckets) n += std::max<int64_t>(0, std::min(b.size - rank * b.shard, b.shard));
  return n;
}

std::vector<int64_t> numels_of(const std::vector<Tensor>& tensors) {
  std::vector<int64_t> n;
  for (const Tensor& t : tensors) n.push_back(t.numel());
  return n;
}

BucketReduceScatter::BucketReduceScatter(Communicator& comm, const std::vector<Tensor>& grads,
                                         const ShardLayout& layout, size_t bucket)
    : comm_(comm), layout_(layout), bucket_(bucket) {
  DAEDALUS_CHECK(bucket < layout.buckets.size(), "BucketReduceScatter: bucket {} of {}", bucket, layout.buckets.size());
  const ShardLayout::Bucket& b = layout.buckets[bucket];
  const int n = comm.size();
  const std::vector<int64_t> starts = starts_of(layout.numels);
  Device device = Device::cpu();
  for_each_piece(starts, layout.numels, b.begin, b.begin + b.size,
                 [&](size_t i, int64_t, int64_t, int64_t) { device = grads[i].device(); });
  in_ = Tensor::empty({b.shard * n}, DType::f32, device);
  out_ = Tensor::empty({b.shard}, DType::f32, device);
  for_each_piece(starts, layout.numels, b.begin, b.begin + b.size, [&](size_t i, int64_t s, int64_t e, int64_t at) {
    in_.slice(0, at, at + (e - s)).copy_(flat(grads[i]).slice(0, s, e));
  });
  if (b.shard * n > b.size) in_.slice(0, b.size, b.shard * n).zero_();
  bytes_ = in_.numel() * int64_t(sizeof(float));
  work_ = comm.start_reduce_scatter(in_, out_, ReduceOp::sum);
}

BucketReduceScatter::~BucketReduceScatter() = default;

bool BucketReduceScatter::test() { return work_->test(); }

void BucketReduceScatter::finish(const std::vector<Tensor>& grads) {
  work_->wait();
  const ShardLayout::Bucket& b = layout_.buckets[bucket_];
  const int r = comm_.rank(), n = comm_.size();
  const Tensor mean = average(out_, n);
  const int64_t lo = b.begin + r * b.shard;
  for_each_piece(starts_of(layout_.numels), layout_.numels, lo, std::min(b.begin + b.size, lo + b.shard),
                 [&](size_t i, int64_t s, int64_t e, int64_t at) {
                   flat(grads[i]).slice(0, s, e).copy_(mean.slice(0, at, at + (e - s)));
                 });
  in_ = Tensor();
  out_ = Tensor();
}

GradSyncStats reduce_scatter_gradients(Communicator& comm, const std::vector<Tensor>& grads,
                                       const ShardLayout& layout) {
  check_sharded("reduce_scatter_gradients", comm, grads, layout, DType::f32);
  GradSyncStats stats;
  if (layout.buckets.empty()) return stats;
  const nvtx::Range range("grad_sync.reduce_scatter");
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    BucketReduceScatter bucket(comm, grads, layout, b);  // one bucket's buffers at a time
    bucket.finish(grads);
    ++stats.calls;
    stats.bytes += bucket.bytes();
  }
  return stats;
}

GradSyncStats all_gather_shards(Communicator& comm, const std::vector<Tensor>& tensors, const ShardLayout& layout) {
  check_sharded("all_gather_shards", comm, tensors, layout, std::nullopt);
  GradSyncStats stats;
  if (layout.buckets.empty()) return stats;
  const nvtx::Range range("grad_sync.all_gather");
  const Device device = tensors[0].device();
  const DType dtype = tensors[0].dtype();
  const std::vector<int64_t> starts = starts_of(layout.numels);
  const int r = comm.rank(), n = comm.size();
  const ShardLayout::Bucket& first = layout.buckets[0];
  const Tensor buffer = Tensor::empty({first.shard * n}, dtype, device);
  const Tensor shard = Tensor::empty({first.shard}, dtype, device);
  for (const ShardLayout::Bucket& b : layout.buckets) {
    const Tensor in = shard.slice(0, 0, b.shard), out = buffer.slice(0, 0, b.shard * n);
    const int64_t lo = b.begin + r * b.shard, hi = std::min(b.begin + b.size, lo + b.shard);
    for_each_piece(starts, layout.numels, lo, hi, [&](size_t i, int64_t s, int64_t e, int64_t at) {
      in.slice(0, at, at + (e - s)).copy_(flat(tensors[i]).slice(0, s, e));
    });
    if (hi - lo < b.shard) in.slice(0, std::max<int64_t>(0, hi - lo), b.shard).zero_();
    comm.all_gather(in, out);
    ++stats.calls;
    stats.bytes += in.nbytes();
    for_each_piece(starts, layout.numels, b.begin, b.begin + b.size, [&](size_t i, int64_t s, int64_t e, int64_t at) {
      flat(tensors[i]).slice(0, s, e).copy_(out.slice(0, at, at + (e - s)));
    });
  }
  return stats;
}

GradSyncStats all_reduce_gradients(Communicator& comm, const std::vector<Tensor>& grads, int64_t bucket_bytes) {
  DAEDALUS_CHECK(bucket_bytes >= int64_t(sizeof(float)),
                 "all_reduce_gradients: bucket_bytes {} is smaller than one fp32 element", bucket_bytes);
  for (size_t i = 0; i < grads.size(); ++i)
    DAEDALUS_CHECK(grads[i].defined(), "all_reduce_gradients: gradient {} is undefined", i);
  // The all-reduce as its two halves, so that ZeRO-1 (which stops after the first and all-gathers
  // the updated weights instead) adds every gradient in exactly the same order.
  const ShardLayout layout(numels_of(grads), comm.size(), bucket_bytes);
  GradSyncStats stats = reduce_scatter_gradients(comm, grads, layout);
  const GradSyncStats gathered = all_gather_shards(comm, grads, layout);
  stats.calls += gathered.calls;
  stats.bytes += gathered.bytes;
  return stats;
}

}  // namespace daedalus::parallel
