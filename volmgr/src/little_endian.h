// Little-endian integers in on-disk structures (the PV label, the metadata copies).
#pragma once

#include <cstddef>
#include <cstdint>

namespace rsio::volmgr {

inline void put_le(std::byte* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}

inline uint64_t get_le(const std::byte* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace rsio::volmgr
