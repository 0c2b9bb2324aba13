// Formatting of check failures: "<library> error: <detail>\n  in: <statement>", and the C++ source
// location ("at: file:line", "(file:line)" after an input error) only with DAEDALUS_DEBUG=1: users
// read messages about their config and files, developers ask for the rest.
#include "autograd/check.h"

#include <cstdlib>
#include <cstring>

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

bool debug() {
  static const bool on = [] {
    const char* v = std::getenv("DAEDALUS_DEBUG");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }();
  return on;
}
}  // namespace

void throw_check_failure(const char* library, const char* statement, const std::string& detail, const char* file,
                         int line) {
  if (debug())
    throw Error(fmt::format("{} error: {}\n  in: {}\n  at: {}:{}", library, detail, statement, short_path(file), line));
  throw Error(fmt::format("{} error: {}\n  in: {}", library, detail, statement));
}

void throw_input_error(const std::string& message, const char* file, int line) {
  if (debug()) throw InputError(fmt::format("{} ({}:{})", message, short_path(file), line));
  throw InputError(message);
}

}  // namespace daedalus::detail
