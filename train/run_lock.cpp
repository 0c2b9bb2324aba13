// The run-directory lock (see run_lock.h).
#include "train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "autograd/check.h"

namespace daedalus::train {

namespace {

std::string read_holder(int fd) {
  char buffer[512] = {};
  const ssize_t n = ::pread(fd, buffer, sizeof(buffer) - 1, 0);
  std::string s = n > 0 ? std::string(buffer, size_t(n)) : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s.empty() ? "a process that has not written its name yet" : s;
}

}  // namespace

RunDirLock::RunDirLock(const std::string& dir) {
  const std::string path = dir + "/daedalus.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw InputError(fmt::format("run.dir: cannot open {}: {}", path, std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    if (e == EWOULDBLOCK) {
      const std::string holder = read_holder(fd);
      ::close(fd);
      throw InputError(
          fmt::format("run.dir: {} is in use by another trainer ({}): wait for it to end, or give this run another "
                      "run.dir (two trainers in one directory would mix their checkpoints and metrics)",
                      dir, holder));
    }
    ::close(fd);
    if (e == ENOLCK || e == EOPNOTSUPP || e == EINVAL) return;  // no locks here: run unlocked
    throw Error(fmt::format("run.dir: cannot lock {}: {}", path, std::strerror(e)));
  }
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char when[64] = {};
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  const std::string me = fmt::format("host {}, pid {}, since {}\n", host, ::getpid(), when);
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != ssize_t(me.size())) {
    // The lock holds regardless; only the holder's name would be missing from a rival's message.
  }
  fd_ = fd;
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

RunDirLock& RunDirLock::operator=(RunDirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

}  // namespace daedalus::train
