// The on-disk PV label: 4096 bytes at offset 0 of every physical volume. The format is
// specified in docs/on-disk-label.md; keep the two in step.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "common/ids.h"
#include "common/result.h"

namespace rsio::volmgr {

inline constexpr size_t kLabelSizeBytes = 4096;
inline constexpr uint32_t kLabelVersion = 1;
inline constexpr size_t kLabelPoolNameBytes = 64;

struct PvLabel {
  Uuid pv_uuid;
  Uuid pool_uuid;
  uint64_t generation = 1;
  uint64_t pv_size_bytes = 0;
  uint64_t data_offset_bytes = 0;
  uint64_t extent_size_bytes = 0;
  int64_t created_ms = 0;
  std::string pool_name;  // at most 64 bytes

  friend bool operator==(const PvLabel&, const PvLabel&) = default;
};

using LabelBlock = std::array<std::byte, kLabelSizeBytes>;

LabelBlock encode_label(const PvLabel& label);

// Decodes a label block. Returns nullopt when the block carries no RSIO magic (a blank or
// foreign device). Errors: kCorrupt when the magic is present but the checksum, version or a
// field is wrong; kUnsupportedVersion for a newer label format.
Result<std::optional<PvLabel>> decode_label(std::span<const std::byte> block);

}  // namespace rsio::volmgr
