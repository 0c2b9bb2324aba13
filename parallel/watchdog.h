// Turns a hang into a failure. A rank blocked in a collective whose peer died or stalls waits
// forever in MPI (NCCL has ncclCommGetAsyncError for this; MPI has nothing): the watchdog thread
// fires when the training loop has not called beat() for `timeout_s` seconds (parallel.timeout_s),
// reports what the loop was last doing, and ends the job (exit code 2 per CONTRACT.md).
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
