// What every token source shares: memory-mapped files, concatenation, input expansion (files and
// globs) and the vocabulary check.
#include "data/source.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "autograd/check.h"
#include "data/mapped_file.h"

namespace daedalus::data {

static_assert(std::endian::native == std::endian::little, "token files are little-endian; so is the host");

namespace detail {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    DAEDALUS_CHECK(errno != ENOENT, "{}: no such file", path);
    DAEDALUS_FAIL("{}: cannot open: {}", path, std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    DAEDALUS_FAIL("{}: not a regular file", path);
  }
  size_ = int64_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      DAEDALUS_FAIL("{}: cannot memory-map {} bytes: {}", path, size_, std::strerror(err));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_t(size_));
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

ConcatSource::ConcatSource(std::vector<MappedFile> files, std::vector<TokenRun> runs, std::string description)
    : files_(std::move(files)), runs_(std::move(runs)), description_(std::move(description)) {
  offsets_.reserve(runs_.size() + 1);
  offsets_.push_back(0);
  for (const TokenRun& run : runs_) offsets_.push_back(offsets_.back() + run.count);
}

void ConcatSource::read(int64_t start, int64_t count, int32_t* out) const {
  check_read_range(*this, start, count);
  // The run holding `start`: the last offset <= start (empty runs are skipped by the loop below).
  size_t r = size_t(std::upper_bound(offsets_.begin(), offsets_.end(), start) - offsets_.begin()) - 1;
  while (count > 0) {
    const TokenRun& run = runs_[r];
    const int64_t begin = start - offsets_[r];
    const int64_t n = std::min(count, run.count - begin);
    const uint8_t* p = run.data + begin * run.width;
    if (run.width == 1) {
      for (int64_t i = 0; i < n; ++i) out[i] = int32_t(p[i]);
    } else if (run.width == 2) {
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, p + 2 * i, 2);
        out[i] = int32_t(v);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        uint32_t v;  // ids >= 2^31 wrap negative; check_vocab reports them
        std::memcpy(&v, p + 4 * i, 4);
        out[i] = int32_t(v);
      }
    }
    out += n;
    start += n;
    count -= n;
    ++r;
  }
}

void check_read_range(const TokenSource& source, int64_t start, int64_t count) {
  DAEDALUS_CHECK(start >= 0 && count >= 0 && start <= source.size() - count,
                 "{}: read of tokens [{}, {}) outside [0, {})", source.describe(), start, start + count, source.size());
}

std::string describe_files(std::string_view kind, const std::vector<std::string>& files, int64_t tokens) {
  std::string names = files.empty() ? std::string("(none)") : files.front();
  if (files.size() == 2) names += ", " + files.back();
  if (files.size() > 2) names += " .. " + files.back();
  std::string amount;
  if (tokens >= 1'000'000'000)
    amount = fmt::format("{:.2f}B", double(tokens) / 1e9);
  else if (tokens >= 1'000'000)
    amount = fmt::format("{:.1f}M", double(tokens) / 1e6);
  else if (tokens >= 10'000)
    amount = fmt::format("{:.1f}K", double(tokens) / 1e3);
  else
    amount = fmt::format("{}", tokens);
  return fmt::format("{} {} ({} file{}, {} tokens)", kind, names, files.size(), files.size() == 1 ? "" : "s", amount);
}

}  // namespace detail

std::vector<std::string> expand_inputs(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  for (const std::string& pattern : patterns) {
    if (pattern.find_first_of("*?[") == std::string::npos) {
      struct stat st {};
      DAEDALUS_CHECK(::stat(pattern.c_str(), &st) == 0, "{}: no such file", pattern);
      // A pipe or device would block in open() (or never end): token files are regular files.
      DAEDALUS_CHECK(S_ISREG(st.st_mode), "{}: not a regular file (a directory, pipe or device?)", pattern);
      files.push_back(pattern);
      continue;
    }
    glob_t g{};
    const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    std::vector<std::string> matches;
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) matches.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    DAEDALUS_CHECK(rc == 0 || rc == GLOB_NOMATCH, "{}: cannot expand the pattern (glob error {})", pattern, rc);
    DAEDALUS_CHECK(!matches.empty(), "no file matches {}", pattern);
    for (const std::string& m : matches) {
      struct stat st {};
      DAEDALUS_CHECK(::stat(m.c_str(), &st) == 0 && S_ISREG(st.st_mode),
                     "{}: not a regular file (a directory, pipe or device?), matched by {}", m, pattern);
    }
    std::sort(matches.begin(), matches.end());
    files.insert(files.end(), matches.begin(), matches.end());
  }
  return files;
}

void check_vocab(const TokenSource& source, int64_t vocab_size) {
  constexpr int64_t kChunk = 1 << 20;
  std::vector<int32_t> buf(static_cast<size_t>(std::min(kChunk, source.size())));
  for (int64_t start = 0; start < source.size(); start += kChunk) {
    const int64_t n = std::min(kChunk, source.size() - start);
    source.read(start, n, buf.data());
    for (int64_t i = 0; i < n; ++i) {
      const int32_t id = buf[size_t(i)];
      DAEDALUS_CHECK(id >= 0 && int64_t(id) < vocab_size,
                     "{}: token {} has id {}, outside the vocabulary [0, {}) (model.vocab_size {})", source.describe(),
                     start + i, id < 0 ? int64_t(uint32_t(id)) : int64_t(id), vocab_size, vocab_size);
    }
  }
}

namespace {

class SliceSource : public TokenSource {
 public:
  SliceSource(const TokenSource& source, int64_t begin, int64_t end) : source_(source), begin_(begin), end_(end) {}
  int64_t size() const override { return end_ - begin_; }
  void read(int64_t start, int64_t count, int32_t* out) const override {
    DAEDALUS_CHECK(start >= 0 && count >= 0 && start + count <= size(), "{}: tokens [{}, {}) outside [0, {})",
                   describe(), start, start + count, size());
    source_.read(begin_ + start, count, out);
  }
  std::string describe() const override {
    return fmt::format("tokens [{}, {}) of {}", begin_, end_, source_.describe());
  }

 private:
  const TokenSource& source_;
  int64_t begin_, end_;
};

}  // namespace

std::unique_ptr<TokenSource> slice_of(const TokenSource& source, int64_t begin, int64_t end) {
  DAEDALUS_CHECK(0 <= begin && begin <= end && end <= source.size(), "{}: slice [{}, {}) outside [0, {})",
                 source.describe(), begin, end, source.size());
  return std::make_unique<SliceSource>(source, begin, end);
}

}  // namespace daedalus::data
