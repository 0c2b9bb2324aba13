// A function run in a forked child (see isolated.h).
#include "train/isolated.h"

#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "autograd/check.h"

namespace daedalus::train {

namespace {

enum : int { kOk = 0, kInputError = 3, kError = 4 };  // the child's exit codes

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += size_t(n);
  }
}

[[noreturn]] void child(int fd, const std::function<void()>& fn) {
  // A crash here is an outcome to report, not a job to tear down: no MPI or CUDA crash handlers.
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) ::signal(sig, SIG_DFL);
  int code = kOk;
  try {
    fn();
  } catch (const InputError& e) {
    write_all(fd, e.what());
    code = kInputError;
  } catch (const std::exception& e) {
    write_all(fd, e.what());
    code = kError;
  } catch (...) {
    write_all(fd, "unknown exception");
    code = kError;
  }
  ::close(fd);
  ::_exit(code);  // no atexit handlers, no stdio flush: those belong to the parent
}

}  // namespace

IsolatedOutcome run_isolated(const std::function<void()>& fn, double timeout_s) {
  int fds[2];
  if (::pipe(fds) != 0) throw Error(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw Error(fmt::format("cannot fork: {}", std::strerror(errno)));
  }
  if (pid == 0) {
    ::close(fds[0]);
    child(fds[1], fn);
  }
  ::close(fds[1]);

  IsolatedOutcome out;
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  bool timed_out = false;
  for (;;) {
    const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int r = ::poll(&p, 1, int(std::min(left * 1000.0, 1000.0)) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buffer[4096];
    const ssize_t n = ::read(fds[0], buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child closed its end (done or dead)
    if (text.size() < 64 * 1024) text.append(buffer, size_t(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    out.kind = IsolatedOutcome::Kind::timed_out;
    out.text = fmt::format("did not finish within {:.0f} s", timeout_s);
  } else if (WIFSIGNALED(status)) {
    out.kind = IsolatedOutcome::Kind::crashed;
    out.text = fmt::format("crashed with signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == kOk) {
    out.kind = IsolatedOutcome::Kind::ok;
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == kInputError) {
    out.kind = IsolatedOutcome::Kind::input_error;
    out.text = text;
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == kError) {
    out.kind = IsolatedOutcome::Kind::error;
    out.text = text;
  } else {
    out.kind = IsolatedOutcome::Kind::crashed;
    out.text = fmt::format("exited with status {}", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  return out;
}

}  // namespace daedalus::train
