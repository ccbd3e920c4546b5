// Sizes and checked arithmetic. Sizes are bytes in uint64_t everywhere; sectors are 512 bytes
// and only appear through the named conversions here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace rsio {

inline constexpr uint64_t kSectorSizeBytes = 512;
inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kTiB = 1024 * kGiB;

// Overflow-checked arithmetic: nullopt on overflow.
std::optional<uint64_t> checked_add(uint64_t a, uint64_t b);
std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b);

// Rounds `value` up to a multiple of `unit` (unit > 0); nullopt on overflow.
std::optional<uint64_t> round_up(uint64_t value, uint64_t unit);

constexpr uint64_t div_round_up(uint64_t value, uint64_t unit) {
  return value / unit + (value % unit != 0 ? 1 : 0);
}

// Parses an admin-entered size. Accepted: a plain number of bytes ("4096"), a number with a
// binary unit k/K, m/M, g/G, t/T, p/P (optionally followed by "iB" or "B", powers of 1024,
// fractions allowed: "1.5T"), or a number of 512-byte sectors with suffix "s" ("2097152s").
// Errors (kInvalidArgument): empty, not a number, negative, zero, fraction of a byte,
// overflow of 64 bits.
Result<uint64_t> parse_size(std::string_view text);

// Human-readable size with a binary unit: exact values as integers ("4 MiB", "1 GiB"),
// others with two decimals ("8.70 GiB"), sizes under 1 KiB in bytes ("512 B").
std::string format_size(uint64_t size_bytes);

inline constexpr uint64_t bytes_to_sectors(uint64_t size_bytes) {
  return size_bytes / kSectorSizeBytes;
}

}  // namespace rsio
