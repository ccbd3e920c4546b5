#include "volmgr/pool_copy.h"

#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <vector>

#include "little_endian.h"
#include "volmgr/device.h"

namespace rsio::volmgr {
namespace {

constexpr char kMagic[8] = {'R', 'S', 'I', 'O', 'M', 'D', 'C', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kOffVersion = 8;
constexpr size_t kOffHeaderBytes = 12;
constexpr size_t kOffGeneration = 16;
constexpr size_t kOffStored = 24;
constexpr size_t kOffRaw = 28;
constexpr size_t kOffPool = 32;
constexpr size_t kOffPv = 48;
constexpr size_t kOffPayloadCrc = 64;
constexpr size_t kOffHeaderCrc = kCopyHeaderBytes - 4;

}  // namespace

Status write_pool_copy(int fd, const Uuid& pool, const Uuid& pv, uint64_t generation,
                       std::string_view json) {
  uLongf stored = compressBound(static_cast<uLong>(json.size()));
  std::vector<std::byte> buf(kCopyHeaderBytes + stored);
  if (compress2(reinterpret_cast<Bytef*>(buf.data() + kCopyHeaderBytes), &stored,
                reinterpret_cast<const Bytef*>(json.data()), static_cast<uLong>(json.size()),
                Z_BEST_SPEED) != Z_OK)
    return make_error(Errc::kInternal, "cannot compress the pool's metadata copy");
  if (kCopyHeaderBytes + stored > kCopySlotBytes)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("the pool's metadata ({} bytes compressed) does not fit the "
                                  "{}-byte copy slot; back up the database instead",
                                  stored, kCopySlotBytes - kCopyHeaderBytes));
  buf.resize(kCopyHeaderBytes + stored);
  std::byte* h = buf.data();
  std::memcpy(h, kMagic, sizeof(kMagic));
  put_le(h + kOffVersion, kVersion, 4);
  put_le(h + kOffHeaderBytes, kCopyHeaderBytes, 4);
  put_le(h + kOffGeneration, generation, 8);
  put_le(h + kOffStored, stored, 4);
  put_le(h + kOffRaw, json.size(), 4);
  std::memcpy(h + kOffPool, pool.bytes.data(), 16);
  std::memcpy(h + kOffPv, pv.bytes.data(), 16);
  put_le(h + kOffPayloadCrc, crc32c(std::span(buf.data() + kCopyHeaderBytes, stored)), 4);
  put_le(h + kOffHeaderCrc, crc32c(std::span(h, kOffHeaderCrc)), 4);
  RSIO_TRY_STATUS(write_at(fd, buf, kCopySlotOffsets[generation % 2], "write metadata copy"));
  if (::fdatasync(fd) != 0) return errno_error("sync metadata copy", errno);
  return {};
}

Result<std::optional<CopySlot>> read_pool_copy(int fd, int slot, const Uuid& pool, const Uuid& pv) {
  const uint64_t base = kCopySlotOffsets[slot & 1];
  std::byte h[kCopyHeaderBytes];
  RSIO_TRY_STATUS(read_at(fd, h, base, "read metadata copy"));
  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) return std::nullopt;
  const auto where = [&] { return fmt::format("metadata copy in slot {}", slot & 1); };
  if (get_le(h + kOffHeaderCrc, 4) != crc32c(std::span<const std::byte>(h, kOffHeaderCrc)))
    return make_error(Errc::kCorrupt, where() + ": header checksum mismatch");
  if (get_le(h + kOffVersion, 4) != kVersion || get_le(h + kOffHeaderBytes, 4) != kCopyHeaderBytes)
    return make_error(Errc::kCorrupt, where() + ": unknown version or header size");
  Uuid owner_pool, owner_pv;
  std::memcpy(owner_pool.bytes.data(), h + kOffPool, 16);
  std::memcpy(owner_pv.bytes.data(), h + kOffPv, 16);
  if (owner_pool != pool || owner_pv != pv)
    return make_error(Errc::kCorrupt,
                      where() + fmt::format(" was written for pv={} pool={}, not for this PV",
                                            owner_pv.str(), owner_pool.str()));
  const uint64_t stored = get_le(h + kOffStored, 4), raw = get_le(h + kOffRaw, 4);
  if (stored == 0 || kCopyHeaderBytes + stored > kCopySlotBytes || raw > (64ULL << 20))
    return make_error(Errc::kCorrupt, where() + ": bad payload length");
  std::vector<std::byte> payload(stored);
  RSIO_TRY_STATUS(read_at(fd, payload, base + kCopyHeaderBytes, "read metadata copy"));
  if (get_le(h + kOffPayloadCrc, 4) != crc32c(payload))
    return make_error(Errc::kCorrupt, where() + ": payload checksum mismatch");
  CopySlot out;
  out.generation = get_le(h + kOffGeneration, 8);
  out.json.resize(raw);
  uLongf len = static_cast<uLongf>(raw);
  if (uncompress(reinterpret_cast<Bytef*>(out.json.data()), &len,
                 reinterpret_cast<const Bytef*>(payload.data()),
                 static_cast<uLong>(payload.size())) != Z_OK ||
      len != raw)
    return make_error(Errc::kCorrupt, where() + ": payload does not decompress");
  return std::optional<CopySlot>(std::move(out));
}

Status damage_pool_copy_for_test(int fd, int slot) {
  const uint64_t off = kCopySlotOffsets[slot & 1] + kCopyHeaderBytes + 7;
  std::byte b[1]{};
  RSIO_TRY_STATUS(read_at(fd, b, off, "read metadata copy"));
  b[0] ^= std::byte{0x5a};
  return write_at(fd, b, off, "write metadata copy");
}

}  // namespace rsio::volmgr
