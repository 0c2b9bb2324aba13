// Turns a hang into a failure. A rank blocked in a collective whose peer died or stalls waits
// forever in MPI (NCCL has ncclCommGetAsyncError for this; MPI has nothing): the watchdog thread
// fires when the trainer has not called beat() for `timeout_s` seconds (parallel.timeout_s),
// reports what it was last doing, and ends the job (exit code 2 per CONTRACT.md). `daedalus train`
// starts it before MPI_Init, so start-up (MPI_Init, the config check, data, resume) is covered as
// well as every step, evaluation and save.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace daedalus::parallel {

// Ends the whole job from any thread: prints `message` on stderr, then MPI_Abort(code) when MPI
// runs with several ranks, std::_Exit(code) otherwise.
[[noreturn]] void abort_job(int code, const std::string& message);

// The number of ranks the launcher started (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_SIZE), before
// MPI_Init says so; 1 when none is set.
int launched_world_size();

// Test hook: when DAEDALUS_TEST_STOP_AT equals `phase` and DAEDALUS_TEST_STOP_RANK equals `rank`
// (default 1), this process stops itself (SIGSTOP), as a rank frozen by a failing node would.
// Phases: "mpi_init" (rank from OMPI_COMM_WORLD_RANK), "resume" (before the resume agreement).
void test_stop_point(std::string_view phase, int rank);

class Watchdog {
 public:
  using Action = std::function<void(const std::string& message)>;
  // timeout_s <= 0 disables it. `on_timeout` defaults to abort_job(2, message).
  explicit Watchdog(double timeout_s, Action on_timeout = {});
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // The loop is alive and about to do `what` ("step 12", "checkpoint save").
  void beat(std::string_view what);

 private:
  void watch();

  double timeout_s_;
  Action on_timeout_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::chrono::steady_clock::time_point last_;
  std::string what_ = "start-up";
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace daedalus::parallel
