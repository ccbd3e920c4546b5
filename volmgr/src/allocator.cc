#include "volmgr/allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "common/assert.h"
#include "common/units.h"

namespace rsio::volmgr {

void PoolSpace::add_pv(int64_t pv_id, uint64_t extent_count) {
  auto [it, inserted] = pvs_.emplace(pv_id, Pv{ExtentMap(extent_count), true});
  RSIO_ASSERT(inserted);
}

void PoolSpace::remove_pv(int64_t pv_id) {
  auto it = pvs_.find(pv_id);
  RSIO_ASSERT(it != pvs_.end());
  RSIO_ASSERT(it->second.map.free_count() == it->second.map.extent_count());
  pvs_.erase(it);
}

void PoolSpace::set_usable(int64_t pv_id, bool usable) {
  auto it = pvs_.find(pv_id);
  RSIO_ASSERT(it != pvs_.end());
  it->second.usable = usable;
}

ExtentMap* PoolSpace::find(int64_t pv_id) {
  auto it = pvs_.find(pv_id);
  return it == pvs_.end() ? nullptr : &it->second.map;
}

const ExtentMap* PoolSpace::find(int64_t pv_id) const {
  auto it = pvs_.find(pv_id);
  return it == pvs_.end() ? nullptr : &it->second.map;
}

bool PoolSpace::usable(int64_t pv_id) const {
  auto it = pvs_.find(pv_id);
  return it != pvs_.end() && it->second.usable;
}

uint64_t PoolSpace::free_extents() const {
  uint64_t total = 0;
  for (const auto& [id, pv] : pvs_)
    if (pv.usable) total += pv.map.free_count();
  return total;
}

uint64_t logical_extents_for(uint64_t size_bytes, const LayoutSpec& spec,
                             uint64_t extent_size_bytes) {
  uint64_t n = div_round_up(size_bytes, extent_size_bytes);
  const uint64_t unit = spec.logical_per_area_extent();
  return div_round_up(n, unit) * unit;
}

namespace {

// The per-area extent count of a segment.
uint64_t area_extents(const LayoutSpec& spec, uint64_t logical_extents) {
  return logical_extents / spec.logical_per_area_extent();
}

Error no_space_error(const PoolSpace& space, const LayoutSpec& spec, const AllocContext& ctx,
                     uint64_t per_area_extents) {
  const uint64_t total_needed = per_area_extents * spec.width();
  const uint64_t free = space.free_extents();
  const std::string need = format_size(total_needed * ctx.extent_size_bytes);
  const std::string have = format_size(free * ctx.extent_size_bytes);
  size_t big_enough = 0;
  for (const auto& [id, pv] : space.pvs())
    if (pv.usable && pv.map.free_count() >= per_area_extents) ++big_enough;
  if (spec.layout == Layout::kLinear) {
    return make_error(Errc::kNoSpace,
                      fmt::format("not enough free space in pool '{}': need {}, the pool has {} "
                                  "free; add a device (smgr --add-device) or choose a smaller size",
                                  ctx.pool_name, need, have));
  }
  const char* what = spec.layout == Layout::kMirrored ? "mirror legs" : "stripes";
  const std::string each = format_size(per_area_extents * ctx.extent_size_bytes);
  if (big_enough < spec.width()) {
    // Too few devices is the fundamental problem of a multi-device layout: more space on the
    // same devices would not help.
    return make_error(
        Errc::kNoSpace,
        fmt::format("cannot place {} {} in pool '{}': need {} distinct devices with {} free, pool "
                    "'{}' has {} ({} free in all); add devices (smgr --add-device) or use fewer {}",
                    spec.width(), what, ctx.pool_name, spec.width(), each, ctx.pool_name,
                    big_enough, have, what));
  }
  // Enough devices have the space, but not in a placement the layout allows: mirror legs
  // must stay on devices no other leg of the volume uses; stripes need that many devices
  // with free space at the same time, which fragmentation can prevent.
  if (spec.layout == Layout::kMirrored)
    return make_error(Errc::kNoSpace,
                      fmt::format("cannot place {} mirror legs of {} each in pool '{}': the free "
                                  "space is on devices other legs of this volume already use; "
                                  "add devices (smgr --add-device)",
                                  spec.width(), each, ctx.pool_name));
  return make_error(Errc::kNoSpace,
                    fmt::format("cannot place {} stripes of {} each in pool '{}': the free space "
                                "is spread over too few devices at once; add devices (smgr "
                                "--add-device) or use fewer stripes",
                                spec.width(), each, ctx.pool_name));
}

}  // namespace

Status allocate_extents(PoolSpace& space, const LayoutSpec& spec, const AllocContext& ctx,
                        std::vector<Segment>& segments, uint64_t add_logical_extents) {
  const uint32_t width = spec.width();
  RSIO_ASSERT(width >= 1);
  RSIO_ASSERT(add_logical_extents % spec.logical_per_area_extent() == 0);
  const uint64_t per_area_needed = area_extents(spec, add_logical_extents);
  if (per_area_needed == 0) return {};
  if (space.free_extents() < per_area_needed * width)
    return no_space_error(space, spec, ctx, per_area_needed);

  // Where each area would continue, and which PVs each mirror leg already uses.
  struct Cursor {
    int64_t pv_id = 0;
    uint64_t next_extent = 0;
    bool valid = false;
  };
  std::vector<Cursor> cursor(width);
  std::vector<std::set<int64_t>> leg_pvs(width);
  if (!segments.empty()) {
    for (uint32_t k = 0; k < width; ++k) {
      const Area& a = segments.back().areas[k];
      cursor[k] = Cursor{a.pv_id, a.pv_start_extent + a.extent_count, true};
    }
  }
  if (spec.layout == Layout::kMirrored) {
    for (const Segment& s : segments)
      for (uint32_t k = 0; k < width; ++k) leg_pvs[k].insert(s.areas[k].pv_id);
  }

  std::vector<Segment> result = segments;
  std::vector<Area> reserved;  // for rollback
  auto rollback = [&] { release_areas(space, reserved); };

  uint64_t remaining = per_area_needed;
  while (remaining > 0) {
    std::vector<Area> chosen(width);
    std::set<int64_t> in_segment;
    for (uint32_t k = 0; k < width; ++k) {
      // Continue the previous area in place when possible: fewer, longer segments.
      if (cursor[k].valid && space.usable(cursor[k].pv_id) &&
          !in_segment.contains(cursor[k].pv_id)) {
        const uint64_t run = space.find(cursor[k].pv_id)->free_run_at(cursor[k].next_extent);
        if (run > 0) {
          chosen[k] = Area{cursor[k].pv_id, cursor[k].next_extent, std::min(run, remaining)};
          in_segment.insert(cursor[k].pv_id);
          continue;
        }
      }
      // Otherwise the PV with the most free extents among the allowed ones; a mirror leg
      // prefers the PVs it already uses.
      int64_t best_pv = 0;
      uint64_t best_free = 0;
      bool best_own = false;
      for (const auto& [pv_id, pv] : space.pvs()) {
        if (!pv.usable || pv.map.free_count() == 0 || in_segment.contains(pv_id)) continue;
        bool other_leg = false;
        for (uint32_t j = 0; j < width && spec.layout == Layout::kMirrored; ++j)
          if (j != k && leg_pvs[j].contains(pv_id)) other_leg = true;
        if (other_leg) continue;
        const bool own = leg_pvs[k].contains(pv_id);
        if (best_free == 0 || (own && !best_own) ||
            (own == best_own && pv.map.free_count() > best_free)) {
          best_pv = pv_id;
          best_free = pv.map.free_count();
          best_own = own;
        }
      }
      if (best_free == 0) {
        rollback();
        return no_space_error(space, spec, ctx, per_area_needed);
      }
      const ExtentMap::Run run = space.find(best_pv)->largest_run();
      chosen[k] = Area{best_pv, run.start, std::min(run.count, remaining)};
      in_segment.insert(best_pv);
    }

    uint64_t step = remaining;
    for (const Area& a : chosen) step = std::min(step, a.extent_count);
    for (uint32_t k = 0; k < width; ++k) {
      chosen[k].extent_count = step;
      space.find(chosen[k].pv_id)->reserve(chosen[k].pv_start_extent, step);
      reserved.push_back(chosen[k]);
      cursor[k] = Cursor{chosen[k].pv_id, chosen[k].pv_start_extent + step, true};
      if (spec.layout == Layout::kMirrored) leg_pvs[k].insert(chosen[k].pv_id);
    }

    const uint64_t logical = step * spec.logical_per_area_extent();
    bool extends_last = !result.empty();
    for (uint32_t k = 0; k < width && extends_last; ++k) {
      const Area& prev = result.back().areas[k];
      extends_last = prev.pv_id == chosen[k].pv_id &&
                     prev.pv_start_extent + prev.extent_count == chosen[k].pv_start_extent;
    }
    if (extends_last) {
      result.back().extent_count += logical;
      for (uint32_t k = 0; k < width; ++k) result.back().areas[k].extent_count += step;
    } else {
      const uint64_t start =
          result.empty() ? 0 : result.back().start_extent + result.back().extent_count;
      result.push_back(Segment{start, logical, chosen});
    }
    remaining -= step;
  }
  segments = std::move(result);
  return {};
}

std::vector<Area> cut_segments(const LayoutSpec& spec, std::vector<Segment>& segments,
                               uint64_t new_logical_extents) {
  const uint64_t unit = spec.logical_per_area_extent();
  RSIO_ASSERT(new_logical_extents % unit == 0);
  std::vector<Area> cut;
  while (!segments.empty()) {
    Segment& last = segments.back();
    if (last.start_extent >= new_logical_extents) {
      cut.insert(cut.end(), last.areas.begin(), last.areas.end());
      segments.pop_back();
      continue;
    }
    const uint64_t keep = new_logical_extents - last.start_extent;
    if (keep < last.extent_count) {
      const uint64_t cut_per_area = (last.extent_count - keep) / unit;
      for (Area& a : last.areas) {
        a.extent_count -= cut_per_area;
        cut.push_back(Area{a.pv_id, a.pv_start_extent + a.extent_count, cut_per_area});
      }
      last.extent_count = keep;
    }
    break;
  }
  return cut;
}

void release_areas(PoolSpace& space, const std::vector<Area>& areas) {
  for (const Area& a : areas) space.find(a.pv_id)->release(a.pv_start_extent, a.extent_count);
}

Status reserve_segments(PoolSpace& space, const std::vector<Segment>& segments) {
  std::vector<Area> done;
  for (const Segment& s : segments) {
    for (const Area& a : s.areas) {
      ExtentMap* map = space.find(a.pv_id);
      if (map == nullptr || a.extent_count == 0 ||
          a.pv_start_extent + a.extent_count > map->extent_count() ||
          !map->is_free(a.pv_start_extent, a.extent_count)) {
        for (const Area& d : done) space.find(d.pv_id)->release(d.pv_start_extent, d.extent_count);
        return make_error(
            Errc::kCorrupt,
            fmt::format("metadata maps extents {}..{} of pv_id={} that are out of "
                        "range or used twice",
                        a.pv_start_extent, a.pv_start_extent + a.extent_count, a.pv_id));
      }
      map->reserve(a.pv_start_extent, a.extent_count);
      done.push_back(a);
    }
  }
  return {};
}

void release_segments(PoolSpace& space, const std::vector<Segment>& segments) {
  for (const Segment& s : segments) release_areas(space, s.areas);
}

Status check_segments(const LayoutSpec& spec, const std::vector<Segment>& segments) {
  auto bad = [](std::string why) { return make_error(Errc::kCorrupt, std::move(why)); };
  const uint32_t width = spec.width();
  uint64_t next = 0;
  std::vector<std::set<int64_t>> leg_pvs(width);
  for (size_t i = 0; i < segments.size(); ++i) {
    const Segment& s = segments[i];
    if (s.start_extent != next)
      return bad(fmt::format("segment {} does not start at extent {}", i, next));
    if (s.extent_count == 0) return bad(fmt::format("segment {} is empty", i));
    if (s.areas.size() != width)
      return bad(fmt::format("segment {} has {} areas, expected {}", i, s.areas.size(), width));
    if (s.extent_count % spec.logical_per_area_extent() != 0)
      return bad(fmt::format("segment {} is not a multiple of the stripe count", i));
    std::set<int64_t> pvs;
    for (uint32_t k = 0; k < width; ++k) {
      const Area& a = s.areas[k];
      if (a.extent_count != area_extents(spec, s.extent_count))
        return bad(fmt::format("segment {} area {} has {} extents", i, k, a.extent_count));
      if (width > 1 && !pvs.insert(a.pv_id).second)
        return bad(fmt::format("segment {} puts two areas on pv_id={}", i, a.pv_id));
      leg_pvs[k].insert(a.pv_id);
    }
    next += s.extent_count;
  }
  if (spec.layout == Layout::kMirrored) {
    for (uint32_t a = 0; a < width; ++a)
      for (uint32_t b = a + 1; b < width; ++b)
        for (int64_t pv : leg_pvs[a])
          if (leg_pvs[b].contains(pv))
            return bad(fmt::format("mirror legs {} and {} share pv_id={}", a, b, pv));
  }
  return {};
}

}  // namespace rsio::volmgr
