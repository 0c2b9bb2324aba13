// A device communicator that also moves host tensors, by staging them through its device.
//
// A GPU run keeps its control values on the host: the step's losses and router loads, stop flags,
// checkpoint agreement, the dispatch plan's counts. NCCL moves device buffers only, so each such
// host tensor is copied to the device, moved, and copied back (a few bytes, a few times per step
// or layer). Device tensors pass straight through to the inner communicator.
#include "autograd/check.h"
#include "parallel/communicator.h"

namespace daedalus::parallel {

namespace {

class HostStagingCommunicator final : public Communicator {
 public:
  HostStagingCommunicator(std::shared_ptr<Communicator> inner, Device device)
      : inner_(std::move(inner)), device_(device) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend(); }

  void all_reduce(const Tensor& t, ReduceOp op) override {
    if (!on_host(t)) return inner_->all_reduce(t, op);
    const Tensor staged = stage(t);
    inner_->all_reduce(staged, op);
    unstage(t, staged);
  }

  void broadcast(const Tensor& t, int root) override {
    if (!on_host(t)) return inner_->broadcast(t, root);
    const Tensor staged = stage(t);
    inner_->broadcast(staged, root);
    unstage(t, staged);
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    if (!on_host(in) && !on_host(out)) return inner_->all_gather(in, out);
    const Tensor staged_out = Tensor::empty(out.shape(), out.dtype(), device_);
    inner_->all_gather(stage(in), staged_out);
    unstage(out, staged_out);
  }

  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    if (!on_host(in) && !on_host(out)) return inner_->reduce_scatter(in, out, op);
    const Tensor staged_out = Tensor::empty(out.shape(), out.dtype(), device_);
    inner_->reduce_scatter(stage(in), staged_out, op);
    unstage(out, staged_out);
  }

  // Device tensors start on the inner communicator (NCCL: on its communication stream); host
  // tensors take the staged blocking path and come back completed.
  std::unique_ptr<Work> start_reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) override {
    if (!on_host(in) && !on_host(out)) return inner_->start_reduce_scatter(in, out, op);
    return Communicator::start_reduce_scatter(in, out, op);
  }

  std::unique_ptr<Work> start_all_gather(const Tensor& in, const Tensor& out) override {
    if (!on_host(in) && !on_host(out)) return inner_->start_all_gather(in, out);
    return Communicator::start_all_gather(in, out);
  }

  void all_to_all_v(const Tensor& in, const std::vector<int64_t>& send_counts, const Tensor& out,
                    const std::vector<int64_t>& recv_counts) override {
    if (!on_host(in) && !on_host(out)) return inner_->all_to_all_v(in, send_counts, out, recv_counts);
    const Tensor staged_out = Tensor::empty(out.shape(), out.dtype(), device_);
    inner_->all_to_all_v(stage(in), send_counts, staged_out, recv_counts);
    unstage(out, staged_out);
  }

  void barrier() override { inner_->barrier(); }

  // Host tensors go through device copies: sends staged before, receives copied back after.
  void exchange(const std::vector<PeerTransfer>& transfers) override {
    std::vector<PeerTransfer> staged = transfers;
    for (PeerTransfer& t : staged)
      if (on_host(t.tensor))
        t.tensor = t.kind == PeerTransfer::Kind::send ? stage(t.tensor)
                                                      : Tensor::empty(t.tensor.shape(), t.tensor.dtype(), device_);
    inner_->exchange(staged);
    for (size_t i = 0; i < transfers.size(); ++i)
      if (transfers[i].kind == PeerTransfer::Kind::recv) unstage(transfers[i].tensor, staged[i].tensor);
  }

  std::shared_ptr<Communicator> split(int color, int key) const override {
    return std::make_shared<HostStagingCommunicator>(inner_->split(color, key), device_);
  }

 private:
  static bool on_host(const Tensor& t) { return t.defined() && t.device().is_cpu(); }
  Tensor stage(const Tensor& t) const { return t.device() == device_ ? t : t.contiguous().to(device_); }
  static void unstage(const Tensor& host, const Tensor& staged) {
    if (!staged.shares_storage(host)) Tensor(host).copy_(staged);
  }

  std::shared_ptr<Communicator> inner_;
  Device device_;
};

}  // namespace

std::shared_ptr<Communicator> with_host_staging(std::shared_ptr<Communicator> inner, Device device) {
  DAEDALUS_CHECK(inner != nullptr, "with_host_staging: no communicator");
  DAEDALUS_CHECK(device.is_cuda(), "with_host_staging: stages through a CUDA device, got {}", device.str());
  return std::make_shared<HostStagingCommunicator>(std::move(inner), device);
}

}  // namespace daedalus::parallel
