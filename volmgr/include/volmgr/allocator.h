// Extent allocation for volume layouts. Pure bookkeeping over a pool's free-extent maps;
// no I/O and no database. The VolumeManager persists what these functions decide.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"
#include "volmgr/extent_map.h"
#include "volmgr/model.h"

namespace rsio::volmgr {

// The free space of one pool: an ExtentMap per PV. PVs that are not usable (missing or with
// a label mismatch) keep their bookkeeping but receive no new allocations.
class PoolSpace {
 public:
  // REQUIRES: pv_id not present.
  void add_pv(int64_t pv_id, uint64_t extent_count);
  // REQUIRES: every extent of the PV is free.
  void remove_pv(int64_t pv_id);
  void set_usable(int64_t pv_id, bool usable);

  ExtentMap* find(int64_t pv_id);
  const ExtentMap* find(int64_t pv_id) const;
  bool usable(int64_t pv_id) const;
  uint64_t free_extents() const;  // usable PVs only
  size_t pv_count() const { return pvs_.size(); }

  struct Pv {
    ExtentMap map;
    bool usable = true;
  };
  const std::map<int64_t, Pv>& pvs() const { return pvs_; }

 private:
  std::map<int64_t, Pv> pvs_;
};

// Names and sizes for error messages.
struct AllocContext {
  std::string pool_name;
  uint64_t extent_size_bytes = kDefaultExtentSizeBytes;
};

// Number of logical extents a volume of `size_bytes` needs with `spec`: whole extents,
// a multiple of the stripe count for striped layouts.
uint64_t logical_extents_for(uint64_t size_bytes, const LayoutSpec& spec,
                             uint64_t extent_size_bytes);

// Adds `add_logical_extents` (a multiple of spec.logical_per_area_extent()) to a volume
// whose segments are `segments` (empty for a new volume). Continues the last segment's
// areas in place where the PVs have contiguous free extents, otherwise appends segments.
// Mirror legs keep to PVs no other leg of the volume uses. On success the new extents are
// reserved in `space` and `segments` holds the complete new mapping.
// Errors: kNoSpace with what is missing, leaving `space` and `segments` unchanged.
Status allocate_extents(PoolSpace& space, const LayoutSpec& spec, const AllocContext& ctx,
                        std::vector<Segment>& segments, uint64_t add_logical_extents);

// Cuts a volume's mapping down to `new_logical_extents` (a multiple of
// spec.logical_per_area_extent(), not above the current count) by trimming the tail of every
// area. Returns the extents no longer mapped; `space` is not touched, so the caller releases
// them (release_areas) once the change is persisted.
std::vector<Area> cut_segments(const LayoutSpec& spec, std::vector<Segment>& segments,
                               uint64_t new_logical_extents);
void release_areas(PoolSpace& space, const std::vector<Area>& areas);

// Marks the extents of `segments` used, as when loading metadata. Errors: kCorrupt when an
// extent is out of range, on an unknown PV or already used (the change is undone).
Status reserve_segments(PoolSpace& space, const std::vector<Segment>& segments);
void release_segments(PoolSpace& space, const std::vector<Segment>& segments);

// Checks the structural rules of Segment for `spec`: contiguous logical ranges from 0,
// area counts, distinct PVs per striped segment, disjoint PV sets per mirror leg.
// Errors: kCorrupt naming the broken rule.
Status check_segments(const LayoutSpec& spec, const std::vector<Segment>& segments);

}  // namespace rsio::volmgr
