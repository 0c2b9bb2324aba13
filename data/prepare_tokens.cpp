// prepare-data with a tokenizer (see prepare.h): documents read in order on the calling thread,
// encoded in batches on worker threads (one Encoder each, so the word caches persist), appended
// in input order to a temporary token file; once the total is known, split into train and val
// shard sets, committed together.
#include <openssl/evp.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "autograd/check.h"
#include "data/documents.h"
#include "data/mapped_file.h"
#include "data/prepare.h"
#include "data/prepare_common.h"
#include "data/shard_writer.h"
#include "data/source.h"
#include "data/tokenizer.h"

namespace daedalus::data {

namespace {

constexpr size_t kBatchBytes = 1 << 20;  // documents per batch: about 1 MB of text

// Documents of one file handed to a worker: JSONL lines (with their numbers) or one
// whole text file; the worker fills ids (each document as [BOS] ids EOS) or error.
struct Batch {
  const std::string* file = nullptr;
  bool jsonl = false;
  std::vector<std::string> texts;
  std::vector<int64_t> line_numbers;  // jsonl: the line of each text
  int64_t done_bytes = 0;             // on-disk bytes of all inputs consumed once this batch is read
  std::vector<int32_t> ids;
  int64_t documents = 0;
  std::exception_ptr error;
};

struct Encoding {
  const Tokenizer& tokenizer;
  const TokenizedOptions& options;
  int32_t bos = -1, eos = -1;
};

// The document of one JSONL line, or nothing for a blank line; InputError naming file and line.
bool document_of_line(const std::string& line, const Batch& batch, size_t k, const std::string& key,
                      std::string& text) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return false;
  const std::string where = fmt::format("{}:{}", *batch.file, batch.line_numbers[k]);
  const nlohmann::json j = parse_object_line(line, where);
  const auto it = j.find(key);
  DAEDALUS_CHECK(it != j.end(), "{}: no key \"{}\" (--text-key) in the object", where, key);
  DAEDALUS_CHECK(it->is_string(), "{}: key \"{}\" is a {}, not a string", where, key, it->type_name());
  text = it->get<std::string>();
  return true;
}

void encode_batch(Batch& batch, Encoder& encoder, const Encoding& enc) {
  try {
    std::string text;
    for (size_t k = 0; k < batch.texts.size(); ++k) {
      const std::string* doc = &batch.texts[k];
      if (batch.jsonl) {
        if (!document_of_line(batch.texts[k], batch, k, enc.options.text_key, text)) continue;
        doc = &text;
      }
      if (enc.bos >= 0) batch.ids.push_back(enc.bos);
      encoder.encode(*doc, batch.ids);
      batch.ids.push_back(enc.eos);
      ++batch.documents;
    }
  } catch (...) {
    batch.error = std::current_exception();
  }
}

// A raw token file (uint16 or uint32 little-endian), removed when this goes out of scope.
class TokenFile {
 public:
  TokenFile(std::string path, int width) : path_(std::move(path)), width_(width) {
    file_ = std::fopen(path_.c_str(), "wb");
    DAEDALUS_CHECK(file_ != nullptr, "{}: cannot create: {}", path_, std::strerror(errno));
  }
  ~TokenFile() {
    if (file_ != nullptr) std::fclose(file_);
    std::remove(path_.c_str());
  }
  void append(const std::vector<int32_t>& ids) {
    detail::pack_tokens(ids.data(), int64_t(ids.size()), width_, buffer_);
    DAEDALUS_CHECK(buffer_.empty() || std::fwrite(buffer_.data(), buffer_.size(), 1, file_) == 1,
                   "{}: write failed: {}", path_, std::strerror(errno));
    count_ += int64_t(ids.size());
  }
  void close() {
    const bool ok = std::fclose(file_) == 0;
    file_ = nullptr;
    DAEDALUS_CHECK(ok, "{}: write failed: {}", path_, std::strerror(errno));
  }
  int64_t count() const { return count_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int width_;
  std::FILE* file_ = nullptr;
  int64_t count_ = 0;
  std::vector<uint8_t> buffer_;
};

std::string sha256_hex(const std::string& path) {
  const detail::MappedFile file(path);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  DAEDALUS_CHECK(EVP_Digest(file.data(), size_t(file.size()), digest, &length, EVP_sha256(), nullptr) == 1,
                 "{}: SHA-256 failed", path);
  std::string hex;
  for (unsigned i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

}  // namespace

PrepareSummary prepare_tokenized(const std::vector<std::string>& inputs, const std::string& out_dir,
                                 double val_fraction, const TokenizedOptions& options, const PrepareProgress& progress,
                                 int64_t max_shard_tokens) {
  detail::check_prepare_options(inputs, val_fraction, max_shard_tokens);
  const std::vector<std::string> files = expand_inputs(inputs);
  const Tokenizer tokenizer = Tokenizer::load(options.tokenizer);
  Encoding enc{tokenizer, options};
  DAEDALUS_CHECK(tokenizer.eos_id(), "{}: no eos_token (tokenizer_config.json beside it must name one)",
                 options.tokenizer);
  enc.eos = *tokenizer.eos_id();
  if (options.bos) {
    DAEDALUS_CHECK(tokenizer.bos_id(), "{}: --bos, but no bos_token (tokenizer_config.json beside it must name one)",
                   options.tokenizer);
    enc.bos = *tokenizer.bos_id();
  }
  PrepareSummary summary;
  summary.files = int64_t(files.size());
  for (const std::string& path : files) summary.bytes += int64_t(std::filesystem::file_size(path));
  summary.version = tokenizer.vocab_size() > 65536 ? 7 : 1;
  const int width = summary.version == 1 ? 2 : 4;
  detail::make_output_dir(out_dir);

  const int threads = options.threads > 0 ? options.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<Encoder> encoders;
  for (int t = 0; t < threads; ++t) encoders.emplace_back(tokenizer);
  TokenFile tokens((std::filesystem::path(out_dir) / "tokens.tmp").string(), width);

  // Rounds: read up to 4 batches per thread, encode them in parallel, append them in order.
  std::vector<Batch> round;
  auto run_round = [&] {
    std::atomic<size_t> next{0};
    auto work = [&](int t) {
      for (size_t b = next++; b < round.size(); b = next++) encode_batch(round[b], encoders[size_t(t)], enc);
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
    work(0);
    for (std::thread& th : pool) th.join();
    for (Batch& batch : round) {
      if (batch.error) std::rethrow_exception(batch.error);
      tokens.append(batch.ids);
      summary.documents += batch.documents;
      if (progress) progress(batch.done_bytes, summary.bytes);
    }
    round.clear();
  };
  auto add_batch = [&](Batch&& batch) {
    round.push_back(std::move(batch));
    if (round.size() >= size_t(4 * threads)) run_round();
  };

  int64_t finished_bytes = 0;  // on-disk bytes of the files read completely
  for (const std::string& path : files) {
    if (!is_jsonl(path)) {
      Batch batch;
      batch.file = &path;
      batch.texts.push_back(read_whole(path));
      summary.text_bytes += int64_t(batch.texts.back().size());
      finished_bytes += int64_t(std::filesystem::file_size(path));
      batch.done_bytes = finished_bytes;
      if (batch.texts.back().empty()) continue;  // an empty file is no document
      add_batch(std::move(batch));
      continue;
    }
    LineReader reader(path);
    std::string_view line;
    const auto new_batch = [&] {
      Batch b;
      b.file = &path;
      b.jsonl = true;
      return b;
    };
    Batch batch = new_batch();
    size_t batch_bytes = 0;
    while (reader.next(line)) {
      batch.texts.emplace_back(line);
      summary.text_bytes += int64_t(line.size()) + 1;
      batch.line_numbers.push_back(reader.line_number());
      batch_bytes += line.size();
      if (batch_bytes >= kBatchBytes) {
        batch.done_bytes = finished_bytes + reader.position();
        add_batch(std::move(batch));
        batch = new_batch();
        batch_bytes = 0;
      }
    }
    finished_bytes += int64_t(std::filesystem::file_size(path));
    batch.done_bytes = finished_bytes;
    if (!batch.texts.empty()) add_batch(std::move(batch));
  }
  run_round();
  tokens.close();
  DAEDALUS_CHECK(summary.documents > 0, "{}: no documents (every file is empty, or every JSONL line blank)",
                 detail::describe_files("prepare-data inputs", files, 0));

  // Split: the last val_tokens tokens go to the val shards.
  const int64_t total = tokens.count();
  summary.val_tokens = detail::val_tokens(total, val_fraction);
  summary.train_tokens = total - summary.val_tokens;
  detail::ShardSet train(out_dir, "train", summary.version, max_shard_tokens);
  detail::ShardSet valid(out_dir, "val", summary.version, max_shard_tokens);
  {
    const detail::MappedFile all(tokens.path());
    std::vector<int32_t> chunk;
    constexpr int64_t kChunk = 1 << 22;
    for (int64_t start = 0; start < total; start += kChunk) {
      const int64_t n = std::min(kChunk, total - start);
      chunk.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i) {
        uint32_t v = 0;
        std::memcpy(&v, all.data() + (start + i) * width, size_t(width));
        chunk[size_t(i)] = int32_t(v);
      }
      const int64_t to_train = std::clamp(summary.train_tokens - start, int64_t(0), n);
      train.append(chunk.data(), to_train);
      valid.append(chunk.data() + to_train, n - to_train);
    }
  }
  detail::finish_shards(train, valid, out_dir, summary);

  nlohmann::json j = detail::summary_json(files, summary, val_fraction, train, valid);
  j["format"] = summary.version == 1 ? "llm.c version 1 (uint16 tokens)" : "llm.c version 7 (uint32 tokens)";
  j["tokenizer"] = options.tokenizer;
  j["tokenizer_sha256"] = sha256_hex(options.tokenizer);
  j["vocab_size"] = tokenizer.vocab_size();
  j["bos_id"] = enc.bos >= 0 ? nlohmann::json(enc.bos) : nlohmann::json();
  j["eos_id"] = enc.eos;
  j["text_key"] = options.text_key;
  j["text_bytes"] = summary.text_bytes;
  j["documents"] = summary.documents;
  detail::write_summary(out_dir, j.dump(2));
  return summary;
}

}  // namespace daedalus::data
