// Deferred input checks on a CUDA device: the per-device error record, the check kernels and the
// inspection at synchronization points (see autograd/cuda/device_checks.h).
#include "autograd/cuda/device_checks.h"

#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "autograd/check.h"
#include "autograd/cuda/stream.h"
#include "autograd/cuda/strided.cuh"
#include "autograd/host_sync.h"

namespace daedalus::cuda {

namespace {

// key = slot << kSlotShift | flat position; all ones: no violation recorded.
struct ErrorRecord {
  unsigned long long key;
  long long value;               // the offending element, valid when value_key == key
  unsigned long long value_key;  // the key `value` belongs to
};

constexpr unsigned long long kNoError = ~0ull;
constexpr int kSlotShift = 48;
constexpr unsigned long long kPositionMask = (1ull << kSlotShift) - 1;
static_assert(PendingDeviceChecks::kCapacity < (1u << (64 - kSlotShift)), "slots must fit above the position bits");

// The record's "nothing found" state, written at creation and after each reported error.
constexpr ErrorRecord kCleanRecord{kNoError, 0, kNoError};

// Every element v of values (any layout) with v outside [0, limit) (and v != ignore when
// has_ignore) lowers rec->key to slot_key | its flat position.
template <typename I>
__global__ void range_check_kernel(const I* values, Layout layout, int64_t n, int64_t limit, bool has_ignore,
                                   int64_t ignore, ErrorRecord* rec, unsigned long long slot_key) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = int64_t(values[element_offset(layout, i)]);
    if (has_ignore && v == ignore) continue;
    if (v < 0 || v >= limit) atomicMin(&rec->key, slot_key | static_cast<unsigned long long>(i));
  }
}

// One thread, after range_check_kernel in stream order: if the record names this check, keep the
// offending value (the host may no longer have the tensor when it reads the record).
template <typename I>
__global__ void range_check_value_kernel(const I* values, Layout layout, ErrorRecord* rec,
                                         unsigned long long slot_key) {
  const unsigned long long key = rec->key;
  if (key == kNoError || (key & ~kPositionMask) != slot_key) return;
  rec->value = static_cast<long long>(values[element_offset(layout, int64_t(key & kPositionMask))]);
  rec->value_key = key;
}

struct DeviceState {
  ErrorRecord* record = nullptr;  // device memory; never freed (the context may be gone at exit)
  PendingDeviceChecks pending;
};

std::mutex& state_mutex() {
  static std::mutex mutex;
  return mutex;
}

// Device `index`'s state, created on first use (with the lock held by the caller). Leaked on
// purpose, like the allocators' caches: nothing here may run during static destruction.
std::vector<std::unique_ptr<DeviceState>>& states_locked() {
  static auto* states = new std::vector<std::unique_ptr<DeviceState>>();
  return *states;
}

DeviceState& state_locked(int index) {
  std::vector<std::unique_ptr<DeviceState>>& states = states_locked();
  if (size_t(index) >= states.size()) states.resize(size_t(index) + 1);
  std::unique_ptr<DeviceState>& s = states[size_t(index)];
  if (!s) {
    auto fresh = std::make_unique<DeviceState>();
    DAEDALUS_CUDA_CHECK(cudaSetDevice(index));
    DAEDALUS_CUDA_CHECK(cudaMalloc(&fresh->record, sizeof(ErrorRecord)));
    count_host_sync("device checks: initial record");  // a pageable cudaMemcpy waits
    DAEDALUS_CUDA_CHECK(cudaMemcpy(fresh->record, &kCleanRecord, sizeof(ErrorRecord), cudaMemcpyHostToDevice));
    s = std::move(fresh);
  }
  return *s;
}

// Device `index`'s state if a check was ever queued there, else nullptr (lock held by the caller).
DeviceState* find_state_locked(int index) {
  std::vector<std::unique_ptr<DeviceState>>& states = states_locked();
  return size_t(index) < states.size() ? states[size_t(index)].get() : nullptr;
}

}  // namespace

void enqueue_range_check(const Tensor& values, int64_t limit, std::optional<int64_t> ignore,
                         DeviceCheckDescription check) {
  const int64_t n = values.numel();
  if (n == 0) return;
  const int index = values.device().index;
  DAEDALUS_CHECK(uint64_t(n) <= kPositionMask, "{}: {} has {} elements, more than a device check can address", check.op,
                 check.name, n);
  DAEDALUS_CHECK(values.dtype() == DType::i32 || values.dtype() == DType::i64, "{}: {} must be int32 or int64, got {}",
                 check.op, check.name, values.describe());
  const Layout layout = layout_of(values);  // before queuing: nothing below throws for this input
  check.shape = values.shape();
  const std::string op = check.op;
  std::unique_lock lock(state_mutex());
  while (state_locked(index).pending.full()) {
    // Every slot has a queued check: wait for them (and raise what they found) before adding one.
    lock.unlock();
    synchronize(values.device());
    lock.lock();
  }
  DeviceState& state = state_locked(index);
  const unsigned long long slot_key = static_cast<unsigned long long>(state.pending.add(std::move(check)))
                                      << kSlotShift;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(index));
  const cudaStream_t stream = compute_stream(index);
  dispatch_index(op, values.dtype(), [&]<typename I>() {
    const I* p = static_cast<const I*>(values.data_ptr());
    range_check_kernel<I><<<blocks_for(n), kThreads, 0, stream>>>(p, layout, n, limit, ignore.has_value(),
                                                                  ignore.value_or(0), state.record, slot_key);
    DAEDALUS_CUDA_CHECK_LAUNCH();
    range_check_value_kernel<I><<<1, 1, 0, stream>>>(p, layout, state.record, slot_key);
    DAEDALUS_CUDA_CHECK_LAUNCH();
  });
}

void raise_device_check_errors(int index) {
  std::unique_lock lock(state_mutex());
  DeviceState* found = find_state_locked(index);
  if (found == nullptr || found->pending.empty()) return;
  DeviceState& state = *found;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(index));
  const cudaStream_t stream = compute_stream(index);
  // On the compute stream, after every check queued there.
  const auto read = [&](ErrorRecord* host) {
    DAEDALUS_CUDA_CHECK(cudaMemcpyAsync(host, state.record, sizeof(*host), cudaMemcpyDeviceToHost, stream));
    count_host_sync("device checks: read record");
    DAEDALUS_CUDA_CHECK(cudaStreamSynchronize(stream));
  };
  ErrorRecord host{};
  read(&host);
  if (host.key == kNoError) {
    state.pending.clear();
    return;
  }
  const uint64_t slot = host.key >> kSlotShift;
  const int64_t position = int64_t(host.key & kPositionMask);
  const DeviceCheckDescription* check = state.pending.find(slot);
  const std::string message =
      check != nullptr
          ? device_check_message(*check, position,
                                 host.value_key == host.key ? std::optional<int64_t>(host.value) : std::nullopt)
          : std::string();
  DAEDALUS_CUDA_CHECK(
      cudaMemcpyAsync(state.record, &kCleanRecord, sizeof(ErrorRecord), cudaMemcpyHostToDevice, stream));
  count_host_sync("device checks: clear record");
  DAEDALUS_CUDA_CHECK(cudaStreamSynchronize(stream));
  state.pending.clear();
  lock.unlock();
  DAEDALUS_ASSERT(check != nullptr && "the device error record names a check slot the host did not queue");
  detail::throw_input_error(message, __FILE__, __LINE__);
}

}  // namespace daedalus::cuda
