// prepare-data without a tokenizer: byte-tokenize text files into llm.c version-1 shards plus a
// summary.json. Streams: each input is memory-mapped and copied in chunks straight into the shards.
// The checks and the summary that both prepare paths share are here too (prepare_common.h).
#include "data/prepare.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#if !DAEDALUS_MINIMAL  // the GPU-test build has no nlohmann-json
#define DAEDALUS_HAVE_JSON 1
#endif

#include "autograd/check.h"
#include "data/mapped_file.h"
#include "data/prepare_common.h"
#include "data/shard_writer.h"
#include "data/source.h"

namespace daedalus::data {

namespace detail {

void check_prepare_options(const std::vector<std::string>& inputs, double val_fraction, int64_t max_shard_tokens) {
  DAEDALUS_CHECK(val_fraction >= 0.0 && val_fraction <= 0.5, "prepare-data: --val-fraction {} is outside [0, 0.5]",
                 val_fraction);
  DAEDALUS_CHECK(max_shard_tokens > 0, "prepare-data: shard size {} must be positive", max_shard_tokens);
  DAEDALUS_CHECK(!inputs.empty(), "prepare-data: no --input given");
}

int64_t val_tokens(int64_t total, double val_fraction) {
  int64_t val = int64_t(std::floor(double(total) * val_fraction));
  if (val_fraction > 0 && val == 0 && total >= 2) val = 1;  // a requested val split is never empty
  return val;
}

void make_output_dir(const std::string& out_dir) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  DAEDALUS_CHECK(!ec && std::filesystem::is_directory(out_dir), "{}: cannot create the output directory: {}", out_dir,
                 ec ? ec.message() : "exists and is not a directory");
}

void finish_shards(ShardSet& train, ShardSet& valid, const std::string& out_dir, PrepareSummary& summary) {
  train.commit();
  valid.commit();
  std::vector<std::string> written = train.names();
  written.insert(written.end(), valid.names().begin(), valid.names().end());
  remove_stale_shards(out_dir, written);
  for (const std::string& name : written) summary.shards.push_back((std::filesystem::path(out_dir) / name).string());
}

void write_summary(const std::string& out_dir, const std::string& json_text) {
  const std::string path = (std::filesystem::path(out_dir) / "summary.json").string();
  std::ofstream out(path);
  out << json_text << "\n";
  out.close();
  DAEDALUS_CHECK(out.good(), "{}: write failed", path);
}

#ifdef DAEDALUS_HAVE_JSON
nlohmann::json summary_json(const std::vector<std::string>& files, const PrepareSummary& summary, double val_fraction,
                            const ShardSet& train, const ShardSet& valid) {
  nlohmann::json j;
  j["inputs"] = files;
  j["files"] = summary.files;
  j["bytes"] = summary.bytes;
  j["tokens"] = summary.train_tokens + summary.val_tokens;
  j["train_tokens"] = summary.train_tokens;
  j["val_tokens"] = summary.val_tokens;
  j["val_fraction"] = val_fraction;
  j["train_shards"] = train.names();
  j["val_shards"] = valid.names();
  return j;
}
#endif

}  // namespace detail

PrepareSummary prepare_data(const std::vector<std::string>& inputs, const std::string& out_dir, double val_fraction,
                            const PrepareProgress& progress, int64_t max_shard_tokens) {
  detail::check_prepare_options(inputs, val_fraction, max_shard_tokens);
  const std::vector<std::string> files = expand_inputs(inputs);

  std::vector<detail::MappedFile> mapped;
  PrepareSummary summary;
  for (const std::string& path : files) {
    mapped.emplace_back(path);
    summary.bytes += mapped.back().size();
  }
  summary.files = int64_t(files.size());
  DAEDALUS_CHECK(summary.bytes > 0, "{}: the text corpus is empty (every file has 0 bytes)",
                 detail::describe_files("prepare-data inputs", files, 0));

  const int64_t total = summary.bytes + summary.files - 1;  // one '\n' between consecutive files
  summary.val_tokens = detail::val_tokens(total, val_fraction);
  summary.train_tokens = total - summary.val_tokens;
  detail::make_output_dir(out_dir);

  constexpr int64_t kChunkBytes = 16 << 20;
  detail::ShardSet train(out_dir, "train", 1, max_shard_tokens), valid(out_dir, "val", 1, max_shard_tokens);
  int64_t position = 0, done = 0;  // tokens routed so far, input bytes read so far
  auto emit = [&](const uint8_t* bytes, int64_t n) {
    const int64_t to_train = std::clamp(summary.train_tokens - position, int64_t(0), n);
    train.append(bytes, to_train);
    valid.append(bytes + to_train, n - to_train);
    position += n;
  };
  const uint8_t newline = '\n';
  for (size_t f = 0; f < mapped.size(); ++f) {
    if (f > 0) emit(&newline, 1);
    for (int64_t off = 0; off < mapped[f].size(); off += kChunkBytes) {
      const int64_t n = std::min(kChunkBytes, mapped[f].size() - off);
      emit(mapped[f].data() + off, n);
      done += n;
      if (progress) progress(done, summary.bytes);
    }
  }
  DAEDALUS_ASSERT(position == total);
  detail::finish_shards(train, valid, out_dir, summary);

#ifdef DAEDALUS_HAVE_JSON
  nlohmann::json j = detail::summary_json(files, summary, val_fraction, train, valid);
  j["format"] = "llm.c version 1 (uint16 tokens)";
  j["tokenizer"] = "bytes";
  j["vocab_size"] = 256;
  j["separator"] = "\n";
  detail::write_summary(out_dir, j.dump(2));
#endif
  return summary;
}

}  // namespace daedalus::data
