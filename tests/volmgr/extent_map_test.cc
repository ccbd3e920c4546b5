#include "volmgr/extent_map.h"

#include <gtest/gtest.h>

namespace rsio::volmgr {
namespace {

TEST(ExtentMap, StartsAllFree) {
  ExtentMap m(100);
  EXPECT_EQ(m.free_count(), 100u);
  EXPECT_TRUE(m.is_free(0, 100));
  EXPECT_EQ(m.largest_run().count, 100u);
}

TEST(ExtentMap, ReserveSplitsAndReleaseMerges) {
  ExtentMap m(100);
  m.reserve(10, 20);
  EXPECT_EQ(m.free_count(), 80u);
  EXPECT_FALSE(m.is_free(10, 1));
  EXPECT_TRUE(m.is_free(0, 10));
  EXPECT_EQ(m.free_run_at(30), 70u);
  EXPECT_EQ(m.free_run_at(10), 0u);
  EXPECT_EQ(m.free_run_at(5), 5u);
  m.reserve(50, 10);
  EXPECT_EQ(m.free_runs().size(), 3u);
  m.release(10, 20);
  EXPECT_EQ(m.free_runs().size(), 2u);
  m.release(50, 10);
  EXPECT_EQ(m.free_runs().size(), 1u);
  EXPECT_EQ(m.free_count(), 100u);
}

TEST(ExtentMap, LargestRunPrefersLowestAmongEquals) {
  ExtentMap m(30);
  m.reserve(10, 10);
  EXPECT_EQ(m.largest_run().start, 0u);
  EXPECT_EQ(m.largest_run().count, 10u);
}

TEST(ExtentMap, ReleasingLastExtentFreesPv) {
  ExtentMap m(1);
  m.reserve(0, 1);
  EXPECT_EQ(m.free_count(), 0u);
  EXPECT_EQ(m.largest_run().count, 0u);
  m.release(0, 1);
  EXPECT_EQ(m.free_count(), 1u);
}

TEST(ExtentMapDeathTest, DoubleReserveIsABug) {
  ExtentMap m(10);
  m.reserve(0, 5);
  EXPECT_DEATH(m.reserve(4, 2), "reserving used extents");
  EXPECT_DEATH(m.release(5, 1), "releasing free extents");
}

}  // namespace
}  // namespace rsio::volmgr
