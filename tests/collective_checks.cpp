#include "tests/collective_checks.h"

#include <string>

namespace daedalus::testing {
namespace {

Tensor on(const std::vector<double>& values, DType dtype, Device device) {
  Tensor t = Tensor::empty({int64_t(values.size())}, DType::f32);
  for (size_t i = 0; i < values.size(); ++i) t.data<float>()[i] = float(values[i]);
  return t.to(dtype).to(device);
}

std::vector<double> back(const Tensor& t) { return t.to(Device::cpu()).to_doubles(); }

}  // namespace

void check_collectives(parallel::Communicator& comm, Device device) {
  const int r = comm.rank(), n = comm.size();
  const std::string who = comm.backend() + " rank " + std::to_string(r) + " of " + std::to_string(n);
  constexpr int kLen = 5;

  for (DType dtype : {DType::f32, DType::bf16, DType::i64}) {
    std::vector<double> mine(static_cast<size_t>(kLen)), sum(mine), max(mine);
    for (int i = 0; i < kLen; ++i) {
      mine[size_t(i)] = r + (dtype == DType::i64 ? 2 * i : 0.5 * i);
      sum[size_t(i)] = n * (n - 1) / 2.0 + n * (mine[size_t(i)] - r);
      max[size_t(i)] = (n - 1) + (mine[size_t(i)] - r);
    }
    Tensor t = on(mine, dtype, device);
    comm.all_reduce(t, parallel::ReduceOp::sum);
    EXPECT_EQ(back(t), sum) << who << " all_reduce sum " << dtype_name(dtype);
    Tensor m = on(mine, dtype, device);
    comm.all_reduce(m, parallel::ReduceOp::max);
    EXPECT_EQ(back(m), max) << who << " all_reduce max " << dtype_name(dtype);
  }

  const int root = n - 1;
  std::vector<double> from_root(static_cast<size_t>(kLen)), own(from_root);
  for (int i = 0; i < kLen; ++i) {
    from_root[size_t(i)] = root * 10 + i;
    own[size_t(i)] = r == root ? from_root[size_t(i)] : -1;
  }
  Tensor b = on(own, DType::f32, device);
  comm.broadcast(b, root);
  EXPECT_EQ(back(b), from_root) << who << " broadcast";

  std::vector<double> part(3), gathered;
  for (int i = 0; i < 3; ++i) part[size_t(i)] = r * 100 + i;
  for (int s = 0; s < n; ++s)
    for (int i = 0; i < 3; ++i) gathered.push_back(s * 100 + i);
  Tensor g = Tensor::empty({int64_t(n) * 3}, DType::f32, device);
  comm.all_gather(on(part, DType::f32, device), g);
  EXPECT_EQ(back(g), gathered) << who << " all_gather";

  // reduce_scatter: every rank contributes in[s * 3 + i] = r + s + i / 2 (exact in fp32 and bf16);
  // rank r receives block r of the sum, n(n-1)/2 + n (r + i / 2), and the max, (n - 1) + r + i / 2.
  for (DType dtype : {DType::f32, DType::bf16}) {
    std::vector<double> contribution, sum_block, max_block;
    for (int s = 0; s < n; ++s)
      for (int i = 0; i < 3; ++i) contribution.push_back(r + s + 0.5 * i);
    for (int i = 0; i < 3; ++i) {
      sum_block.push_back(n * (n - 1) / 2.0 + n * (r + 0.5 * i));
      max_block.push_back((n - 1) + r + 0.5 * i);
    }
    Tensor block = Tensor::full({3}, -7.0, dtype, device);
    comm.reduce_scatter(on(contribution, dtype, device), block, parallel::ReduceOp::sum);
    EXPECT_EQ(back(block), sum_block) << who << " reduce_scatter sum " << dtype_name(dtype);
    comm.reduce_scatter(on(contribution, dtype, device), block, parallel::ReduceOp::max);
    EXPECT_EQ(back(block), max_block) << who << " reduce_scatter max " << dtype_name(dtype);
  }

  // The started forms, both in flight at once, waited for in the other order; their inputs are
  // temporaries, so the Work must hold them. Same values as the blocking calls above (fp32 sum).
  {
    std::vector<double> contribution, sum_block;
    for (int s = 0; s < n; ++s)
      for (int i = 0; i < 3; ++i) contribution.push_back(r + s + 0.5 * i);
    for (int i = 0; i < 3; ++i) sum_block.push_back(n * (n - 1) / 2.0 + n * (r + 0.5 * i));
    Tensor block = Tensor::full({3}, -7.0, DType::f32, device);
    Tensor all = Tensor::empty({int64_t(n) * 3}, DType::f32, device);
    const std::unique_ptr<parallel::Work> reduced =
        comm.start_reduce_scatter(on(contribution, DType::f32, device), block);
    const std::unique_ptr<parallel::Work> gathered_work = comm.start_all_gather(on(part, DType::f32, device), all);
    gathered_work->wait();
    reduced->wait();
    EXPECT_TRUE(reduced->test()) << who << " a waited Work is complete";
    EXPECT_EQ(back(block), sum_block) << who << " start_reduce_scatter";
    EXPECT_EQ(back(all), gathered) << who << " start_all_gather";
  }

  // all_to_all_v: rows of 3 floats (source, destination, index within the pair).
  std::vector<int64_t> send(static_cast<size_t>(n)), recv(static_cast<size_t>(n));
  std::vector<double> rows, expected;
  for (int s = 0; s < n; ++s) {
    send[size_t(s)] = (r + s) % 3;
    recv[size_t(s)] = (s + r) % 3;
    for (int j = 0; j < send[size_t(s)]; ++j) rows.insert(rows.end(), {double(r), double(s), double(j)});
    for (int j = 0; j < recv[size_t(s)]; ++j) expected.insert(expected.end(), {double(s), double(r), double(j)});
  }
  const int64_t sent_rows = int64_t(rows.size() / 3), recv_rows = int64_t(expected.size() / 3);
  Tensor in = rows.empty() ? Tensor::empty({0, 3}, DType::f32, device) : on(rows, DType::f32, device).view({-1, 3});
  Tensor out = Tensor::full({recv_rows, 3}, -7.0, DType::f32, device);
  ASSERT_EQ(in.size(0), sent_rows);
  comm.all_to_all_v(in, send, out, recv);
  EXPECT_EQ(back(out), expected) << who << " all_to_all_v";

  // exchange: a ring, each rank sending to the next and receiving from the previous in one call
  // (with 2 ranks both go to the same peer), then a second message the other way round.
  if (n > 1) {
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    for (DType dtype : {DType::f32, DType::bf16}) {
      Tensor from_prev = Tensor::full({3}, -7.0, dtype, device), from_next = Tensor::full({2}, -7.0, dtype, device);
      using Kind = parallel::PeerTransfer::Kind;
      comm.exchange({{Kind::send, on({double(r), 1, 2}, dtype, device), next},
                     {Kind::recv, from_prev, prev},
                     {Kind::send, on({double(r), 3}, dtype, device), prev},
                     {Kind::recv, from_next, next}});
      EXPECT_EQ(back(from_prev), (std::vector<double>{double(prev), 1, 2})) << who << " exchange " << dtype_name(dtype);
      EXPECT_EQ(back(from_next), (std::vector<double>{double(next), 3})) << who << " exchange " << dtype_name(dtype);
    }
  }

  comm.barrier();

  // split: even and odd ranks, ordered by descending world rank.
  auto half = comm.split(r % 2, -r);
  const int members = (n - r % 2 + 1) / 2;
  EXPECT_EQ(half->size(), members) << who << " split";
  const int largest = (n - 1) % 2 == r % 2 ? n - 1 : n - 2;  // the highest world rank of this parity
  EXPECT_EQ(half->rank(), (largest - r) / 2) << who << " split rank";
  EXPECT_EQ(half->backend(), comm.backend());
  Tensor one = on({1.0}, DType::f32, device);
  half->all_reduce(one, parallel::ReduceOp::sum);
  EXPECT_EQ(back(one), std::vector<double>{double(members)}) << who << " all_reduce over the split";
}

}  // namespace daedalus::testing
