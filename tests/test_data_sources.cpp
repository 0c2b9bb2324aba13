// Token sources (llm.c shards, HDF5, text, synthetic Markov chain), input expansion, the vocab
// check and prepare-data: round trips, files written by independent writers, the synthetic
// chain's entropy rate against an empirical estimate, and every bad input as a clear InputError.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#if !DAEDALUS_MINIMAL  // the GPU-test build has neither HDF5 nor nlohmann-json
#include <hdf5.h>
#include <nlohmann/json.hpp>
#define DAEDALUS_TEST_HDF5 1
#define DAEDALUS_TEST_JSON 1
#endif

#include <fmt/format.h>

#include "data/prepare.h"
#include "data/source.h"
#include "tests/testing.h"

namespace daedalus::data {
namespace {

using daedalus::testing::error_of;
using daedalus::testing::mentions;

// A fresh directory under /tmp, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/daedalus_data_XXXXXX";
    const char* dir = ::mkdtemp(name);
    EXPECT_NE(dir, nullptr);
    path_ = dir != nullptr ? dir : "/tmp";
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::vector<int32_t> read_all(const TokenSource& source) {
  std::vector<int32_t> out(static_cast<size_t>(source.size()));
  source.read(0, source.size(), out.data());
  return out;
}

// The llm.c layout written by hand, independent of write_llmc_shard: 256 little-endian int32
// (magic, version, count, then zeros) followed by the tokens as uint16 (width 2) or uint32 (width 4).
void write_shard_by_hand(const std::string& path, int32_t magic, int32_t version, int32_t count,
                         const std::vector<uint32_t>& tokens, int width) {
  std::ofstream out(path, std::ios::binary);
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  for (uint32_t t : tokens) {
    const unsigned char b[4] = {static_cast<unsigned char>(t), static_cast<unsigned char>(t >> 8),
                                static_cast<unsigned char>(t >> 16), static_cast<unsigned char>(t >> 24)};
    out.write(reinterpret_cast<const char*>(b), width);
  }
}

// ---- llm.c shards ------------------------------------------------------------------------------

TEST(DataSource, LlmcWriterRoundTripsBothVersions) {
  TempDir dir;
  const std::vector<int32_t> v1 = {0, 1, 50256, 65535, 7, 7, 300};
  const std::vector<int32_t> v7 = {0, 65536, 128255, 1 << 30, 2147483647, 5};
  write_llmc_shard(dir / "a.bin", v1, /*version=*/1);
  write_llmc_shard(dir / "b.bin", v7, /*version=*/7);
  EXPECT_EQ(std::filesystem::file_size(dir / "a.bin"), 1024u + 2 * v1.size());
  EXPECT_EQ(std::filesystem::file_size(dir / "b.bin"), 1024u + 4 * v7.size());
  EXPECT_FALSE(std::filesystem::exists(dir / "a.bin.tmp"));
  EXPECT_EQ(read_all(*open_llmc({dir / "a.bin"})), v1);
  EXPECT_EQ(read_all(*open_llmc({dir / "b.bin"})), v7);
  // Concatenation in the order given, mixed versions, and a read spanning the boundary.
  auto both = open_llmc({dir / "b.bin", dir / "a.bin"});
  ASSERT_EQ(both->size(), int64_t(v1.size() + v7.size()));
  std::vector<int32_t> middle(4);
  both->read(4, 4, middle.data());
  EXPECT_EQ(middle, (std::vector<int32_t>{2147483647, 5, 0, 1}));
  EXPECT_TRUE(mentions(both->describe(), {"llm.c", "b.bin", "a.bin", "2 files", "13 tokens"}));
  // An empty shard is valid (and contributes nothing).
  write_llmc_shard(dir / "empty.bin", {}, 1);
  EXPECT_EQ(open_llmc({dir / "empty.bin", dir / "a.bin"})->size(), int64_t(v1.size()));
}

TEST(DataSource, LlmcReadsShardsFromAnIndependentWriter) {
  TempDir dir;
  std::vector<uint32_t> gpt2;
  for (uint32_t i = 0; i < 5000; ++i) gpt2.push_back((i * 2654435761u) % 50257u);
  gpt2.push_back(65535);
  write_shard_by_hand(dir / "v1.bin", 20240520, 1, int32_t(gpt2.size()), gpt2, 2);
  const std::vector<uint32_t> llama = {128000, 65536, 1, 70000, 128255, 0, 4000000000u >> 1};
  write_shard_by_hand(dir / "v7.bin", 20240801, 7, int32_t(llama.size()), llama, 4);

  auto s = open_llmc({dir / "v1.bin", dir / "v7.bin"});
  ASSERT_EQ(s->size(), int64_t(gpt2.size() + llama.size()));
  const std::vector<int32_t> got = read_all(*s);
  for (size_t i = 0; i < gpt2.size(); ++i) ASSERT_EQ(got[i], int32_t(gpt2[i])) << "token " << i;
  for (size_t i = 0; i < llama.size(); ++i) ASSERT_EQ(got[gpt2.size() + i], int32_t(llama[i])) << "v7 token " << i;
  // Random-access reads agree with the full read.
  std::vector<int32_t> window(10);
  s->read(int64_t(gpt2.size()) - 5, 10, window.data());
  EXPECT_TRUE(std::equal(window.begin(), window.end(), got.begin() + int64_t(gpt2.size()) - 5));
  EXPECT_TRUE(mentions(error_of([&] { s->read(s->size() - 2, 3, window.data()); }), {"outside", "v1.bin"}));
  EXPECT_TRUE(mentions(error_of([&] { s->read(-1, 1, window.data()); }), {"outside"}));
}

TEST(DataSource, LlmcBadShardsAreClearErrors) {
  TempDir dir;
  const std::vector<uint32_t> tokens = {1, 2, 3, 4};
  EXPECT_TRUE(mentions(error_of([&] { open_llmc({dir / "missing.bin"}); }), {"missing.bin", "no such file"}));

  write_shard_by_hand(dir / "magic.bin", 12345, 1, 4, tokens, 2);
  EXPECT_TRUE(mentions(error_of([&] { open_llmc({dir / "magic.bin"}); }),
                       {"magic.bin", "not an llm.c token shard", "magic 12345", "20240520", "20240801"}));

  write_shard_by_hand(dir / "version.bin", 20240520, 7, 4, tokens, 2);
  EXPECT_TRUE(mentions(error_of([&] { open_llmc({dir / "version.bin"}); }), {"version.bin", "version 7", "version 1"}));

  write_file(dir / "short.bin", std::string(100, '\0'));
  EXPECT_TRUE(mentions(error_of([&] { open_llmc({dir / "short.bin"}); }),
                       {"short.bin", "truncated", "100 bytes", "1024-byte header"}));

  // Header says 4 tokens (1032 bytes) but only 3 are there: truncated, both sizes named.
  write_shard_by_hand(dir / "trunc.bin", 20240520, 1, 4, {1, 2, 3}, 2);
  EXPECT_TRUE(mentions(error_of([&] { open_llmc({dir / "trunc.bin"}); }),
                       {"trunc.bin", "truncated", "4 tokens", "1032 bytes", "1030 bytes"}));

  // Header says 3 tokens but 4 are there: a size mismatch, distinct from truncation.
  write_shard_by_hand(dir / "long.bin", 20240801, 7, 3, tokens, 4);
  const std::string mismatch = error_of([&] { open_llmc({dir / "long.bin"}); });
  EXPECT_TRUE(mentions(mismatch, {"long.bin", "does not match", "1036 bytes", "1040 bytes"}));
  EXPECT_EQ(mismatch.find("truncated"), std::string::npos) << mismatch;

  // A good shard before a bad one: the error names the bad one.
  write_shard_by_hand(dir / "good.bin", 20240520, 1, 4, tokens, 2);
  EXPECT_TRUE(mentions(error_of([&] { open_llmc({dir / "good.bin", dir / "magic.bin"}); }), {"magic.bin"}));

  EXPECT_TRUE(mentions(error_of([&] {
                         write_llmc_shard(dir / "w.bin", {1, 65536}, 1);
                       }),
                       {"w.bin", "token 1", "65536", "version 1"}));
  EXPECT_FALSE(std::filesystem::exists(dir / "w.bin"));
  EXPECT_TRUE(mentions(error_of([&] { write_llmc_shard(dir / "w.bin", {-1}, 7); }), {"w.bin", "-1"}));
  EXPECT_TRUE(mentions(error_of([&] { write_llmc_shard(dir / "w.bin", {1}, 3); }), {"w.bin", "version 3"}));
}

TEST(DataSource, CheckVocabNamesSourcePositionAndId) {
  TempDir dir;
  std::vector<int32_t> tokens(3'000'000, 7);  // spans several scan chunks
  tokens[2'500'001] = 300;
  write_llmc_shard(dir / "t.bin", tokens, 1);
  auto s = open_llmc({dir / "t.bin"});
  EXPECT_NO_THROW(check_vocab(*s, 301));
  EXPECT_TRUE(mentions(error_of([&] { check_vocab(*s, 300); }), {"t.bin", "token 2500001", "id 300", "[0, 300)"}));
  write_llmc_shard(dir / "big.bin", {1, 2147483647}, 7);
  EXPECT_TRUE(mentions(error_of([&] { check_vocab(*open_llmc({dir / "big.bin"}), 1000); }),
                       {"big.bin", "token 1", "id 2147483647"}));
}

// ---- text and inputs ---------------------------------------------------------------------------

TEST(DataSource, TextSourceGivesTheBytes) {
  TempDir dir;
  const std::string a = "Hello, world!\n", c = "caf\xc3\xa9 \xff";  // UTF-8 and a high byte: unsigned ids
  write_file(dir / "a.txt", a);
  write_file(dir / "b.txt", "");
  write_file(dir / "c.txt", c);
  auto s = open_text({dir / "a.txt", dir / "b.txt", dir / "c.txt"});
  const std::string all = a + c;
  ASSERT_EQ(s->size(), int64_t(all.size()));
  const std::vector<int32_t> got = read_all(*s);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(got[i], int32_t(static_cast<unsigned char>(all[i]))) << i;
  EXPECT_EQ(got.back(), 255);
  EXPECT_NO_THROW(check_vocab(*s, 256));
  EXPECT_TRUE(mentions(s->describe(), {"text", "a.txt", "c.txt", "3 files"}));

  EXPECT_TRUE(mentions(error_of([&] { open_text({dir / "b.txt", dir / "b.txt"}); }), {"b.txt", "empty"}));
  EXPECT_TRUE(mentions(error_of([&] { open_text({dir / "nope.txt"}); }), {"nope.txt", "no such file"}));
}

TEST(DataSource, ExpandInputsKeepsArgumentOrderAndSortsEachGlob) {
  TempDir dir;
  for (const char* name : {"b_2.txt", "b_10.txt", "b_1.txt", "a.txt", "z.bin"}) write_file(dir / name, "x");
  const auto files = expand_inputs({dir / "z.bin", dir / "b_*.txt", dir / "a.txt"});
  EXPECT_EQ(files, (std::vector<std::string>{dir / "z.bin", dir / "b_1.txt", dir / "b_10.txt", dir / "b_2.txt",
                                             dir / "a.txt"}));
  EXPECT_EQ(expand_inputs({dir / "?.txt"}), std::vector<std::string>{dir / "a.txt"});
  EXPECT_EQ(expand_inputs({dir / "b_[12].txt"}), (std::vector<std::string>{dir / "b_1.txt", dir / "b_2.txt"}));
  EXPECT_TRUE(mentions(error_of([&] {
                         expand_inputs({dir / "a.txt", dir / "*.parquet"});
                       }),
                       {"no file matches", "*.parquet"}));
  EXPECT_TRUE(mentions(error_of([&] { expand_inputs({dir / "missing.txt"}); }), {"missing.txt", "no such file"}));
}

// ---- HDF5 --------------------------------------------------------------------------------------

#ifdef DAEDALUS_TEST_HDF5
// Writes `values` as dataset `name` with file type `file_type`, through the plain HDF5 C API.
template <typename T>
void write_h5(const std::string& path, const std::string& name, hid_t file_type, hid_t mem_type,
              const std::vector<T>& values, std::vector<hsize_t> dims = {}) {
  if (dims.empty()) dims = {hsize_t(values.size())};
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hid_t space = H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  const hid_t dset = H5Dcreate2(file, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(H5Dwrite(dset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  H5Dclose(dset);
  H5Sclose(space);
  H5Fclose(file);
}

TEST(DataSource, Hdf5RoundTripsIntegerDatasets) {
  TempDir dir;
  std::vector<int32_t> i32(10000);
  for (size_t i = 0; i < i32.size(); ++i) i32[i] = int32_t((i * 7919) % 100000);
  const std::vector<uint16_t> u16 = {0, 1, 65535, 50256, 12};
  write_h5(dir / "a.h5", "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, i32);
  write_h5(dir / "b.h5", "tokens", H5T_STD_U16BE, H5T_NATIVE_UINT16, u16);  // big-endian on disk: HDF5 converts
  auto s = open_hdf5({dir / "a.h5", dir / "b.h5"});
  ASSERT_EQ(s->size(), int64_t(i32.size() + u16.size()));
  const std::vector<int32_t> got = read_all(*s);
  for (size_t i = 0; i < i32.size(); ++i) ASSERT_EQ(got[i], i32[i]) << i;
  for (size_t i = 0; i < u16.size(); ++i) ASSERT_EQ(got[i32.size() + i], int32_t(u16[i])) << i;
  std::vector<int32_t> window(6);
  s->read(int64_t(i32.size()) - 3, 6, window.data());  // a hyperslab in each file
  EXPECT_EQ(window, (std::vector<int32_t>{i32[9997], i32[9998], i32[9999], 0, 1, 65535}));
  EXPECT_TRUE(mentions(s->describe(), {"HDF5", "tokens", "a.h5", "b.h5"}));
  // Another dataset name, and an int64 file type read as int32.
  write_h5(dir / "g.h5", "ids", H5T_STD_I64LE, H5T_NATIVE_INT32, std::vector<int32_t>{4, 5, 6});
  EXPECT_EQ(read_all(*open_hdf5({dir / "g.h5"}, "ids")), (std::vector<int32_t>{4, 5, 6}));
}

TEST(DataSource, Hdf5BadFilesAreClearErrors) {
  TempDir dir;
  EXPECT_TRUE(mentions(error_of([&] { open_hdf5({dir / "none.h5"}); }), {"none.h5", "no such file"}));
  write_file(dir / "text.h5", "not hdf5");
  EXPECT_TRUE(mentions(error_of([&] { open_hdf5({dir / "text.h5"}); }), {"text.h5", "not an HDF5 file"}));
  write_h5(dir / "other.h5", "ids", H5T_STD_I32LE, H5T_NATIVE_INT32, std::vector<int32_t>{1, 2});
  EXPECT_TRUE(mentions(error_of([&] { open_hdf5({dir / "other.h5"}); }), {"other.h5", "no dataset 'tokens'"}));
  write_h5(dir / "rank2.h5", "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, std::vector<int32_t>{1, 2, 3, 4}, {2, 2});
  EXPECT_TRUE(mentions(error_of([&] { open_hdf5({dir / "rank2.h5"}); }), {"rank2.h5", "'tokens'", "rank 2", "1-d"}));
  write_h5(dir / "float.h5", "tokens", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, std::vector<float>{1.5f});
  EXPECT_TRUE(mentions(error_of([&] { open_hdf5({dir / "float.h5"}); }),
                       {"float.h5", "'tokens'", "floating-point", "integers"}));
}
#endif

// ---- synthetic ---------------------------------------------------------------------------------

TEST(DataSource, SyntheticIsDeterministicForASeed) {
  SyntheticSpec spec;
  spec.vocab = 50;
  spec.tokens = 20000;
  spec.seed = 99;
  const auto a = read_all(*open_synthetic(spec));
  const auto b = read_all(*open_synthetic(spec));
  EXPECT_EQ(a, b);
  EXPECT_EQ(open_synthetic(spec)->entropy_rate_nats(), open_synthetic(spec)->entropy_rate_nats());
  spec.seed = 100;
  EXPECT_NE(read_all(*open_synthetic(spec)), a);
  for (int32_t t : a) ASSERT_TRUE(t >= 0 && t < 50) << t;
  // Each token has at most `branching` distinct successors.
  std::map<int32_t, std::set<int32_t>> next;
  for (size_t i = 1; i < a.size(); ++i) next[a[i - 1]].insert(a[i]);
  for (const auto& [s, succ] : next) EXPECT_LE(succ.size(), 4u) << "after " << s;
  // branching 1 is a deterministic chain: entropy rate exactly 0.
  spec.branching = 1;
  EXPECT_EQ(open_synthetic(spec)->entropy_rate_nats(), 0.0);
}

// Plug-in conditional entropy from counts of (context, next) over the sample, with the
// Miller-Madow correction sum_s (k_s - 1) / 2N (k_s = distinct successors seen after s), which
// removes the estimator's O(1/N) downward bias.
double empirical_entropy_rate(const std::vector<int32_t>& x, int order, int64_t vocab) {
  std::map<int64_t, std::map<int32_t, int64_t>> counts;
  int64_t n = 0;
  for (size_t i = size_t(order); i < x.size(); ++i) {
    int64_t c = 0;
    for (int k = order; k >= 1; --k) c = c * vocab + x[i - size_t(k)];
    ++counts[c][x[i]];
    ++n;
  }
  double h = 0;
  for (const auto& [c, next] : counts) {
    int64_t total = 0;
    for (const auto& [t, k] : next) total += k;
    for (const auto& [t, k] : next) h -= double(k) / double(n) * std::log(double(k) / double(total));
    h += double(next.size() - 1) / (2.0 * double(n));
  }
  return h;
}

TEST(DataSource, SyntheticEntropyRateMatchesAnEmpiricalEstimate) {
  // N = 2M tokens. After the Miller-Madow correction the bias is O(1/N^2). The estimate's standard
  // deviation is sqrt(Var(-log p(x_i | ctx)) * tau / N): per-token variance < 1 nat^2 for <= 4
  // successors, tau a few steps of autocorrelation of the context entropy on a fast-mixing sparse
  // random chain, so sigma ~ 1e-3 at most. Tolerance 6e-3 is > 5 sigma, while a wrong stationary
  // distribution (e.g. uniform instead of pi) shifts H by ~1e-2 on these chains.
  for (int order : {1, 2}) {
    SyntheticSpec spec;
    spec.order = order;
    spec.vocab = order == 1 ? 64 : 16;
    spec.branching = order == 1 ? 4 : 3;
    spec.tokens = 2'000'000;
    spec.seed = 2024 + uint64_t(order);
    auto s = open_synthetic(spec);
    const double exact = s->entropy_rate_nats();
    const double estimate = empirical_entropy_rate(read_all(*s), order, spec.vocab);
    EXPECT_GT(exact, 0.1);
    EXPECT_LT(exact, std::log(double(spec.branching)));
    EXPECT_NEAR(estimate, exact, 6e-3) << "order " << order;
    EXPECT_TRUE(mentions(s->describe(), {"synthetic", "order", "entropy rate"}));
  }
}

TEST(DataSource, SyntheticRejectsBadSpecs) {
  SyntheticSpec spec;
  spec.order = 4;
  EXPECT_TRUE(mentions(error_of([&] { open_synthetic(spec); }), {"order", "4", "[1, 3]"}));
  spec.order = 3;  // 256^3 contexts
  EXPECT_TRUE(mentions(error_of([&] { open_synthetic(spec); }), {"vocab^order", "2^22"}));
  spec = SyntheticSpec{};
  spec.branching = 300;
  EXPECT_TRUE(mentions(error_of([&] { open_synthetic(spec); }), {"branching", "300"}));
  spec = SyntheticSpec{};
  spec.tokens = 0;
  EXPECT_TRUE(mentions(error_of([&] { open_synthetic(spec); }), {"tokens"}));
}

// ---- prepare-data ------------------------------------------------------------------------------

TEST(DataPrepare, WritesTrainShardsValShardAndSummary) {
  TempDir dir;
  std::string texts[3];
  for (int f = 0; f < 3; ++f) {
    for (int i = 0; i < 40 + 17 * f; ++i) texts[f] += char('a' + (i * (f + 3)) % 26);
    texts[f] += "\xe2\x82\xac";  // a multi-byte character
  }
  std::filesystem::create_directories(dir / "in");
  for (int f = 0; f < 3; ++f) write_file(dir / fmt::format("in/part{}.txt", f), texts[f]);
  const std::string joined = texts[0] + "\n" + texts[1] + "\n" + texts[2];

  // A stale shard from an earlier, larger run must disappear.
  std::filesystem::create_directories(dir / "out");
  write_file(dir / "out/train_000099.bin", "stale");

  int64_t last_done = -1, last_total = -1;
  const PrepareSummary sum = prepare_data(
      {dir / "in/part*.txt"}, dir / "out", /*val_fraction=*/0.1,
      [&](int64_t done, int64_t total) {
        EXPECT_GE(done, last_done);
        last_done = done;
        last_total = total;
      },
      /*max_shard_tokens=*/50);
  const int64_t bytes = int64_t(texts[0].size() + texts[1].size() + texts[2].size());
  EXPECT_EQ(sum.files, 3);
  EXPECT_EQ(sum.bytes, bytes);
  EXPECT_EQ(last_done, bytes);
  EXPECT_EQ(last_total, bytes);
  EXPECT_EQ(sum.train_tokens + sum.val_tokens, bytes + 2);  // + one '\n' between consecutive files
  EXPECT_EQ(sum.val_tokens, int64_t(std::floor(double(bytes + 2) * 0.1)));
  const int64_t train_shards = (sum.train_tokens + 49) / 50;
  ASSERT_EQ(int64_t(sum.shards.size()), train_shards + 1);
  EXPECT_EQ(sum.shards.front(), dir / "out/train_000000.bin");
  EXPECT_EQ(sum.shards.back(), dir / "out/val_000000.bin");
  EXPECT_FALSE(std::filesystem::exists(dir / "out/train_000099.bin"));

  // Reading the shards back (train glob, then val) gives the text, the val part being its end.
  auto train = open_llmc(expand_inputs({dir / "out/train_*.bin"}));
  auto val = open_llmc({dir / "out/val_000000.bin"});
  EXPECT_EQ(train->size(), sum.train_tokens);
  EXPECT_EQ(val->size(), sum.val_tokens);
  std::string back;
  for (int32_t t : read_all(*train)) back += char(t);
  for (int32_t t : read_all(*val)) back += char(t);
  EXPECT_EQ(back, joined);

#ifdef DAEDALUS_TEST_JSON
  std::ifstream in(dir / "out/summary.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["files"].get<int64_t>(), 3);
  EXPECT_EQ(j["bytes"].get<int64_t>(), bytes);
  EXPECT_EQ(j["train_tokens"].get<int64_t>(), sum.train_tokens);
  EXPECT_EQ(j["val_tokens"].get<int64_t>(), sum.val_tokens);
  EXPECT_EQ(j["val_shards"], nlohmann::json::array({"val_000000.bin"}));
  EXPECT_EQ(int64_t(j["train_shards"].size()), train_shards);
  EXPECT_EQ(j["inputs"][2].get<std::string>(), dir / "in/part2.txt");
#endif

  // val_fraction 0: every token trains, no val shard.
  const PrepareSummary all_train = prepare_data({dir / "in/part0.txt"}, dir / "out0", 0.0);
  EXPECT_EQ(all_train.val_tokens, 0);
  EXPECT_EQ(all_train.shards, std::vector<std::string>{dir / "out0/train_000000.bin"});
}

TEST(DataPrepare, BadInputsAreClearErrors) {
  TempDir dir;
  write_file(dir / "a.txt", "some text");
  write_file(dir / "empty1.txt", "");
  write_file(dir / "empty2.txt", "");
  EXPECT_TRUE(mentions(error_of([&] { prepare_data({dir / "a.txt"}, dir / "out", 0.6); }),
                       {"val-fraction", "0.6", "[0, 0.5]"}));
  EXPECT_TRUE(mentions(error_of([&] { prepare_data({dir / "a.txt"}, dir / "out", -0.1); }), {"val-fraction"}));
  EXPECT_TRUE(mentions(error_of([&] { prepare_data({dir / "*.md"}, dir / "out"); }), {"no file matches", "*.md"}));
  EXPECT_TRUE(mentions(error_of([&] { prepare_data({dir / "b.txt"}, dir / "out"); }), {"b.txt", "no such file"}));
  EXPECT_TRUE(mentions(error_of([&] { prepare_data({dir / "empty*.txt"}, dir / "out"); }),
                       {"empty1.txt", "empty2.txt", "empty"}));
  EXPECT_TRUE(
      mentions(error_of([&] { prepare_data({dir / "a.txt"}, dir / "a.txt/out"); }), {"a.txt/out", "cannot create"}));
}

}  // namespace
}  // namespace daedalus::data
