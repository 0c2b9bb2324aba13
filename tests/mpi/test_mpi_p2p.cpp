// Point-to-point transfers (Communicator::exchange) and the pipeline-parallel process groups under
// 2, 3 and 4 ranks: messages whose values encode (source, index) so every rank can check what
// arrived, in which order, and the rank layout of communicator.h group by group.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/check.h"
#include "autograd/tensor.h"
#include "parallel/communicator.h"

namespace daedalus::parallel {
namespace {

using Kind = PeerTransfer::Kind;

// Row i of a message from rank `src`: 1000·src + i (exact in every dtype below up to bf16's 8 bits:
// bf16 gets small values only).
std::vector<double> message(int src, int64_t n, double base = 1000) {
  std::vector<double> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(base * src + double(i));
  return v;
}

TEST(MpiExchange, RingSendAndReceiveInOneCallEveryDtype) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;  // with 2 ranks: the same peer both ways
  for (DType dtype : {DType::f32, DType::i64, DType::i32, DType::bf16}) {
    const double base = dtype == DType::bf16 ? 8 : 1000;  // bf16: 8·src + i, i < 5, exact
    const Tensor out = Tensor::from_values(message(r, 5, base), {5}, dtype);
    const Tensor in = Tensor::empty({5}, dtype);
    world->exchange({{Kind::send, out, next}, {Kind::recv, in, prev}});
    EXPECT_EQ(in.to_doubles(), message(prev, 5, base)) << dtype_name(dtype);
  }
}

TEST(MpiExchange, MessagesToOnePeerArriveInOrder) {
  auto world = mpi_world();
  const int r = world->rank();
  if (r > 1) GTEST_SKIP() << "ranks 0 and 1 only";
  const int peer = 1 - r;
  // Three messages of different sizes each way: two in one call, one in a later call.
  std::vector<Tensor> got{Tensor::empty({2}), Tensor::empty({3}), Tensor::empty({4})};
  world->exchange({{Kind::send, Tensor::from_values(message(r, 2), {2}), peer},
                   {Kind::send, Tensor::from_values(message(r, 3, 2000), {3}), peer},
                   {Kind::recv, got[0], peer},
                   {Kind::recv, got[1], peer}});
  world->exchange({{Kind::recv, got[2], peer}, {Kind::send, Tensor::from_values(message(r, 4, 3000), {4}), peer}});
  EXPECT_EQ(got[0].to_doubles(), message(peer, 2));
  EXPECT_EQ(got[1].to_doubles(), message(peer, 3, 2000));
  EXPECT_EQ(got[2].to_doubles(), message(peer, 4, 3000));
}

TEST(MpiExchange, ShorterMessageThanExpectedIsAnError) {
  auto world = mpi_world();
  const int r = world->rank();
  if (r > 1) GTEST_SKIP() << "ranks 0 and 1 only";
  if (r == 0) {
    world->send(Tensor::from_values({1, 2, 3}, {3}), 1);
  } else {
    try {
      world->recv(Tensor::empty({4}), 0);
      ADD_FAILURE() << "a 12-byte message into a 16-byte tensor was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("received 12 bytes from rank 0"), std::string::npos) << e.what();
    }
  }
}

TEST(MpiExchange, BadArgumentsAreInputErrorsBeforeAnythingMoves) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size();
  const Tensor t = Tensor::zeros({4});
  EXPECT_THROW(world->send(t, r), InputError);  // itself
  EXPECT_THROW(world->send(t, n), InputError);  // outside the communicator
  EXPECT_THROW(world->recv(t, -1), InputError);
  const Tensor strided = Tensor::zeros({4, 2}).slice(1, 0, 1);
  EXPECT_THROW(world->send(strided, (r + 1) % n), InputError);
  EXPECT_THROW(world->exchange({{Kind::send, Tensor(), (r + 1) % n}}), InputError);
}

// Which world ranks a group holds, in its rank order.
std::vector<int64_t> members(Communicator& group, int world_rank) {
  Tensor all = Tensor::empty({group.size()}, DType::i64);
  group.all_gather(Tensor::from_vector<int64_t>({world_rank}, {1}), all);
  return all.to_vector<int64_t>();
}

// communicator.h: r = stage·S + replica·E + ep_rank with S = n / P ranks per stage.
void expect_pipeline_groups(int pp, int ep) {
  auto world = mpi_world();
  const int r = world->rank(), n = world->size(), per_stage = n / pp, position = r % per_stage;
  const ProcessGroups g = make_process_groups(world, ep, pp);
  EXPECT_EQ(g.pp_size, pp);
  EXPECT_EQ(g.pp_stage, r / per_stage);
  EXPECT_EQ(g.ep_rank, position % ep);
  std::vector<int64_t> stage, ep_group, replicas, pipeline;
  for (int k = 0; k < per_stage; ++k) stage.push_back(g.pp_stage * per_stage + k);
  for (int k = 0; k < ep; ++k) ep_group.push_back(r - r % ep + k);
  for (int k = 0; k < per_stage / ep; ++k) replicas.push_back(g.pp_stage * per_stage + k * ep + g.ep_rank);
  for (int s = 0; s < pp; ++s) pipeline.push_back(s * per_stage + position);
  EXPECT_EQ(members(*g.stage, r), stage);
  EXPECT_EQ(members(*g.ep, r), ep_group);
  EXPECT_EQ(members(*g.replicas, r), replicas);
  ASSERT_NE(g.pipeline, nullptr);
  EXPECT_EQ(members(*g.pipeline, r), pipeline);
  ASSERT_NE(g.embedding, nullptr);
  if (g.first_stage() || g.last_stage()) {
    EXPECT_EQ(members(*g.embedding, r), (std::vector<int64_t>{position, (pp - 1) * per_stage + position}));
  } else {
    EXPECT_EQ(g.embedding->size(), 1);
  }
  // Neighbouring stages exchange over the pipeline group (rank = stage).
  const int s = g.pp_stage;
  std::vector<PeerTransfer> t;
  Tensor from_prev = Tensor::empty({1}, DType::i64), from_next = Tensor::empty({1}, DType::i64);
  const Tensor me = Tensor::from_vector<int64_t>({r}, {1});
  if (s > 0) t.push_back({Kind::send, me, s - 1}), t.push_back({Kind::recv, from_prev, s - 1});
  if (s < pp - 1) t.push_back({Kind::send, me, s + 1}), t.push_back({Kind::recv, from_next, s + 1});
  g.pipeline->exchange(t);
  if (s > 0) {
    EXPECT_EQ(from_prev.to_vector<int64_t>()[0], r - per_stage);
  }
  if (s < pp - 1) {
    EXPECT_EQ(from_next.to_vector<int64_t>()[0], r + per_stage);
  }
}

TEST(MpiPipelineGroups, EveryStageCountThatDividesTheWorld) {
  const int n = mpi_world()->size();
  for (int pp = 2; pp <= n; ++pp) {
    if (n % pp != 0) continue;
    SCOPED_TRACE(pp);
    expect_pipeline_groups(pp, 1);
    if ((n / pp) % 2 == 0) expect_pipeline_groups(pp, 2);
  }
}

TEST(MpiPipelineGroups, IndivisibleIsInputErrorNamingTheSizes) {
  const int n = mpi_world()->size();
  try {
    make_process_groups(mpi_world(), 1, n + 1);
    ADD_FAILURE() << "pipeline size " << n + 1 << " accepted on " << n << " ranks";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(fmt::format("pipeline-parallel size {}", n + 1)), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace daedalus::parallel
