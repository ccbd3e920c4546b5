#include "volmgr/label.h"

#include <fmt/format.h>

#include <cstring>

#include "little_endian.h"

namespace rsio::volmgr {
namespace {

constexpr char kMagic[8] = {'R', 'S', 'I', 'O', 'L', 'B', 'L', '1'};
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 8;
constexpr size_t kOffSize = 12;
constexpr size_t kOffPvUuid = 16;
constexpr size_t kOffPoolUuid = 32;
constexpr size_t kOffGeneration = 48;
constexpr size_t kOffPvSize = 56;
constexpr size_t kOffDataOffset = 64;
constexpr size_t kOffExtentSize = 72;
constexpr size_t kOffCreated = 80;
constexpr size_t kOffPoolName = 88;
constexpr size_t kOffChecksum = kLabelSizeBytes - 4;
static_assert(kOffPoolName + kLabelPoolNameBytes <= kOffChecksum);

}  // namespace

LabelBlock encode_label(const PvLabel& label) {
  LabelBlock b{};
  std::memcpy(b.data() + kOffMagic, kMagic, sizeof(kMagic));
  put_le(b.data() + kOffVersion, kLabelVersion, 4);
  put_le(b.data() + kOffSize, kLabelSizeBytes, 4);
  std::memcpy(b.data() + kOffPvUuid, label.pv_uuid.bytes.data(), 16);
  std::memcpy(b.data() + kOffPoolUuid, label.pool_uuid.bytes.data(), 16);
  put_le(b.data() + kOffGeneration, label.generation, 8);
  put_le(b.data() + kOffPvSize, label.pv_size_bytes, 8);
  put_le(b.data() + kOffDataOffset, label.data_offset_bytes, 8);
  put_le(b.data() + kOffExtentSize, label.extent_size_bytes, 8);
  put_le(b.data() + kOffCreated, static_cast<uint64_t>(label.created_ms), 8);
  std::memcpy(b.data() + kOffPoolName, label.pool_name.data(),
              std::min(label.pool_name.size(), kLabelPoolNameBytes));
  put_le(b.data() + kOffChecksum, crc32c(std::span(b.data(), kOffChecksum)), 4);
  return b;
}

Result<std::optional<PvLabel>> decode_label(std::span<const std::byte> block) {
  if (block.size() < kLabelSizeBytes)
    return make_error(Errc::kCorrupt, fmt::format("label block is {} bytes, expected {}",
                                                  block.size(), kLabelSizeBytes));
  if (std::memcmp(block.data() + kOffMagic, kMagic, sizeof(kMagic)) != 0) return std::nullopt;

  const uint32_t stored = static_cast<uint32_t>(get_le(block.data() + kOffChecksum, 4));
  const uint32_t computed = crc32c(block.subspan(0, kOffChecksum));
  if (stored != computed)
    return make_error(Errc::kCorrupt, fmt::format("RSIO label checksum mismatch (stored "
                                                  "0x{:08x}, computed 0x{:08x})",
                                                  stored, computed));
  const uint64_t version = get_le(block.data() + kOffVersion, 4);
  if (version > kLabelVersion)
    return make_error(Errc::kUnsupportedVersion,
                      fmt::format("RSIO label version {} is newer than this release ({})", version,
                                  kLabelVersion));
  if (version == 0 || get_le(block.data() + kOffSize, 4) != kLabelSizeBytes)
    return make_error(Errc::kCorrupt, "RSIO label has a bad version or size field");

  PvLabel l;
  std::memcpy(l.pv_uuid.bytes.data(), block.data() + kOffPvUuid, 16);
  std::memcpy(l.pool_uuid.bytes.data(), block.data() + kOffPoolUuid, 16);
  l.generation = get_le(block.data() + kOffGeneration, 8);
  l.pv_size_bytes = get_le(block.data() + kOffPvSize, 8);
  l.data_offset_bytes = get_le(block.data() + kOffDataOffset, 8);
  l.extent_size_bytes = get_le(block.data() + kOffExtentSize, 8);
  l.created_ms = static_cast<int64_t>(get_le(block.data() + kOffCreated, 8));
  const auto* name = reinterpret_cast<const char*>(block.data() + kOffPoolName);
  l.pool_name.assign(name, strnlen(name, kLabelPoolNameBytes));
  if (l.pv_uuid.is_nil() || l.pool_uuid.is_nil() || l.data_offset_bytes == 0 ||
      l.data_offset_bytes >= l.pv_size_bytes || l.extent_size_bytes == 0)
    return make_error(Errc::kCorrupt, "RSIO label has inconsistent fields");
  return std::optional<PvLabel>(std::move(l));
}

}  // namespace rsio::volmgr
