// The hang watchdog and the job-wide abort.
#include "parallel/watchdog.h"

#include <fmt/format.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

#if !DAEDALUS_MINIMAL
#include <mpi.h>
#endif

namespace daedalus::parallel {

void abort_job(int code, const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "daedalus: %s\n", message.c_str());
  std::fflush(stderr);
#if !DAEDALUS_MINIMAL
  int initialized = 0, finalized = 0, size = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (initialized && !finalized && size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

int launched_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* v = std::getenv(name); v != nullptr && std::atoi(v) > 0) return std::atoi(v);
  return 1;
}

void test_stop_point(std::string_view phase, int rank) {
  const char* at = std::getenv("DAEDALUS_TEST_STOP_AT");
  if (at == nullptr || phase != at) return;
  const char* r = std::getenv("DAEDALUS_TEST_STOP_RANK");
  if (rank != (r != nullptr ? std::atoi(r) : 1)) return;
  std::fprintf(stderr, "daedalus: test hook: rank %d stops itself at %s\n", rank, at);
  std::fflush(stderr);
  std::raise(SIGSTOP);
}

Watchdog::Watchdog(double timeout_s, Action on_timeout)
    : timeout_s_(timeout_s), on_timeout_(std::move(on_timeout)), last_(std::chrono::steady_clock::now()) {
  if (!on_timeout_) on_timeout_ = [](const std::string& message) { abort_job(2, message); };
  if (timeout_s_ > 0) thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::beat(std::string_view what) {
  std::lock_guard<std::mutex> lock(mutex_);
  last_ = std::chrono::steady_clock::now();
  what_.assign(what);
}

void Watchdog::watch() {
  const auto timeout = std::chrono::duration<double>(timeout_s_);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    const auto deadline = last_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    if (std::chrono::steady_clock::now() >= deadline) {
      const std::string message = fmt::format(
          "no progress for {:.0f} s during {} (parallel.timeout_s): a rank is stuck or a peer died", timeout_s_, what_);
      lock.unlock();
      on_timeout_(message);
      return;
    }
    wake_.wait_until(lock, deadline);
  }
}

}  // namespace daedalus::parallel
