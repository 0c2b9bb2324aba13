// safetensors: round trips of every supported dtype bit for bit, the exact bytes of a written file
// against a hand-built one that follows the spec, reading a hand-built file the way HF's writer lays
// it out, and every malformed file as an InputError naming the file and the tensor.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "tests/testing.h"
#include "train/safetensors.h"

namespace daedalus {
namespace {

using daedalus::testing::bytes;
using daedalus::testing::expect_error;

#if DAEDALUS_MINIMAL
#define SKIP_WITHOUT_JSON() GTEST_SKIP() << "built with DAEDALUS_MINIMAL (no nlohmann-json)"
#else
#define SKIP_WITHOUT_JSON() (void)0
#endif

// A fresh directory under /tmp, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    char name[] = "/tmp/daedalus_safetensors_XXXXXX";
    const char* dir = ::mkdtemp(name);
    EXPECT_NE(dir, nullptr);
    path_ = dir != nullptr ? dir : "/tmp";
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), std::streamsize(data.size()));
}
std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char(v >> (8 * i));
  return s;
}
template <typename T>
std::string raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}
// A complete file: length prefix, header padded with spaces to a multiple of 8, data.
std::string file_bytes(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return u64_le(header.size()) + header + data;
}

TEST(Safetensors, RoundTripsEveryDtypeBitForBit) {
  SKIP_WITHOUT_JSON();
  TempDir dir;
  const float nan_payload = std::bit_cast<float>(0x7FC12345u);
  const std::vector<float> specials = {0.0f,
                                       -0.0f,
                                       1.0f,
                                       -2.5f,
                                       std::numeric_limits<float>::infinity(),
                                       -std::numeric_limits<float>::infinity(),
                                       nan_payload,
                                       std::numeric_limits<float>::denorm_min(),
                                       std::numeric_limits<float>::max()};
  const NamedTensors written = {
      {"model.embed_tokens.weight", testing::random_tensor({7, 65}, 1)},
      {"specials", Tensor::from_vector(specials, {9})},
      {"bf16.weight", testing::random_tensor({3, 129}, 2, DType::bf16)},
      {"transposed", testing::random_tensor({5, 3}, 3).t()},  // strided input is written row-major
      {"ids", Tensor::from_vector<int64_t>(
                  {0, -1, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(), 42, 7}, {2, 3})},
      {"i32", Tensor::from_vector<int32_t>({std::numeric_limits<int32_t>::min(), -1, 0, 1}, {4})},
      {"loss", Tensor::from_vector<float>({3.25f}, {})},  // a 0-d scalar
      {"empty", Tensor::zeros({0, 4})},                   // zero elements, zero bytes
      {"e4m3.weight", testing::random_tensor({4, 6}, 4).to(DType::f8e4m3)},
      {"e5m2", testing::random_tensor({3}, 5).to(DType::f8e5m2)},
  };
  const std::string path = dir / "model.safetensors";
  write_safetensors(path, written, {{"format", "pt"}, {"step", "12"}});

  EXPECT_FALSE(std::filesystem::exists(path + ".tmp")) << "the temporary file must be renamed away";
  const NamedTensors read = read_safetensors(path);
  ASSERT_EQ(read.size(), written.size());
  for (size_t i = 0; i < read.size(); ++i) {
    SCOPED_TRACE(written[i].first);
    EXPECT_EQ(read[i].first, written[i].first) << "tensors come back in the order they were written";
    EXPECT_EQ(read[i].second.dtype(), written[i].second.dtype());
    EXPECT_EQ(read[i].second.shape(), written[i].second.shape());
    EXPECT_EQ(bytes(read[i].second), bytes(written[i].second));
  }
  const std::map<std::string, std::string> expected_metadata = {{"format", "pt"}, {"step", "12"}};
  EXPECT_EQ(read_safetensors_metadata(path), expected_metadata);
}

// The whole file, byte for byte, against one assembled by hand from the spec: u64 LE header length,
// compact JSON with __metadata__ first and tensors in write order, space padding to a multiple of 8,
// then the tensors' little-endian bytes back to back.
TEST(Safetensors, WritesTheSpecLayoutByteForByte) {
  SKIP_WITHOUT_JSON();
  TempDir dir;
  const std::string path = dir / "layout.safetensors";
  write_safetensors(path,
                    {{"w", Tensor::from_vector<float>({1.0f, -2.0f, 0.5f, 3.0f, 0.0f, -0.0f}, {2, 3})},
                     {"b", Tensor::from_values({1.0, -1.5}, {2}, DType::bf16)},
                     {"ids", Tensor::from_vector<int64_t>({5, -6}, {1, 2})},
                     {"n", Tensor::from_vector<int32_t>({258}, {})}},
                    {{"format", "pt"}});
  const std::string json = R"({"__metadata__":{"format":"pt"},)"
                           R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                           R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]},)"
                           R"("ids":{"dtype":"I64","shape":[1,2],"data_offsets":[28,44]},)"
                           R"("n":{"dtype":"I32","shape":[],"data_offsets":[44,48]}})";
  // IEEE-754 / two's complement, little-endian, written out by hand.
  const std::string data = std::string(
                               "\x00\x00\x80\x3f\x00\x00\x00\xc0\x00\x00\x00\x3f"   // 1, -2, 0.5
                               "\x00\x00\x40\x40\x00\x00\x00\x00\x00\x00\x00\x80",  // 3, 0, -0
                               24) +
                           std::string("\x80\x3f\xc0\xbf", 4) +                                     // bf16 1, -1.5
                           std::string("\x05\0\0\0\0\0\0\0\xfa\xff\xff\xff\xff\xff\xff\xff", 16) +  // 5, -6
                           std::string("\x02\x01\0\0", 4);                                          // 258
  const std::string expected = file_bytes(json, data);
  const std::string actual = read_file(path);
  EXPECT_EQ(actual, expected);

  // The same facts checked structurally, so a failure says which rule broke.
  ASSERT_GE(actual.size(), 8u);
  uint64_t n = 0;
  std::memcpy(&n, actual.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "the data buffer must start 8-byte aligned";
  EXPECT_EQ(actual.size(), 8 + n + 48) << "header length prefix + header + 48 data bytes";
  EXPECT_EQ(actual[8], '{');
  EXPECT_EQ(actual.substr(8 + json.size(), n - json.size()), std::string(n - json.size(), ' '));
}

// A file laid out the way HF's Rust writer does it (tensors sorted by dtype alignment then name, so the
// header's key order differs from the data order; no __metadata__), built by hand.
TEST(Safetensors, ReadsAHandBuiltFile) {
  SKIP_WITHOUT_JSON();
  TempDir dir;
  const std::string path = dir / "hf.safetensors";
  const std::string json = R"({"a.bias":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]},)"
                           R"("input_ids":{"dtype":"I64","shape":[1,2],"data_offsets":[0,16]},)"
                           R"("logits":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})";
  write_file(path, file_bytes(json, raw<int64_t>({3, 1}) + raw<float>({0.25f, -7.0f}) +
                                        raw<uint16_t>({0x3f80, 0x4000, 0xc040})));  // bf16 1, 2, -3
  const NamedTensors t = read_safetensors(path);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].first, "input_ids");
  EXPECT_EQ(t[0].second.to_vector<int64_t>(), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(t[0].second.shape(), (Shape{1, 2}));
  EXPECT_EQ(t[1].first, "logits");
  EXPECT_EQ(t[1].second.to_vector<float>(), (std::vector<float>{0.25f, -7.0f}));
  EXPECT_EQ(t[2].first, "a.bias");
  EXPECT_EQ(t[2].second.dtype(), DType::bf16);
  EXPECT_EQ(t[2].second.to_doubles(), (std::vector<double>{1.0, 2.0, -3.0}));
  EXPECT_TRUE(read_safetensors_metadata(path).empty());
}

// The read-only dtypes, widened to fp32 exactly: IEEE half (normal, subnormal, inf, -0) and E8M0
// scales (2^(code - 127)); rows of dim 0 read alone through the memory map.
TEST(Safetensors, ReadsHalfAndE8m0AsFp32AndRowRanges) {
  SKIP_WITHOUT_JSON();
  TempDir dir;
  const std::string path = dir / "widen.safetensors";
  const std::string json = R"({"h":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},)"
                           R"("s":{"dtype":"F8_E8M0","shape":[4],"data_offsets":[12,16]}})";
  // half: 1, -2, 0x0001 (2^-24), 0x7C00 (inf), 0x8000 (-0), 0x3555 (0.333251953125)
  write_file(path, file_bytes(json, raw<uint16_t>({0x3C00, 0xC000, 0x0001, 0x7C00, 0x8000, 0x3555}) +
                                        std::string("\x7f\x80\x00\x85", 4)));  // 2^0, 2^1, 2^-127, 2^6
  const SafetensorsFile f(path);
  const SafetensorsEntry* h = f.find("h");
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->dtype, "F16");
  const Tensor all = f.read(*h);
  EXPECT_EQ(all.dtype(), DType::f32);
  const std::vector<float> v = all.to_vector<float>();
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], 0x1p-24f);
  EXPECT_EQ(v[3], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(v[4] == 0.0f && std::signbit(v[4]));
  EXPECT_EQ(v[5], 0.333251953125f);
  const Tensor row1 = f.read(*h, 1, 1);
  EXPECT_EQ(row1.shape(), (Shape{1, 3}));
  EXPECT_EQ(row1.to_vector<float>()[0], std::numeric_limits<float>::infinity());
  EXPECT_EQ(f.read(*f.find("s")).to_vector<float>(), (std::vector<float>{1.0f, 2.0f, 0x1p-127f, 64.0f}));
  EXPECT_EQ(f.find("missing"), nullptr);
  expect_error([&] { f.read(*h, 1, 2); }, {path, "'h'", "rows [1, 3) out of range"});
}

TEST(Safetensors, RejectsMalformedFiles) {
  SKIP_WITHOUT_JSON();
  TempDir dir;
  const std::string f32x2 = raw<float>({1.0f, 2.0f});
  auto entry = [](const char* name, const char* dtype, const char* shape, uint64_t begin, uint64_t end) {
    return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":[{},{}]}})", name, dtype, shape, begin, end);
  };
  struct Case {
    const char* what;
    std::string bytes;
    std::vector<std::string> needles;
  };
  const std::string good = file_bytes("{" + entry("x", "F32", "[2]", 0, 8) + "}", f32x2);
  const std::vector<Case> cases = {
      {"empty file", "", {"truncated", "0 bytes"}},
      {"cut inside the length prefix", good.substr(0, 5), {"truncated", "5 bytes"}},
      {"cut inside the header", good.substr(0, 20), {"header length", "runs past the end of the file"}},
      {"cut inside the data", good.substr(0, good.size() - 3), {"'x'", "out of range", "truncated"}},
      {"header length beyond the file", u64_le(1ull << 40) + "{}", {"header length 1099511627776", "runs past"}},
      {"bad JSON", file_bytes(R"({"x":{"dtype":"F32",)", ""), {"not valid JSON"}},
      {"header not an object", file_bytes("[1,2]", ""), {"expected an object"}},
      {"unknown dtype",
       file_bytes("{" + entry("x", "C64", "[1]", 0, 8) + "}", f32x2),
       {"'x'", "unsupported dtype \"C64\"", "F32, BF16, F16, F8_E4M3, F8_E5M2, F8_E8M0, I64, I32"}},
      {"missing field", file_bytes(R"({"x":{"dtype":"F32","shape":[2]}})", f32x2), {"'x'", "data_offsets"}},
      {"negative dimension",
       file_bytes("{" + entry("x", "F32", "[-2]", 0, 8) + "}", f32x2),
       {"'x'", "not a non-negative integer"}},
      {"size does not match shape",
       file_bytes("{" + entry("x", "F32", "[3]", 0, 8) + "}", f32x2),
       {"'x'", "needs 12 bytes", "span 8"}},
      {"offsets reversed", file_bytes("{" + entry("x", "F32", "[0]", 8, 0) + "}", f32x2), {"'x'", "end before"}},
      {"offsets out of range",
       file_bytes("{" + entry("x", "F32", "[2]", 4, 12) + "}", f32x2),
       {"'x'", "[4, 12]", "out of range", "8 bytes"}},
      {"overlapping tensors",
       file_bytes("{" + entry("x", "F32", "[2]", 0, 8) + "," + entry("y", "F32", "[1]", 4, 8) + "}", f32x2),
       {"'x'", "'y'", "overlap"}},
      {"hole between tensors",
       file_bytes("{" + entry("x", "F32", "[1]", 0, 4) + "," + entry("y", "F32", "[0]", 8, 8) + "}", f32x2),
       {"'y'", "4 unused bytes before"}},
      {"trailing bytes", file_bytes("{" + entry("x", "F32", "[1]", 0, 4) + "}", f32x2), {"4 unused bytes after"}},
      {"metadata not strings", file_bytes(R"({"__metadata__":{"step":3}})", ""), {"__metadata__", "\"step\""}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string path = dir / "bad.safetensors";
    write_file(path, c.bytes);
    std::vector<std::string> needles = c.needles;
    needles.push_back(path);  // every message names the file
    expect_error([&] { read_safetensors(path); }, needles);
  }
  expect_error([&] { read_safetensors(dir / "missing.safetensors"); }, {dir / "missing.safetensors", "cannot"});
}

TEST(Safetensors, WriterRejectsBadInputAndLeavesNoFile) {
  SKIP_WITHOUT_JSON();
  TempDir dir;
  const std::string path = dir / "out.safetensors";
  expect_error(
      [&] {
        write_safetensors(path, {{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({2})}});
      },
      {path, "'a'", "twice"});
  expect_error([&] { write_safetensors(path, {{"__metadata__", Tensor::zeros({1})}}); }, {path, "invalid"});
  expect_error(
      [&] {
        write_safetensors(dir / "no/such/dir/x.safetensors", {{"a", Tensor::zeros({1})}});
      },
      {"no/such/dir/x.safetensors.tmp", "cannot create"});
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  // Overwriting replaces the old file whole.
  write_safetensors(path, {{"a", Tensor::zeros({100})}});
  write_safetensors(path, {{"b", Tensor::ones({1})}});
  const NamedTensors t = read_safetensors(path);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].first, "b");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

}  // namespace
}  // namespace daedalus
