// One trainer per run directory: an advisory lock (flock) on <run.dir>/daedalus.lock, held by rank
// 0 for the trainer's lifetime. A second trainer on the same directory is refused with the
// holder's host and pid (which the file records); the kernel drops the lock when its holder
// exits, however it ends, so a crashed run never blocks the next one. File systems without flock
// (some NFS mounts) run unlocked.
#pragma once

#include <string>

namespace daedalus::train {

class RunDirLock {
 public:
  RunDirLock() = default;
  // Locks `dir` (which exists). InputError naming run.dir and the holder when another process
  // holds it.
  explicit RunDirLock(const std::string& dir);
  ~RunDirLock();
  RunDirLock(RunDirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  RunDirLock& operator=(RunDirLock&& o) noexcept;
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace daedalus::train
