// The volume manager's data model: pools of physical volumes (PVs) cut into extents, and
// volumes made of segments whose areas are runs of extents on PVs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ids.h"

namespace rsio::volmgr {

inline constexpr uint64_t kDefaultExtentSizeBytes = 4ULL << 20;
inline constexpr uint64_t kPvDataOffsetBytes = 1ULL << 20;  // label area before the data
inline constexpr uint64_t kDefaultStripeSizeBytes = 64ULL << 10;
inline constexpr uint32_t kStripesMax = 64;
inline constexpr uint32_t kMirrorsMax = 8;

enum class Layout { kLinear, kStriped, kMirrored };
std::string_view layout_name(Layout layout);
std::optional<Layout> parse_layout(std::string_view name);

// kLun: a pass-through LUN, exported 1:1 as one volume. It carries no label (its data starts
// at byte 0) and is found by its stable identity (lun_id) alone.
enum class PvKind { kFile, kBlock, kLun };
std::string_view pv_kind_name(PvKind kind);

// Whether the PV's label matched the metadata when rsiod last opened it.
enum class PvState { kOk, kMissing, kLabelMismatch, kSizeMismatch };
std::string_view pv_state_name(PvState state);

// The state of one mirror leg. kResyncing: the leg takes writes but serves no reads until a
// resync has copied every region it may have missed.
enum class LegState : uint8_t { kInSync, kFaulty, kResyncing };
std::string_view leg_state_name(LegState s);
std::optional<LegState> parse_leg_state(std::string_view name);

struct PoolInfo {
  int64_t id = 0;
  Uuid uuid;
  std::string name;
  uint64_t extent_size_bytes = kDefaultExtentSizeBytes;
  bool is_default = false;
  int64_t created_ms = 0;
};

struct PvInfo {
  int64_t id = 0;
  Uuid uuid;
  int64_t pool_id = 0;
  std::string path;
  PvKind kind = PvKind::kFile;
  uint64_t size_bytes = 0;
  uint64_t data_offset_bytes = kPvDataOffsetBytes;
  uint64_t extent_count = 0;
  uint64_t label_generation = 1;
  int64_t created_ms = 0;
  // The stable identity (WWN, serial, backing file) of a device imported as a LUN; empty
  // for devices added by path.
  std::string lun_id;
  PvState state = PvState::kOk;
  std::string state_detail;  // why the PV is not ok
};

// A run of `extent_count` consecutive extents on one PV.
struct Area {
  int64_t pv_id = 0;
  uint64_t pv_start_extent = 0;
  uint64_t extent_count = 0;
  friend bool operator==(const Area&, const Area&) = default;
};

// Logical extents [start_extent, start_extent + extent_count) of a volume. Linear: one area
// of extent_count extents. Striped with N stripes: N areas of extent_count / N extents each,
// on distinct PVs. Mirrored with N legs: N areas of extent_count extents each; area i
// belongs to leg i, and no PV holds areas of two different legs of one volume.
struct Segment {
  uint64_t start_extent = 0;
  uint64_t extent_count = 0;
  std::vector<Area> areas;
  friend bool operator==(const Segment&, const Segment&) = default;
};

// How a volume's segments are built. `width` is the number of areas per segment.
struct LayoutSpec {
  Layout layout = Layout::kLinear;
  uint32_t stripes = 1;
  uint64_t stripe_size_bytes = 0;
  uint32_t mirrors = 1;

  uint32_t width() const {
    return layout == Layout::kStriped ? stripes : layout == Layout::kMirrored ? mirrors : 1;
  }
  // Logical extents per extent of one area.
  uint32_t logical_per_area_extent() const { return layout == Layout::kStriped ? stripes : 1; }
};

struct VolumeInfo {
  int64_t id = 0;
  Uuid uuid;
  std::string name;
  int64_t pool_id = 0;
  uint64_t size_bytes = 0;
  uint64_t block_size_bytes = 512;
  LayoutSpec spec;
  int64_t created_ms = 0;
  std::vector<Segment> segments;
  // Mirrored volumes: one entry per leg (empty otherwise).
  std::vector<LegState> leg_states;
  std::vector<std::string> leg_details;  // why a leg is not in sync

  uint64_t logical_extents() const {
    return segments.empty() ? 0 : segments.back().start_extent + segments.back().extent_count;
  }
};

}  // namespace rsio::volmgr
