// The volume manager: pools, physical volumes and volumes, kept in memory for fast reads and
// persisted to the metadata database with one transaction per operation.
//
// Thread-safety: not thread-safe. rsiod calls it from its metadata thread only; the device
// operations (label reads/writes, sparse file creation) block that thread briefly.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "db/sqlite.h"
#include "volmgr/allocator.h"
#include "volmgr/label.h"
#include "volmgr/lun.h"
#include "volmgr/model.h"

namespace rsio::volmgr {

inline constexpr uint64_t kExtentSizeMinBytes = 64ULL << 10;
inline constexpr uint64_t kExtentSizeMaxBytes = 1ULL << 30;

struct CreatePoolRequest {
  std::string name;
  uint64_t extent_size_bytes = kDefaultExtentSizeBytes;
  bool make_default = false;  // the first pool is always made the default
};

struct AddDeviceRequest {
  std::string pool;  // empty: the default pool
  std::string path;
  std::optional<uint64_t> create_size_bytes;  // create a sparse file of this size first
  bool force = false;  // overwrite a foreign or damaged label / other content
  std::string lun_id;  // stable identity when the device is imported as a LUN
};

// A LUN named by identity (WWN), kernel name, device path or /dev/disk/by-id name.
struct ImportLunRequest {
  std::string lun;
  std::string pool;  // empty: the default pool
  bool force = false;
};

struct PassthroughRequest {
  std::string name;  // the volume
  std::string lun;
  std::string pool;  // empty: the default pool, or a pool "gateway" created for it
};

struct VolumeManagerOptions {
  // Where to look for LUNs: used to find PVs and pass-through LUNs that moved to another
  // device name, and by the LUN commands. nullopt: no discovery (PVs are looked for at
  // their recorded paths only; the LUN commands fail).
  std::optional<LunScanOptions> scan;
};

// What a rescan found: PVs (ids) whose device is back, and those still not ok.
struct RescanReport {
  std::vector<int64_t> back;
  std::vector<int64_t> still_missing;
};

// A discovered LUN and what the appliance uses it for.
struct LunUsage {
  Lun lun;
  std::string use;     // "free", "pv", "passthrough", "in-use"
  std::string detail;  // pool/volume it belongs to, or why the OS uses it
};

struct CreateVolumeRequest {
  std::string name;
  std::string pool;  // empty: the default pool
  uint64_t size_bytes = 0;
  LayoutSpec spec;
  uint64_t block_size_bytes = 512;
};

struct PoolUsage {
  PoolInfo info;
  size_t pv_count = 0;
  uint64_t extent_count = 0;
  uint64_t free_extents = 0;
  size_t volume_count = 0;
};

struct PvUsage {
  PvInfo info;
  std::string pool_name;
  uint64_t free_extents = 0;
};

class VolumeManager {
 public:
  // Loads pools, PVs and volumes from `db` (already migrated) and verifies each PV's label;
  // a PV whose file is missing or whose label does not match is marked so and receives no
  // allocations, but rsiod still starts. Reads only the 4 KiB label of each PV. `db` must
  // outlive the manager. Errors: kCorrupt when the metadata is inconsistent (extents used
  // twice, malformed segments); the database is not modified.
  static Result<std::unique_ptr<VolumeManager>> open(db::Database& db,
                                                     VolumeManagerOptions options = {});

  // Errors: kInvalidArgument (name, extent size), kAlreadyExists.
  Result<PoolInfo> create_pool(const CreatePoolRequest& req);
  // Errors: kNotFound, kInUse (the pool still has devices).
  Status delete_pool(std::string_view name);
  // Makes the pool the one volumes and devices go to when no pool is named. Errors: kNotFound.
  Result<PoolInfo> set_default_pool(std::string_view name);

  // Labels the device and adds it to the pool. Errors: kNotFound (pool, path),
  // kAlreadyExists (file to create exists, device already a PV), kInUse (block device
  // mounted or held), kInvalidArgument (too small, carries another pool's label or other
  // data and !force), kIo. On error nothing is changed and a file created here is removed.
  Result<PvUsage> add_device(const AddDeviceRequest& req);
  // Removes an unused PV from its pool and wipes its label. Errors: kNotFound, kInUse.
  // Returns the PV as it was.
  Result<PvInfo> remove_device(std::string_view path);

  // LUNs: discovery with what each is used for; import as a labelled PV (add_device by the
  // LUN's device, recording its identity); a pass-through volume over the whole LUN, whose
  // data is left as it is. Errors: kUnavailable (no discovery), kNotFound (no such LUN),
  // kInUse (mounted, held, partitioned, already used), kInvalidArgument (a pass-through LUN
  // without a stable identity or carrying an RSIO label), and those of add_device.
  Result<std::vector<LunUsage>> luns() const;
  Result<PvUsage> import_lun(const ImportLunRequest& req);
  Result<VolumeInfo> create_passthrough(const PassthroughRequest& req);
  bool is_passthrough(const VolumeInfo& v) const;
  // Looks again for every PV that is not ok, as at start-up (by label, by identity); those
  // found become ok and usable. The caller reopens the volumes on them. Errors:
  // kUnavailable (no discovery), and when new paths cannot be recorded.
  Result<RescanReport> rescan();

  // Metadata copies in the PVs' label areas (volmgr/pool_copy.h). Every change marks its
  // pool; flush_pool_copies() writes generation N+1 of each marked pool to its PVs. rsiod
  // flushes shortly after a change and at shutdown; the database stays authoritative.
  // `on_dirty` is called when a pool becomes marked.
  void set_on_dirty(std::function<void()> on_dirty) { on_dirty_ = std::move(on_dirty); }
  void flush_pool_copies();
  // Marks every pool, for a change outside the volume manager that the copies carry (the
  // id high-water marks).
  void refresh_pool_copies() {
    for (const auto& [id, pool] : pools_) mark_dirty(id);
  }
  // The document stored in the copies (JSON, see docs/on-disk-label.md).
  std::string pool_document(int64_t pool_id) const;
  uint64_t copy_generation(int64_t pool_id) const;

  // Errors: kInvalidArgument (name, size, layout), kAlreadyExists, kNotFound (pool),
  // kNoSpace (saying what is missing).
  Result<VolumeInfo> create_volume(const CreateVolumeRequest& req);
  // Grows or (with `force`) shrinks to `size_bytes` rounded up to whole extents.
  // Errors: kNotFound, kInvalidArgument (shrink without force, bad size), kNoSpace.
  Result<VolumeInfo> resize_volume(std::string_view name, uint64_t size_bytes, bool force);
  // Errors: kNotFound, kInvalidArgument, kAlreadyExists.
  Result<VolumeInfo> rename_volume(std::string_view name, std::string_view new_name);

  // Records the state of a mirror leg (as decided by the I/O engine). Errors: kNotFound,
  // kInvalidArgument (not a leg of a mirrored volume).
  Status set_leg_state(int64_t volume_id, uint32_t leg, LegState state, std::string_view detail);

  // Runs inside the delete transaction, before the volume row is removed, so callers can
  // check and remove rows that refer to the volume (grants) atomically with the delete.
  using DeleteHook = std::function<Status(db::Database&, const VolumeInfo&)>;
  // Returns the id of the pass-through LUN's PV that left with the volume, if it was one.
  // Errors: kNotFound, whatever `hook` returns.
  Result<std::optional<int64_t>> delete_volume(std::string_view name, const DeleteHook& hook);

  // Mirror legs. add_leg gives a linear or mirrored volume one more leg on devices no other
  // leg uses (a linear volume becomes a 2-way mirror); the new leg is recorded as resyncing.
  // remove_leg drops leg `leg` and frees its extents (a 2-way mirror becomes linear); the
  // last in-sync leg is kept unless `force`. replace_leg does both in one transaction: the
  // new leg takes the last index. Errors: kNotFound, kInvalidArgument (layout, leg index,
  // too many legs), kNoSpace (no device outside the other legs with room for a segment),
  // kInUse (removing the only in-sync leg).
  Result<VolumeInfo> add_leg(std::string_view name);
  Result<VolumeInfo> remove_leg(std::string_view name, uint32_t leg, bool force);
  Result<VolumeInfo> replace_leg(std::string_view name, uint32_t leg);

  std::vector<PoolUsage> pools() const;
  std::vector<PvUsage> devices() const;
  // Volumes in creation (id) order.
  std::vector<const VolumeInfo*> volumes() const;

  const VolumeInfo* find_volume(std::string_view name) const;
  const VolumeInfo* find_volume(int64_t id) const;
  const PoolInfo* find_pool(std::string_view name) const;
  const PoolInfo* find_pool(int64_t id) const;
  const PvInfo* find_pv(int64_t id) const;
  const PoolInfo* default_pool() const;

 private:
  VolumeManager(db::Database& db, VolumeManagerOptions options)
      : db_(db), options_(std::move(options)) {}
  Status load();
  void verify_labels();
  std::optional<std::pair<PvState, std::string>> identify(
      PvInfo& pv, std::optional<Result<std::vector<Lun>>>& luns);
  // Looks for a PV that is not at its recorded path among the discovered LUNs; updates its
  // path when exactly one device carries its label (or, for a pass-through LUN, its
  // identity). Returns why it is not found: kNotFound, kInUse, kAlreadyExists (the label is
  // on several devices: never guessed).
  std::optional<Error> relocate(PvInfo& pv, const std::vector<Lun>& luns);
  void record_path(PvInfo& pv, const std::string& path, std::string_view why);
  Status persist_moves();
  void mark_dirty(int64_t pool_id);
  Result<std::vector<Lun>> scan() const;
  Result<Lun> lun_for_use(std::string_view key, const std::vector<Lun>& luns) const;
  Result<const PoolInfo*> resolve_pool(std::string_view name) const;
  Status insert_pv(PvInfo& pv);
  Status insert_volume(VolumeInfo& v);
  Status insert_segments(const VolumeInfo& v);
  Status replace_segments(const VolumeInfo& v);
  Status persist_legs(const VolumeInfo& v);
  Result<VolumeInfo> change_legs(std::string_view name, std::optional<uint32_t> remove, bool add,
                                 bool force);
  PoolUsage usage_of(const PoolInfo& pool) const;

  db::Database& db_;
  VolumeManagerOptions options_;
  std::function<void()> on_dirty_;
  std::set<int64_t> dirty_pools_;
  std::map<int64_t, uint64_t> copy_generation_;  // by pool id: newest generation written
  std::map<std::string, std::optional<PvLabel>> scan_labels_;  // labels seen while starting
  std::vector<std::pair<int64_t, std::string>> moved_;         // PVs found elsewhere: id, old path
  std::map<int64_t, PoolInfo> pools_;
  std::map<int64_t, PoolSpace> space_;  // by pool id
  std::map<int64_t, PvInfo> pvs_;
  std::map<int64_t, VolumeInfo> volumes_;
  std::unordered_map<std::string, int64_t> volume_ids_;
};

}  // namespace rsio::volmgr
