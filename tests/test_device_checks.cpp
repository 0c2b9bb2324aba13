// The host half of the deferred device checks (autograd/device_checks.h): the table of queued
// checks and the messages a device violation turns into, which must be the CPU checks' own.
#include <gtest/gtest.h>

#include <string>

#include "autograd/device_checks.h"
#include "autograd/kernels/cross_entropy.h"
#include "autograd/kernels/index.h"
#include "tests/testing.h"

namespace daedalus {
namespace {

DeviceCheckDescription index_check(std::string op, Shape shape, int64_t limit) {
  return DeviceCheckDescription{.kind = DeviceCheckKind::index_range,
                                .op = std::move(op),
                                .name = "ids",
                                .shape = std::move(shape),
                                .limit = limit,
                                .ignore = 0,
                                .context = "vocab 32000"};
}

TEST(DeviceChecks, TableHandsOutSlotsInQueueOrderAndIsBounded) {
  PendingDeviceChecks table;
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(table.find(0), nullptr);
  EXPECT_EQ(table.add(index_check("first", {4}, 10)), 0u);
  EXPECT_EQ(table.add(index_check("second", {4}, 10)), 1u);
  ASSERT_NE(table.find(1), nullptr);
  EXPECT_EQ(table.find(0)->op, "first");
  EXPECT_EQ(table.find(1)->op, "second");
  EXPECT_EQ(table.find(2), nullptr);  // a slot nobody queued
  EXPECT_EQ(table.find(uint64_t(1) << 40), nullptr);
  while (!table.full()) table.add(index_check("more", {4}, 10));
  EXPECT_EQ(table.size(), size_t(PendingDeviceChecks::kCapacity));
  EXPECT_THROW(table.add(index_check("one too many", {4}, 10)), Error);
  table.clear();
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(table.find(0), nullptr);
  EXPECT_EQ(table.add(index_check("after clear", {4}, 10)), 0u);  // slots start again at 0
}

// What a device reports (flat position, value) must read exactly like the CPU check of the same
// tensor: the CPU message is the device message (plus DAEDALUS_FAIL's " (file:line)" when
// DAEDALUS_DEBUG=1 asks for source locations, autograd/check.cpp).
bool same_message(const std::string& cpu, const std::string& device) {
  return cpu == device || cpu.rfind(device + " (", 0) == 0;
}

TEST(DeviceChecks, IndexMessageIsTheCpuChecksMessage) {
  const Tensor grid = Tensor::from_values({0, 1, 2, 3, 70000, 5}, {2, 3}, DType::i64);
  const std::string cpu =
      testing::error_of([&] { kernels::check_index_range("embedding", grid, "ids", 32000, "vocab 32000"); });
  const std::string device = device_check_message(index_check("embedding", {2, 3}, 32000), 4, 70000);
  EXPECT_EQ(device, "embedding: ids[1, 1] = 70000 is out of range [0, 32000) (vocab 32000)");
  EXPECT_TRUE(same_message(cpu, device)) << cpu;
  // Without the value (not recorded) the message still names op, tensor, position and range.
  const std::string no_value = device_check_message(index_check("embedding", {2, 3}, 32000), 4, std::nullopt);
  for (const char* needle : {"embedding", "ids[1, 1]", "[0, 32000)", "vocab 32000"})
    EXPECT_NE(no_value.find(needle), std::string::npos) << no_value;
}

TEST(DeviceChecks, TargetMessageIsTheCpuChecksMessage) {
  const Tensor logits = testing::random_tensor({3, 10}, 6);
  const Tensor targets = Tensor::from_values({1, 10, 2}, {3}, DType::i32);
  const std::string cpu = testing::error_of([&] { kernels::cross_entropy(logits, targets); });
  const DeviceCheckDescription check{.kind = DeviceCheckKind::target_range,
                                     .op = "cross_entropy",
                                     .name = "targets",
                                     .shape = {3},
                                     .limit = 10,
                                     .ignore = -100,
                                     .context = {}};
  const std::string device = device_check_message(check, 1, 10);
  EXPECT_EQ(device, "cross_entropy: target 10 at row 1 is outside [0, V) with V = 10 (ignore_index is -100)");
  EXPECT_TRUE(same_message(cpu, device)) << cpu;
  // The backward's CPU check gives the same words under its own name.
  const std::string backward = testing::error_of(
      [&] { kernels::cross_entropy_backward(logits, targets, Tensor::zeros({3}, DType::f32), 1.0, -100, 2); });
  EXPECT_TRUE(same_message(backward, target_range_message("cross_entropy_backward", 1, 10, 10, -100))) << backward;
}

TEST(DeviceChecks, PositionsAreRowMajorInTheCheckedShape) {
  EXPECT_EQ(position_str({2, 3}, 4), "[1, 1]");
  EXPECT_EQ(position_str({5}, 3), "[3]");
  EXPECT_EQ(position_str({2, 3, 4}, 23), "[1, 2, 3]");
  EXPECT_EQ(position_str({}, 0), "[]");
}

}  // namespace
}  // namespace daedalus
