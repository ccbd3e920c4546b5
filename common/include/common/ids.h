// UUIDs, checksums and clocks shared by the components.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace rsio {

// A random (version 4) UUID in its 16 raw bytes.
struct Uuid {
  std::array<uint8_t, 16> bytes{};

  static Uuid random();
  // Parses the canonical 36-character form; nullopt when malformed.
  static std::optional<Uuid> parse(std::string_view text);
  std::string str() const;
  bool is_nil() const;
  friend bool operator==(const Uuid&, const Uuid&) = default;
};

// CRC-32C (Castagnoli), as used by the on-disk label.
uint32_t crc32c(std::span<const std::byte> data, uint32_t crc = 0);

// Wall-clock milliseconds since the Unix epoch, for timestamps in the metadata.
int64_t now_ms();

}  // namespace rsio
