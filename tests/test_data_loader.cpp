// The batch loader: the per-epoch permutation is a bijection, ranks' slices concatenate to the
// world-size-1 batch, resuming (at the same or another world size) continues the identical stream,
// targets are inputs shifted by one, epochs roll over, validation reads windows in order, and bad
// options name both values. Uses an in-memory source, independent of the file-backed ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "data/loader.h"
#include "tests/memory_source.h"
#include "tests/testing.h"

namespace daedalus::data {
namespace {

LoaderOptions options(int64_t seq_len, int64_t global_batch, int rank = 0, int world = 1, uint64_t seed = 1234) {
  LoaderOptions o;
  o.seq_len = seq_len;
  o.global_batch = global_batch;
  o.rank = rank;
  o.world = world;
  o.seed = seed;
  return o;
}

// Window index of every sample in the epoch: the permutation as a vector.
std::vector<int64_t> epoch_order(const Loader& loader, int64_t epoch, int64_t seq_len) {
  const int64_t n = loader.samples_per_epoch();
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t p = 0; p < n; ++p) order[size_t(p)] = loader.window_start(epoch * n + p) / seq_len;
  return order;
}

// The next `steps` global batches as the concatenation, in rank order, of every rank's rows.
std::vector<int64_t> union_of_ranks(const TokenSource& source, int64_t seq_len, int64_t global_batch, int world,
                                    int64_t consumed, int steps) {
  std::vector<Loader> loaders;
  for (int r = 0; r < world; ++r) {
    loaders.emplace_back(source, options(seq_len, global_batch, r, world));
    loaders.back().set_consumed_samples(consumed);
  }
  std::vector<int64_t> tokens;
  for (int s = 0; s < steps; ++s)
    for (Loader& loader : loaders) {
      const std::vector<int64_t> rows = loader.next().inputs.to_vector<int64_t>();
      tokens.insert(tokens.end(), rows.begin(), rows.end());
    }
  return tokens;
}

TEST(DataLoader, PermutationIsABijectionForManySizes) {
  for (int64_t n : {1, 2, 3, 7, 1000, 1001, 65537}) {
    testing::CyclicSource source(n + 1);  // seq_len 1: exactly n windows, window w starts at token w
    for (uint64_t seed : {1234u, 7u}) {
      const Loader loader(source, options(1, 1, 0, 1, seed));
      ASSERT_EQ(loader.samples_per_epoch(), n);
      for (int64_t epoch : {0, 1, 5}) {
        std::vector<bool> seen(static_cast<size_t>(n), false);
        for (int64_t w : epoch_order(loader, epoch, 1)) {
          ASSERT_TRUE(w >= 0 && w < n) << "N " << n << " window " << w;
          ASSERT_FALSE(seen[size_t(w)]) << "N " << n << " seed " << seed << " epoch " << epoch << ": window " << w
                                        << " twice";
          seen[size_t(w)] = true;
        }
      }
    }
  }
}

TEST(DataLoader, PermutationDiffersBetweenEpochsAndSeedsAndMixes) {
  testing::CyclicSource source(1001);  // 1000 windows of 1 token
  const Loader a(source, options(1, 1, 0, 1, 1234)), b(source, options(1, 1, 0, 1, 1235));
  const std::vector<int64_t> a0 = epoch_order(a, 0, 1), a1 = epoch_order(a, 1, 1), b0 = epoch_order(b, 0, 1);
  EXPECT_NE(a0, a1);
  EXPECT_NE(a0, b0);
  // A random permutation of 1000 has one fixed point on average and P(>= 8) < 1e-5; an identity-like
  // or barely-shuffled order (a broken round function) has hundreds.
  for (const auto& order : {a0, a1, b0}) {
    int64_t fixed = 0, adjacent = 0;
    for (size_t p = 0; p < order.size(); ++p) {
      fixed += order[p] == int64_t(p);
      if (p > 0) adjacent += order[p] == order[p - 1] + 1;
    }
    EXPECT_LT(fixed, 8);
    EXPECT_LT(adjacent, 8);  // consecutive positions do not read consecutive windows
  }
  // Neighbouring positions land far apart: for a uniform permutation of N the mean of
  // |perm(p + 1) - perm(p)| is (N + 1) / 3 with a standard error of about N / (sqrt(18) sqrt(N)),
  // 0.3% of the mean at N = 65537, so the 5% band is about 17 standard errors wide. A weak
  // network (one Feistel round keeps the low half of p as the high half) gives a tiny mean gap.
  testing::CyclicSource big(65538);
  const std::vector<int64_t> order = epoch_order(Loader(big, options(1, 1)), 0, 1);
  double gap = 0;
  for (size_t p = 1; p < order.size(); ++p) gap += double(std::abs(order[p] - order[p - 1]));
  gap /= double(order.size() - 1);
  EXPECT_NEAR(gap, 65538.0 / 3, 0.05 * 65538.0 / 3);
}

TEST(DataLoader, RankSlicesConcatenateToTheWorldSizeOneBatch) {
  testing::CyclicSource source(5000);  // 312 windows of 16 + 1 tokens
  const int64_t seq = 16, batch = 12;
  const std::vector<int64_t> reference = union_of_ranks(source, seq, batch, 1, 0, 5);
  ASSERT_EQ(reference.size(), size_t(5 * batch * seq));
  for (int world : {2, 3, 4}) {
    EXPECT_EQ(union_of_ranks(source, seq, batch, world, 0, 5), reference) << "world " << world;
    for (int r = 0; r < world; ++r) {
      Loader loader(source, options(seq, batch, r, world));
      EXPECT_EQ(loader.local_batch(), batch / world);
      for (int s = 0; s < 3; ++s) {
        const Batch b = loader.next();
        EXPECT_EQ(b.inputs.shape(), (Shape{batch / world, seq}));
        EXPECT_EQ(b.first_sample, s * batch + r * (batch / world));
        EXPECT_EQ(loader.consumed_samples(), (s + 1) * batch);  // every rank counts global samples
      }
    }
  }
}

TEST(DataLoader, ResumeContinuesTheIdenticalStreamAtAnyWorldSize) {
  testing::CyclicSource source(5000);
  const int64_t seq = 16, batch = 12, k = 3;
  const std::vector<int64_t> uninterrupted = union_of_ranks(source, seq, batch, 1, 0, k + 4);
  const std::vector<int64_t> tail(uninterrupted.begin() + k * batch * seq, uninterrupted.end());
  // Same world size: a fresh loader told how many samples were consumed.
  EXPECT_EQ(union_of_ranks(source, seq, batch, 1, k * batch, 4), tail);
  // Trained at w = 2 for k steps, resumed at w = 3 (and 4): the union is unchanged.
  const std::vector<int64_t> trained = union_of_ranks(source, seq, batch, 2, 0, int(k));
  EXPECT_TRUE(std::equal(trained.begin(), trained.end(), uninterrupted.begin()));
  EXPECT_EQ(union_of_ranks(source, seq, batch, 3, k * batch, 4), tail);
  EXPECT_EQ(union_of_ranks(source, seq, batch, 4, k * batch, 4), tail);
  // Resuming mid-stream after a loader already ran forward (set_consumed_samples rewinds too).
  Loader loader(source, options(seq, batch));
  for (int s = 0; s < 6; ++s) loader.next();
  loader.set_consumed_samples(k * batch);
  EXPECT_EQ(loader.next().inputs.to_vector<int64_t>(), std::vector<int64_t>(tail.begin(), tail.begin() + batch * seq));
}

TEST(DataLoader, TargetsAreInputsShiftedByOneWithinTheWindow) {
  testing::CyclicSource source(120001);  // crosses the 50000 wrap of token values: 937 windows of 128 + 1
  const int64_t seq = 128, batch = 6;
  Loader loader(source, options(seq, batch, 1, 2));
  for (int s = 0; s < 4; ++s) {
    const Batch b = loader.next();
    const std::vector<int64_t> in = b.inputs.to_vector<int64_t>(), tg = b.targets.to_vector<int64_t>();
    ASSERT_EQ(b.targets.shape(), (Shape{3, seq}));
    for (int64_t i = 0; i < 3; ++i) {
      const int64_t start = loader.window_start(b.first_sample + i);
      ASSERT_EQ(start % seq, 0);
      ASSERT_LE(start + seq + 1, source.size());
      for (int64_t t = 0; t < seq; ++t) {
        ASSERT_EQ(in[size_t(i * seq + t)], (start + t) % 50000) << "row " << i << " t " << t;
        ASSERT_EQ(tg[size_t(i * seq + t)], (start + t + 1) % 50000) << "row " << i << " t " << t;
      }
    }
  }
}

TEST(DataLoader, EpochsRollOverAndEveryWindowAppearsOncePerEpoch) {
  testing::CyclicSource source(43);  // (43 - 1) / 4 = 10 windows; the last 2 tokens are never a window start
  const int64_t seq = 4, batch = 4;  // 10 is not a multiple of 4: batches straddle epoch boundaries
  Loader loader(source, options(seq, batch));
  ASSERT_EQ(loader.samples_per_epoch(), 10);
  std::vector<int64_t> windows;
  for (int s = 0; s < 10; ++s) {  // 40 samples = 4 epochs
    const std::vector<int64_t> in = loader.next().inputs.to_vector<int64_t>();
    for (int64_t i = 0; i < batch; ++i) windows.push_back(in[size_t(i * seq)] / seq);
  }
  std::vector<std::vector<int64_t>> epochs;
  for (int e = 0; e < 4; ++e) {
    std::vector<int64_t> epoch(windows.begin() + e * 10, windows.begin() + (e + 1) * 10);
    epochs.push_back(epoch);
    std::sort(epoch.begin(), epoch.end());
    for (int64_t w = 0; w < 10; ++w) EXPECT_EQ(epoch[size_t(w)], w) << "epoch " << e;
  }
  EXPECT_FALSE(epochs[0] == epochs[1] && epochs[1] == epochs[2] && epochs[2] == epochs[3]);
}

TEST(DataLoader, ValidationIteratesWindowsInOrder) {
  testing::CyclicSource source(5000);  // 312 windows of 16 + 1
  const int64_t seq = 16, batch = 8;
  LoaderOptions o = options(seq, batch, 0, 1, /*seed=*/99);
  o.shuffle = false;
  Loader loader(source, o);
  o.seed = 1;  // the seed does not matter without shuffling
  Loader again(source, o);
  int64_t expected = 0;
  for (int s = 0; s < 40; ++s) {  // 320 samples: wraps past the 312 windows
    const Batch b = loader.next();
    EXPECT_EQ(b.inputs.to_vector<int64_t>(), again.next().inputs.to_vector<int64_t>());
    const std::vector<int64_t> in = b.inputs.to_vector<int64_t>();
    for (int64_t i = 0; i < batch; ++i, ++expected)
      ASSERT_EQ(in[size_t(i * seq)], (expected % 312) * seq) << "step " << s << " row " << i;
  }
}

TEST(DataLoader, RejectsBadOptionsNamingBothValues) {
  using testing::error_of;
  using testing::mentions;
  testing::CyclicSource tiny(16);
  EXPECT_TRUE(mentions(error_of([&] { Loader(tiny, options(16, 4)); }),
                       {"memory source (16 tokens)", "16 tokens", "corpus shorter than one window", "17"}));
  testing::CyclicSource empty(0);
  EXPECT_TRUE(
      mentions(error_of([&] { Loader(empty, options(1, 1)); }), {"0 tokens", "corpus shorter than one window"}));
  testing::CyclicSource source(5000);
  EXPECT_TRUE(mentions(error_of([&] { Loader(source, options(16, 10, 0, 4)); }),
                       {"global_batch 10 is not divisible by world size 4"}));
  EXPECT_TRUE(mentions(error_of([&] { Loader(source, options(16, 8, 4, 4)); }), {"rank 4", "[0, 4)"}));
  EXPECT_TRUE(mentions(error_of([&] { Loader(source, options(16, 8, -1, 4)); }), {"rank -1", "[0, 4)"}));
  EXPECT_TRUE(mentions(error_of([&] { Loader(source, options(0, 8)); }), {"seq_len 0"}));
  EXPECT_TRUE(mentions(error_of([&] { Loader(source, options(16, 0)); }), {"global_batch 0"}));
  Loader loader(source, options(16, 12, 1, 3));
  EXPECT_TRUE(mentions(error_of([&] { loader.set_consumed_samples(-12); }), {"consumed_samples -12", "negative"}));
  EXPECT_TRUE(mentions(error_of([&] { loader.set_consumed_samples(30); }),
                       {"consumed_samples 30", "not a multiple of global_batch 12"}));
  EXPECT_EQ(loader.consumed_samples(), 0);  // a rejected resume leaves the loader where it was
  EXPECT_EQ(error_of([&] { loader.set_consumed_samples(36); }), "<no InputError>");
  EXPECT_EQ(loader.next().first_sample, 36 + 4);
}

}  // namespace
}  // namespace daedalus::data
