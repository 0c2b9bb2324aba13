// Formatting of check failures: "<library> error: <detail>\n  in: <statement>\n  at: file:line".
#include "autograd/check.h"

namespace daedalus::detail {

namespace {
// Paths as the compiler saw them can be long; keep them relative to the source tree.
const char* short_path(const char* file) {
  std::string_view path(file);
  for (const char* room : {"autograd/", "fp8/", "parallel/", "data/", "model/", "train/", "tests/", "bench/"}) {
    if (auto pos = path.rfind(room); pos != std::string_view::npos) return file + pos;
  }
  return file;
}
}  // namespace

void throw_check_failure(const char* library, const char* statement, const std::string& detail, const char* file,
                         int line) {
  throw Error(fmt::format("{} error: {}\n  in: {}\n  at: {}:{}", library, detail, statement, short_path(file), line));
}

void throw_input_error(const std::string& message, const char* file, int line) {
  throw InputError(fmt::format("{} ({}:{})", message, short_path(file), line));
}

}  // namespace daedalus::detail
