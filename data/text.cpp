// Raw text through the byte-level tokenizer: token = unsigned byte value (vocab 256), files
// memory-mapped and concatenated in the order given, nothing inserted between them.
#include <string>

#include "autograd/check.h"
#include "data/mapped_file.h"
#include "data/source.h"

namespace daedalus::data {

std::unique_ptr<TokenSource> open_text(const std::vector<std::string>& files) {
  DAEDALUS_CHECK(!files.empty(), "text corpus: no files given");
  std::vector<detail::MappedFile> mapped;
  std::vector<detail::TokenRun> runs;
  int64_t tokens = 0;
  for (const std::string& path : files) {
    mapped.emplace_back(path);
    runs.push_back({mapped.back().data(), mapped.back().size(), /*width=*/1});
    tokens += mapped.back().size();
  }
  std::string description = detail::describe_files("text", files, tokens);
  DAEDALUS_CHECK(tokens > 0, "{}: the text corpus is empty (every file has 0 bytes)", description);
  return std::make_unique<detail::ConcatSource>(std::move(mapped), std::move(runs), std::move(description));
}

}  // namespace daedalus::data
