// Free-extent bookkeeping of one PV: the free extents as a set of disjoint, non-adjacent runs.
#pragma once

#include <cstdint>
#include <map>

namespace rsio::volmgr {

class ExtentMap {
 public:
  // A PV of `extent_count` extents, all free.
  explicit ExtentMap(uint64_t extent_count);

  uint64_t extent_count() const { return extent_count_; }
  uint64_t free_count() const { return free_count_; }

  // True when every extent of [start, start + count) is free.
  bool is_free(uint64_t start, uint64_t count) const;
  // Length of the free run beginning at `start`, 0 if extent `start` is in use.
  uint64_t free_run_at(uint64_t start) const;

  struct Run {
    uint64_t start = 0;
    uint64_t count = 0;
  };
  // The longest free run (the lowest one among equals); count 0 when the PV is full.
  Run largest_run() const;

  // Marks [start, start + count) used. REQUIRES: is_free(start, count), count > 0.
  void reserve(uint64_t start, uint64_t count);
  // Marks [start, start + count) free. REQUIRES: those extents are in use, in range.
  void release(uint64_t start, uint64_t count);

  const std::map<uint64_t, uint64_t>& free_runs() const { return runs_; }

 private:
  uint64_t extent_count_;
  uint64_t free_count_;
  std::map<uint64_t, uint64_t> runs_;  // start -> count
};

}  // namespace rsio::volmgr
