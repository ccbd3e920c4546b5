#include "volmgr/extent_map.h"

#include "common/assert.h"

namespace rsio::volmgr {

ExtentMap::ExtentMap(uint64_t extent_count)
    : extent_count_(extent_count), free_count_(extent_count) {
  if (extent_count > 0) runs_.emplace(0, extent_count);
}

bool ExtentMap::is_free(uint64_t start, uint64_t count) const {
  auto it = runs_.upper_bound(start);
  if (it == runs_.begin()) return false;
  --it;
  return start >= it->first && start - it->first + count <= it->second;
}

uint64_t ExtentMap::free_run_at(uint64_t start) const {
  auto it = runs_.upper_bound(start);
  if (it == runs_.begin()) return 0;
  --it;
  if (start >= it->first + it->second) return 0;
  return it->first + it->second - start;
}

ExtentMap::Run ExtentMap::largest_run() const {
  Run best;
  for (const auto& [start, count] : runs_) {
    if (count > best.count) best = Run{start, count};
  }
  return best;
}

void ExtentMap::reserve(uint64_t start, uint64_t count) {
  RSIO_ASSERT(count > 0);
  auto it = runs_.upper_bound(start);
  RSIO_ASSERT_MSG(it != runs_.begin(), "reserving used extents");
  --it;
  const uint64_t run_start = it->first;
  const uint64_t run_end = it->first + it->second;
  RSIO_ASSERT_MSG(start >= run_start && start + count <= run_end, "reserving used extents");
  runs_.erase(it);
  if (start > run_start) runs_.emplace(run_start, start - run_start);
  if (start + count < run_end) runs_.emplace(start + count, run_end - (start + count));
  free_count_ -= count;
}

void ExtentMap::release(uint64_t start, uint64_t count) {
  RSIO_ASSERT(count > 0);
  RSIO_ASSERT_MSG(start + count <= extent_count_ && start + count > start, "release out of range");
  auto next = runs_.lower_bound(start);
  RSIO_ASSERT_MSG(next == runs_.end() || next->first >= start + count, "releasing free extents");
  uint64_t new_start = start;
  uint64_t new_count = count;
  if (next != runs_.begin()) {
    auto prev = std::prev(next);
    RSIO_ASSERT_MSG(prev->first + prev->second <= start, "releasing free extents");
    if (prev->first + prev->second == start) {
      new_start = prev->first;
      new_count += prev->second;
      runs_.erase(prev);
    }
  }
  if (next != runs_.end() && next->first == start + count) {
    new_count += next->second;
    runs_.erase(next);
  }
  runs_.emplace(new_start, new_count);
  free_count_ += count;
}

}  // namespace rsio::volmgr
