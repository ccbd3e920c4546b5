// Copies of a pool's metadata in the label area of each of its PVs, so that pools, PVs and
// volumes can be rebuilt from the disks when the database is lost (docs/on-disk-label.md,
// "Metadata copies").
//
// Each labelled PV has two slots between the label and the data area. Generation g of a
// pool's metadata goes to slot g % 2 of every PV of the pool, so a write torn by a crash
// leaves the other slot (generation g - 1) intact. A slot holds a 128-byte header with two
// checksums and the zlib-compressed JSON document.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/ids.h"
#include "common/result.h"

namespace rsio::volmgr {

inline constexpr uint64_t kCopySlotOffsets[2] = {64ULL << 10, 544ULL << 10};
inline constexpr uint64_t kCopySlotBytes = 480ULL << 10;
inline constexpr uint64_t kCopyHeaderBytes = 128;

struct CopySlot {
  uint64_t generation = 0;
  std::string json;  // the pool document
};

// Writes generation `generation` of the pool document `json` into its slot
// (generation % 2) and makes it durable. Errors: kInvalidArgument when the compressed
// document does not fit the slot, kIo.
Status write_pool_copy(int fd, const Uuid& pool, const Uuid& pv, uint64_t generation,
                       std::string_view json);

// Reads slot `slot`. nullopt: the slot was never written (no magic). Errors: kCorrupt (a
// checksum, the length, the decompression or the owner does not match), kIo.
Result<std::optional<CopySlot>> read_pool_copy(int fd, int slot, const Uuid& pool, const Uuid& pv);

// Overwrites one byte of the slot's payload; for tests of the damage detection only.
Status damage_pool_copy_for_test(int fd, int slot);

}  // namespace rsio::volmgr
