// Shared pieces of the I/O engine tests: volumes of every layout over in-memory devices,
// and a driver that keeps many requests in flight on the test's own loop.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "volmgr/allocator.h"
#include "volmgr/io/mem_device.h"
#include "volmgr/io/volume_io.h"

namespace rsio::volmgr::io::test {

inline uint64_t test_seed() {
  if (const char* s = std::getenv("RSIO_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

struct LayoutCase {
  const char* name;
  LayoutSpec spec;
  uint64_t extent_bytes;
  std::vector<uint64_t> pv_extents;  // extents per PV
  uint64_t logical_extents;
};

// linear, concat across PVs, 2/3 stripes and 2/3-way mirrors, with extent and stripe sizes
// that are not powers of two and areas that do not start at the beginning of their PV.
inline std::vector<LayoutCase> layout_cases() {
  const uint64_t odd_extent = 3 * 64 * 1024;  // 192 KiB
  return {
      {"linear", {Layout::kLinear, 1, 0, 1}, odd_extent, {16}, 10},
      {"concat", {Layout::kLinear, 1, 0, 1}, odd_extent, {5, 4, 6}, 11},
      {"stripe2", {Layout::kStriped, 2, 12 * 1024, 1}, odd_extent, {6, 7}, 10},
      {"stripe3", {Layout::kStriped, 3, 24 * 1024, 1}, odd_extent, {5, 5, 6}, 12},
      {"mirror2", {Layout::kMirrored, 1, 0, 2}, odd_extent, {8, 8}, 7},
      {"mirror3", {Layout::kMirrored, 1, 0, 3}, odd_extent, {4, 3, 6, 6}, 3},
  };
}

// A volume over MemDevices, mapped by the real allocator.
struct TestVolume {
  std::vector<PvInfo> pvs;
  VolumeInfo info;
  uint64_t extent_bytes = 0;
  std::vector<std::unique_ptr<MemDevice>> devices;  // index = pv id - 1

  Device* lookup(int64_t pv_id) const {
    return pv_id >= 1 && static_cast<size_t>(pv_id) <= devices.size() ? devices[pv_id - 1].get()
                                                                      : nullptr;
  }
  DeviceLookup lookup_fn() const {
    return [this](int64_t id) { return lookup(id); };
  }
};

inline std::unique_ptr<TestVolume> make_volume(Loop& loop, const LayoutCase& c, uint64_t seed,
                                               bool fragment = true) {
  auto tv = std::make_unique<TestVolume>();
  tv->extent_bytes = c.extent_bytes;
  PoolSpace space;
  for (size_t i = 0; i < c.pv_extents.size(); ++i) {
    PvInfo pv;
    pv.id = static_cast<int64_t>(i + 1);
    pv.data_offset_bytes = 64 * 1024 + 512 * i;  // unaligned to the extent, differs per PV
    pv.extent_count = c.pv_extents[i];
    pv.size_bytes = pv.data_offset_bytes + pv.extent_count * c.extent_bytes;
    tv->pvs.push_back(pv);
    space.add_pv(pv.id, pv.extent_count);
    tv->devices.push_back(
        std::make_unique<MemDevice>(loop, "mem" + std::to_string(i + 1), pv.size_bytes, seed + i));
  }
  // Occupy the first extent of every PV so areas start mid-device.
  if (fragment)
    for (const PvInfo& pv : tv->pvs) space.find(pv.id)->reserve(0, 1);
  tv->info.id = 1;
  tv->info.name = c.name;
  tv->info.spec = c.spec;
  AllocContext ctx{"test", c.extent_bytes};
  const uint64_t unit = c.spec.logical_per_area_extent();
  // Allocate in two steps, as a create followed by a grow.
  const uint64_t first = (c.logical_extents / unit / 2) * unit;
  if (first > 0) {
    EXPECT_TRUE(allocate_extents(space, c.spec, ctx, tv->info.segments, first));
  }
  EXPECT_TRUE(allocate_extents(space, c.spec, ctx, tv->info.segments, c.logical_extents - first));
  tv->info.size_bytes = tv->info.logical_extents() * c.extent_bytes;
  return tv;
}

// Keeps up to `depth` requests in flight; `next` makes the next request (or nullptr when it
// would overlap one in flight), `done` checks a completion.
struct InFlight {
  IoRequest req;
  std::vector<uint8_t> buf;
  std::vector<iovec> iov;
  uint64_t id = 0;
  std::function<void(InFlight&, IoStatus)> check;
};

// Fills `f.iov` with 1..3 pieces of `f.buf`, so requests exercise scatter/gather.
inline void scatter(InFlight& f, std::mt19937_64& rng) {
  f.iov.clear();
  size_t left = f.buf.size(), off = 0;
  const int pieces = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < pieces && left > 0; ++i) {
    size_t n = i == pieces - 1 ? left : 1 + rng() % left;
    f.iov.push_back({f.buf.data() + off, n});
    off += n;
    left -= n;
  }
  f.req.iov = f.iov.data();
  f.req.iov_count = static_cast<int>(f.iov.size());
}

inline void on_done(IoRequest* req, IoStatus status) {
  auto* f = static_cast<InFlight*>(req->user);
  f->check(*f, status);
}

}  // namespace rsio::volmgr::io::test
