// The hang watchdog: fires after the timeout without beats, never while beats keep coming, and
// names what the loop was doing.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "parallel/watchdog.h"
#include "tests/testing.h"

namespace daedalus::parallel {
namespace {

using namespace std::chrono_literals;

TEST(Watchdog, FiresWhenTheLoopStopsBeatingAndNamesTheLastStage) {
  std::atomic<bool> fired{false};
  std::string message;
  {
    Watchdog dog(0.2, [&](const std::string& m) {
      message = m;
      fired = true;
    });
    dog.beat("step 7");
    for (int i = 0; i < 100 && !fired; ++i) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(fired);
  EXPECT_TRUE(testing::mentions(message, {"step 7", "parallel.timeout_s", "no progress"}));
}

TEST(Watchdog, StaysQuietWhileBeatsArriveAndWhenDisabled) {
  std::atomic<bool> fired{false};
  {
    Watchdog dog(0.3, [&](const std::string&) { fired = true; });
    for (int i = 0; i < 20; ++i) {  // 0.6 s of work in 30 ms steps, each shorter than the timeout
      dog.beat("step");
      std::this_thread::sleep_for(30ms);
    }
  }
  EXPECT_FALSE(fired);
  {
    Watchdog off(0.0, [&](const std::string&) { fired = true; });
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_FALSE(fired);
}

}  // namespace
}  // namespace daedalus::parallel
