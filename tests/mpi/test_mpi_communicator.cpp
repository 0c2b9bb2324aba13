// The MPI Communicator under 2, 3 and 4 ranks: collectives against values every rank can compute
// for itself, ragged all-to-all with (src, dst, i) encoded in each row, process groups, bucketed
// gradient averaging and the config agreement check.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "autograd/tensor.h"
#include "parallel/communicator.h"
#include "parallel/config_check.h"
#include "parallel/grad_sync.h"

namespace daedalus::parallel {
namespace {

TEST(MpiCommunicator, WorldMatchesMpiAndIsShared) {
  auto world = mpi_world();
  EXPECT_EQ(world->backend(), "mpi");
  EXPECT_GE(world->size(), 2);
  EXPECT_LT(world->rank(), world->size());
  EXPECT_EQ(mpi_world().get(), world.get());  // one duplicate of MPI_COMM_WORLD per process
}

TEST(MpiCommunicator, AllReduceSumAndMaxFp32Int64Int32) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size();
  // Small integers and halves: every partial sum is exact in fp32, so the order MPI adds in is moot.
  Tensor f = Tensor::from_vector<float>({float(r) + 0.5f, -2.0f * float(r), 7.0f}, {3});
  world->all_reduce(f, ReduceOp::sum);
  const double rsum = n * (n - 1) / 2.0;
  EXPECT_EQ(f.to_vector<float>(), (std::vector<float>{float(rsum + 0.5 * n), float(-2 * rsum), float(7 * n)}));

  Tensor fm = Tensor::from_vector<float>({float(r), -float(r)}, {2});
  world->all_reduce(fm, ReduceOp::max);
  EXPECT_EQ(fm.to_vector<float>(), (std::vector<float>{float(n - 1), 0.0f}));

  // int64 beyond 2^53 (not representable in double) sums exactly.
  const int64_t big = (int64_t{1} << 60) + 1;
  Tensor i = Tensor::from_vector<int64_t>({big + r, -r}, {2});
  world->all_reduce(i, ReduceOp::sum);
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{big * n + int64_t(rsum), -int64_t(rsum)}));
  Tensor im = Tensor::from_vector<int64_t>({big + r}, {1});
  world->all_reduce(im, ReduceOp::max);
  EXPECT_EQ(im.to_vector<int64_t>()[0], big + n - 1);

  Tensor i32 = Tensor::from_vector<int32_t>({r + 1}, {1});
  world->all_reduce(i32, ReduceOp::sum);
  EXPECT_EQ(i32.to_vector<int32_t>()[0], int32_t(rsum) + n);
}

TEST(MpiCommunicator, AllReduceBf16ReducesInFp32AndRoundsOnce) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size();
  // Each rank holds 1 + 2^-7 (bf16's last fraction bit). n * (1 + 2^-7) is exact in fp32 and needs
  // rounding in bf16 for n = 3: the expected value is that one rounding of the exact sum.
  const double v = 1.0 + std::ldexp(1.0, -7);
  Tensor t = Tensor::from_values({v, double(r), 3.0}, {3}, DType::bf16);
  world->all_reduce(t, ReduceOp::sum);
  const Tensor expected = Tensor::from_values({n * v, n * (n - 1) / 2.0, 3.0 * n}, {3}, DType::bf16);
  EXPECT_EQ(t.to_doubles(), expected.to_doubles());
  Tensor m = Tensor::from_values({double(r) * 0.25}, {1}, DType::bf16);
  world->all_reduce(m, ReduceOp::max);
  EXPECT_EQ(m.item(), (n - 1) * 0.25);
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  auto world = mpi_world();
  for (int root = 0; root < world->size(); ++root) {
    Tensor t = Tensor::from_vector<float>({float(world->rank()), 1.5f, float(root)}, {3});
    world->broadcast(t, root);
    EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{float(root), 1.5f, float(root)})) << "root " << root;
  }
  Tensor t = Tensor::zeros({2});
  EXPECT_THROW(world->broadcast(t, world->size()), InputError);
}

TEST(MpiCommunicator, AllGatherConcatenatesInRankOrder) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size();
  Tensor in = Tensor::from_vector<int64_t>({10 * r, 10 * r + 1}, {2});
  Tensor out = Tensor::empty({2 * n}, DType::i64);
  world->all_gather(in, out);
  std::vector<int64_t> expected;
  for (int s = 0; s < n; ++s) expected.insert(expected.end(), {10 * s, 10 * s + 1});
  EXPECT_EQ(out.to_vector<int64_t>(), expected);
  Tensor wrong = Tensor::empty({2 * n + 1}, DType::i64);
  EXPECT_THROW(world->all_gather(in, wrong), InputError);
}

// Rows from src to dst: ragged, with zero rows for some pairs (every rank sends nothing to
// rank 1's right neighbour and rank 0 sends nothing at all to the last rank).
int64_t rows_between(int src, int dst, int n) {
  if (dst == (src + 2) % n && n > 2) return 0;
  if (src == 0 && dst == n - 1) return 0;
  return (src * 3 + dst * 5) % 4 + (src == dst ? 1 : 0);
}
float row_value(int src, int dst, int64_t i, int64_t col) { return float(src * 1000 + dst * 100 + i * 10 + col); }

TEST(MpiCommunicator, AllToAllVRaggedRowsArriveInOrder) {
  auto world = mpi_world();
  const int me = world->rank(), n = world->size();
  constexpr int64_t D = 3;
  std::vector<int64_t> send(static_cast<size_t>(n)), recv(static_cast<size_t>(n));
  std::vector<float> in_values;
  for (int dst = 0; dst < n; ++dst) {
    send[size_t(dst)] = rows_between(me, dst, n);
    for (int64_t i = 0; i < send[size_t(dst)]; ++i)
      for (int64_t c = 0; c < D; ++c) in_values.push_back(row_value(me, dst, i, c));
  }
  std::vector<float> expected;
  for (int src = 0; src < n; ++src) {
    recv[size_t(src)] = rows_between(src, me, n);
    for (int64_t i = 0; i < recv[size_t(src)]; ++i)
      for (int64_t c = 0; c < D; ++c) expected.push_back(row_value(src, me, i, c));
  }
  const int64_t in_rows = int64_t(in_values.size()) / D, out_rows = int64_t(expected.size()) / D;
  Tensor in = Tensor::from_vector<float>(in_values, {in_rows, D});
  Tensor out = Tensor::full({out_rows, D}, -1.0);
  world->all_to_all_v(in, send, out, recv);
  EXPECT_EQ(out.to_vector<float>(), expected) << "rank " << me;
}

TEST(MpiCommunicator, BadCountsAreInputErrors) {
  auto world = mpi_world();
  const int n = world->size();
  Tensor in = Tensor::zeros({2, 4});
  Tensor out = Tensor::zeros({2, 4});
  std::vector<int64_t> negative(static_cast<size_t>(n), 0), ok(static_cast<size_t>(n), 0);
  negative[0] = -1;
  negative[1] = 3;
  ok[0] = 2;
  try {
    world->all_to_all_v(in, negative, out, ok);
    FAIL() << "a negative count was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("send_counts[0] = -1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(world->all_to_all_v(in, std::vector<int64_t>(static_cast<size_t>(n) + 1, 0), out, ok), InputError);
  EXPECT_THROW(world->all_to_all_v(in, ok, Tensor::zeros({2, 5}), ok), InputError);  // row shapes differ
  // More bytes than MPI's int counts can say.
  std::vector<int64_t> huge(static_cast<size_t>(n), 0);
  huge[0] = int64_t{1} << 40;
  huge[1] = 2 - huge[0];
  EXPECT_THROW(world->all_to_all_v(in, huge, out, ok), InputError);
  // Every rank keeps its rows but expects them from its neighbour: the self counts disagree, and
  // every rank says so before anything is sent (no rank is left waiting).
  if (n > 1) {
    std::vector<int64_t> keep(static_cast<size_t>(n), 0), from_next(static_cast<size_t>(n), 0);
    keep[size_t(world->rank())] = 2;
    from_next[size_t((world->rank() + 1) % n)] = 2;
    try {
      world->all_to_all_v(in, keep, out, from_next);
      FAIL() << "mismatched self counts were accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("sends itself 2 rows but expects 0"), std::string::npos) << e.what();
    }
  }
}

TEST(MpiCommunicator, NonContiguousAndFp8AreRefused) {
  auto world = mpi_world();
  Tensor t = Tensor::zeros({3, 4}).t();
  try {
    world->all_reduce(t);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos) << e.what();
  }
  EXPECT_THROW(world->all_reduce(Tensor::zeros({4}, DType::f8e4m3)), InputError);
}

void expect_groups(int ep) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size();
  ProcessGroups g = make_process_groups(world, ep);
  EXPECT_EQ(g.world.get(), world.get());
  EXPECT_EQ(g.ep_size, ep);
  EXPECT_EQ(g.ep_rank, r % ep);
  EXPECT_EQ(g.ep->size(), ep);
  EXPECT_EQ(g.ep->rank(), r % ep);
  EXPECT_EQ(g.replicas->size(), n / ep);
  EXPECT_EQ(g.replicas->rank(), r / ep);
  // Membership: gather world ranks over each group.
  Tensor mine = Tensor::from_vector<int64_t>({r}, {1});
  Tensor ep_members = Tensor::empty({ep}, DType::i64);
  g.ep->all_gather(mine, ep_members);
  std::vector<int64_t> expected_ep;
  for (int k = 0; k < ep; ++k) expected_ep.push_back((r / ep) * ep + k);
  EXPECT_EQ(ep_members.to_vector<int64_t>(), expected_ep);
  Tensor rep_members = Tensor::empty({n / ep}, DType::i64);
  g.replicas->all_gather(mine, rep_members);
  std::vector<int64_t> expected_rep;
  for (int k = 0; k < n / ep; ++k) expected_rep.push_back(k * ep + r % ep);
  EXPECT_EQ(rep_members.to_vector<int64_t>(), expected_rep);
  // A replica-group all-reduce sums members only.
  Tensor sum = Tensor::from_vector<int64_t>({r}, {1});
  g.replicas->all_reduce(sum);
  int64_t expected_sum = 0;
  for (int64_t m : expected_rep) expected_sum += m;
  EXPECT_EQ(sum.to_vector<int64_t>()[0], expected_sum);
}

TEST(MpiProcessGroups, EpSizeOne) { expect_groups(1); }
TEST(MpiProcessGroups, EpSizeTwoWhenDivisible) {
  if (mpi_world()->size() % 2 != 0) GTEST_SKIP() << "world size " << mpi_world()->size() << " is odd";
  expect_groups(2);
}
TEST(MpiProcessGroups, EpSizeWholeWorld) { expect_groups(mpi_world()->size()); }
TEST(MpiProcessGroups, IndivisibleIsInputError) {
  const int n = mpi_world()->size();
  EXPECT_THROW(make_process_groups(mpi_world(), n + 1), InputError);
}

TEST(MpiGradSync, RaggedGradientsAveragedOverBuckets) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size();
  const std::vector<Shape> shapes = {{7}, {3, 5}, {1}, {2, 3, 4}, {65}};
  std::vector<Tensor> grads;
  int64_t total = 0;
  // value(rank, tensor, i) = rank * 4 + t + i / 8: the rank average is exact in fp32 for n = 2, 4
  // (a power-of-two divide) and within one rounding for n = 3.
  auto value = [](int rank, size_t t, int64_t i) { return double(rank * 4) + double(t) + double(i) / 8; };
  for (size_t t = 0; t < shapes.size(); ++t) {
    std::vector<double> v;
    for (int64_t i = 0; i < shape_numel(shapes[t]); ++i) v.push_back(value(r, t, i));
    grads.push_back(Tensor::from_values(v, shapes[t]));
    total += shape_numel(shapes[t]);
  }
  const int64_t bucket_bytes = 40 * 4;  // 40 floats (rounded down to a multiple of n): tensors straddle buckets
  const GradSyncStats stats = all_reduce_gradients(*world, grads, bucket_bytes);
  const int64_t per_bucket = 40 / n * n, buckets = (total + per_bucket - 1) / per_bucket;
  EXPECT_GE(buckets, 2);
  EXPECT_EQ(stats.calls, 2 * buckets);  // a reduce-scatter and an all-gather per bucket
  // Each bucket is padded to a multiple of n; the reduce-scatter hands it all over, the all-gather
  // this rank's 1/n of it.
  const int64_t padded = (buckets - 1) * per_bucket + (total - (buckets - 1) * per_bucket + n - 1) / n * n;
  EXPECT_EQ(stats.bytes, padded * 4 + padded / n * 4);
  for (size_t t = 0; t < shapes.size(); ++t) {
    EXPECT_EQ(grads[t].shape(), shapes[t]);
    const std::vector<float> got = grads[t].to_vector<float>();
    for (int64_t i = 0; i < int64_t(got.size()); ++i) {
      double mean = 0;
      for (int s = 0; s < n; ++s) mean += value(s, t, i);
      mean /= n;
      // fp32 sum is exact (small multiples of 1/8); the divide rounds once: half an ulp.
      ASSERT_NEAR(got[size_t(i)], mean, std::abs(mean) * 6e-8 + 1e-12) << "tensor " << t << " element " << i;
    }
  }
  // One bucket when it fits; nothing to do for no gradients.
  EXPECT_EQ(all_reduce_gradients(*world, grads).calls, 2);
  EXPECT_EQ(all_reduce_gradients(*world, {}).calls, 0);
}

TEST(MpiConfigCheck, EqualTextPasses) {
  EXPECT_NO_THROW(check_same_config(*mpi_world(), "model:\n  dim: 64\nfp8: deepseek\n"));
}

TEST(MpiConfigCheck, MismatchThrowsOnEveryRankNamingRankOne) {
  auto world = mpi_world();
  const std::string text = world->rank() == 1 ? "model:\n  dim: 65\n" : "model:\n  dim: 64\n";
  try {
    check_same_config(*world, text);
    FAIL() << "rank " << world->rank() << " did not throw";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank 1's resolved config differs from rank 0's"), std::string::npos) << msg;
    EXPECT_NE(msg.find(fmt::format("{:016x}", fnv1a_64("model:\n  dim: 65\n"))), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace daedalus::parallel
