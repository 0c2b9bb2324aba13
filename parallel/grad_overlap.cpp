// Gradient buckets reduce-scattered while backward runs (see grad_overlap.h).
#include "parallel/grad_overlap.h"

#include <algorithm>
#include <limits>

#include "autograd/check.h"
#include "autograd/nvtx.h"

namespace daedalus::parallel {

namespace {
constexpr size_t kHeld = std::numeric_limits<size_t>::max();  // a bucket that waits for finish()
}  // namespace

struct OverlappedGradSync::State {
  std::vector<std::vector<size_t>> members;  // per bucket: the params with elements in it
  std::vector<size_t> final_at;              // per bucket: final once nodes [final_at, size) ran; kHeld
  std::vector<std::unique_ptr<BucketReduceScatter>> started;  // per bucket, from its start to its finish
  std::vector<size_t> in_flight;  // started, not finished, in start order (what node_done tests)
  size_t next = 0;  // buckets started so far (they start last first: bucket size - 1 - k is the k-th)
  GradSyncStats stats;
};

OverlappedGradSync::OverlappedGradSync(std::vector<OverlapGroup> groups) : groups_(std::move(groups)) {
  for (const OverlapGroup& g : groups_) {
    DAEDALUS_CHECK(g.comm != nullptr && g.layout != nullptr,
                   "OverlappedGradSync: a group without communicator or layout");
    DAEDALUS_CHECK(g.layout->numels.size() == g.params.size() && g.layout->ranks == g.comm->size(),
                   "OverlappedGradSync: a layout of {} tensors over {} ranks for {} params over {} ranks",
                   g.layout->numels.size(), g.layout->ranks, g.params.size(), g.comm->size());
    DAEDALUS_CHECK(g.held.empty() || g.held.size() == g.params.size(),
                   "OverlappedGradSync: {} held flags for {} params", g.held.size(), g.params.size());
    auto state = std::make_unique<State>();
    const size_t buckets = g.layout->buckets.size();
    state->members.resize(buckets);
    state->final_at.assign(buckets, 0);  // without begin(): final only after the whole backward
    state->started.resize(buckets);
    int64_t start = 0;
    for (size_t i = 0; i < g.params.size(); ++i) {
      DAEDALUS_CHECK(g.params[i].value().numel() == g.layout->numels[i],
                     "OverlappedGradSync: param {} has {} elements, the layout {}", i, g.params[i].value().numel(),
                     g.layout->numels[i]);
      const int64_t end = start + g.layout->numels[i];
      for (size_t b = 0; b < buckets; ++b) {
        const ShardLayout::Bucket& bucket = g.layout->buckets[b];
        if (start < bucket.begin + bucket.size && bucket.begin < end) state->members[b].push_back(i);
      }
      start = end;
    }
    states_.push_back(std::move(state));
  }
}

OverlappedGradSync::~OverlappedGradSync() = default;

int64_t OverlappedGradSync::buckets() const {
  int64_t n = 0;
  for (const OverlapGroup& g : groups_) n += int64_t(g.layout->buckets.size());
  return n;
}

void OverlappedGradSync::begin(const Tape& tape) {
  observing_ = true;
  for (size_t g = 0; g < groups_.size(); ++g) {
    State& s = *states_[g];
    for (size_t b = 0; b < s.members.size(); ++b) {
      size_t at = tape.size();  // no use at all: final before any node runs
      for (size_t i : s.members[b]) {
        if (!groups_[g].held.empty() && groups_[g].held[i]) {
          at = kHeld;
          break;
        }
        at = std::min(at, tape.first_use(groups_[g].params[i].slot().get()));
      }
      s.final_at[b] = at;
    }
    start_ready(g, tape.size());
  }
}

void OverlappedGradSync::node_done(size_t index) {
  for (size_t g = 0; g < groups_.size(); ++g) {
    start_ready(g, index);
    // Progress (MPI moves started collectives only inside MPI calls: Work::test), and a bucket
    // that is complete is finished at once, which releases its buffers: without that every
    // bucket's copy of the gradients could be alive at the end of backward.
    State& s = *states_[g];
    std::erase_if(s.in_flight, [&](size_t b) {
      if (!s.started[b]->test()) return false;
      finish_bucket(g, b);
      return true;
    });
  }
}

void OverlappedGradSync::finish_bucket(size_t group, size_t bucket) {
  State& s = *states_[group];
  std::vector<Tensor> grads;  // the bucket's are defined since its start; it touches no other
  for (const Var& p : groups_[group].params) grads.push_back(p.grad());
  s.started[bucket]->finish(grads);
  ++s.stats.calls;
  s.stats.bytes += s.started[bucket]->bytes();
  s.started[bucket].reset();
}

void OverlappedGradSync::end() { observing_ = false; }

void OverlappedGradSync::start_ready(size_t group, size_t position) {
  State& s = *states_[group];
  const size_t buckets = s.members.size();
  while (s.next < buckets) {
    const size_t b = buckets - 1 - s.next;
    if (s.final_at[b] == kHeld || position > s.final_at[b]) return;  // a later bucket must start first
    start_bucket(group);
    if (observing_) ++started_in_backward_;
  }
}

void OverlappedGradSync::start_bucket(size_t group) {
  State& s = *states_[group];
  const OverlapGroup& g = groups_[group];
  const size_t b = s.members.size() - 1 - s.next;
  const nvtx::Range range("grad_sync.start_bucket");
  std::vector<Tensor> grads(g.params.size());
  for (size_t i : s.members[b]) {
    const Var& p = g.params[i];
    if (!p.grad().defined())  // no gradient reached it this step: zeros, as the blocking path does
      p.slot()->accumulate("grad sync", Tensor::zeros(p.shape(), DType::f32, p.value().device()));
    grads[i] = p.grad();
  }
  s.started[b] = std::make_unique<BucketReduceScatter>(*g.comm, grads, *g.layout, b);
  s.in_flight.push_back(b);
  ++s.next;
}

std::vector<GradSyncStats> OverlappedGradSync::finish() {
  const nvtx::Range range("grad_sync.finish");
  std::vector<GradSyncStats> stats(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    State& s = *states_[g];
    while (s.next < s.members.size()) start_bucket(g);
    for (size_t b : s.in_flight) finish_bucket(g, b);  // in start order: the first started is done first
    s.in_flight.clear();
    stats[g] = s.stats;
  }
  return stats;
}

}  // namespace daedalus::parallel
