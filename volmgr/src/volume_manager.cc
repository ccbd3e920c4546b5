#include "volmgr/volume_manager.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "common/assert.h"
#include "common/log.h"
#include "common/names.h"
#include "common/units.h"
#include "volmgr/device.h"
#include "volmgr/pool_copy.h"

namespace rsio::volmgr {

std::string_view layout_name(Layout layout) {
  switch (layout) {
    case Layout::kLinear:
      return "linear";
    case Layout::kStriped:
      return "striped";
    case Layout::kMirrored:
      return "mirrored";
  }
  return "linear";
}

std::optional<Layout> parse_layout(std::string_view name) {
  if (name == "linear") return Layout::kLinear;
  if (name == "striped") return Layout::kStriped;
  if (name == "mirrored") return Layout::kMirrored;
  return std::nullopt;
}

std::string_view leg_state_name(LegState s) {
  switch (s) {
    case LegState::kInSync:
      return "in-sync";
    case LegState::kFaulty:
      return "faulty";
    case LegState::kResyncing:
      return "resyncing";
  }
  return "in-sync";
}

std::optional<LegState> parse_leg_state(std::string_view name) {
  if (name == "in-sync") return LegState::kInSync;
  if (name == "faulty") return LegState::kFaulty;
  if (name == "resyncing") return LegState::kResyncing;
  return std::nullopt;
}

std::string_view pv_kind_name(PvKind kind) {
  switch (kind) {
    case PvKind::kFile:
      return "file";
    case PvKind::kBlock:
      return "block";
    case PvKind::kLun:
      return "lun";
  }
  return "file";
}

std::string_view pv_state_name(PvState state) {
  switch (state) {
    case PvState::kOk:
      return "ok";
    case PvState::kMissing:
      return "missing";
    case PvState::kLabelMismatch:
      return "label-mismatch";
    case PvState::kSizeMismatch:
      return "size-mismatch";
  }
  return "ok";
}

namespace {

Uuid uuid_from_db(const std::string& text) {
  auto u = Uuid::parse(text);
  return u ? *u : Uuid{};
}

}  // namespace

Result<std::unique_ptr<VolumeManager>> VolumeManager::open(db::Database& db,
                                                           VolumeManagerOptions options) {
  std::unique_ptr<VolumeManager> vm(new VolumeManager(db, std::move(options)));
  RSIO_TRY_STATUS(vm->load());
  vm->verify_labels();
  // Every start refreshes the copies, so PVs labelled by an older release get theirs.
  for (const auto& [id, pool] : vm->pools_) vm->dirty_pools_.insert(id);
  return vm;
}

Status VolumeManager::load() {
  {
    RSIO_TRY(
        db::Statement * st,
        db_.prepare("SELECT id, uuid, name, extent_size_bytes, is_default, created_ms FROM pools"));
    for (;;) {
      RSIO_TRY(bool row, st->step());
      if (!row) break;
      PoolInfo p;
      p.id = st->column_int64(0);
      p.uuid = uuid_from_db(st->column_text(1));
      p.name = st->column_text(2);
      p.extent_size_bytes = static_cast<uint64_t>(st->column_int64(3));
      p.is_default = st->column_int64(4) != 0;
      p.created_ms = st->column_int64(5);
      space_[p.id];
      pools_.emplace(p.id, std::move(p));
    }
  }
  {
    RSIO_TRY(
        db::Statement * st,
        db_.prepare(
            "SELECT id, uuid, pool_id, path, kind, size_bytes, data_offset_bytes, extent_count, "
            "label_generation, created_ms, coalesce(lun_id, '') FROM pvs"));
    for (;;) {
      RSIO_TRY(bool row, st->step());
      if (!row) break;
      PvInfo pv;
      pv.id = st->column_int64(0);
      pv.uuid = uuid_from_db(st->column_text(1));
      pv.pool_id = st->column_int64(2);
      pv.path = st->column_text(3);
      const std::string kind = st->column_text(4);
      pv.kind = kind == "block" ? PvKind::kBlock : kind == "lun" ? PvKind::kLun : PvKind::kFile;
      pv.size_bytes = static_cast<uint64_t>(st->column_int64(5));
      pv.data_offset_bytes = static_cast<uint64_t>(st->column_int64(6));
      pv.extent_count = static_cast<uint64_t>(st->column_int64(7));
      pv.label_generation = static_cast<uint64_t>(st->column_int64(8));
      pv.created_ms = st->column_int64(9);
      pv.lun_id = st->column_text(10);
      space_.at(pv.pool_id).add_pv(pv.id, pv.extent_count);
      // A pass-through LUN belongs to its volume alone.
      if (pv.kind == PvKind::kLun) space_.at(pv.pool_id).set_usable(pv.id, false);
      pvs_.emplace(pv.id, std::move(pv));
    }
  }
  {
    RSIO_TRY(db::Statement * st,
             db_.prepare(
                 "SELECT id, uuid, name, pool_id, size_bytes, block_size_bytes, layout, stripes, "
                 "stripe_size_bytes, mirrors, created_ms FROM volumes"));
    for (;;) {
      RSIO_TRY(bool row, st->step());
      if (!row) break;
      VolumeInfo v;
      v.id = st->column_int64(0);
      v.uuid = uuid_from_db(st->column_text(1));
      v.name = st->column_text(2);
      v.pool_id = st->column_int64(3);
      v.size_bytes = static_cast<uint64_t>(st->column_int64(4));
      v.block_size_bytes = static_cast<uint64_t>(st->column_int64(5));
      v.spec.layout = parse_layout(st->column_text(6)).value_or(Layout::kLinear);
      v.spec.stripes = static_cast<uint32_t>(st->column_int64(7));
      v.spec.stripe_size_bytes = static_cast<uint64_t>(st->column_int64(8));
      v.spec.mirrors = static_cast<uint32_t>(st->column_int64(9));
      v.created_ms = st->column_int64(10);
      volume_ids_.emplace(v.name, v.id);
      volumes_.emplace(v.id, std::move(v));
    }
  }
  {
    RSIO_TRY(db::Statement * st,
             db_.prepare(
                 "SELECT s.volume_id, s.idx, s.start_extent, s.extent_count, a.area_idx, a.pv_id, "
                 "a.pv_start_extent, a.extent_count FROM segments s JOIN areas a "
                 "ON a.volume_id = s.volume_id AND a.segment_idx = s.idx "
                 "ORDER BY s.volume_id, s.idx, a.area_idx"));
    for (;;) {
      RSIO_TRY(bool row, st->step());
      if (!row) break;
      VolumeInfo& v = volumes_.at(st->column_int64(0));
      const auto idx = static_cast<size_t>(st->column_int64(1));
      if (idx >= v.segments.size()) v.segments.resize(idx + 1);
      Segment& s = v.segments[idx];
      s.start_extent = static_cast<uint64_t>(st->column_int64(2));
      s.extent_count = static_cast<uint64_t>(st->column_int64(3));
      s.areas.push_back(Area{st->column_int64(5), static_cast<uint64_t>(st->column_int64(6)),
                             static_cast<uint64_t>(st->column_int64(7))});
    }
  }
  for (auto& [id, v] : volumes_) {
    if (v.spec.layout == Layout::kMirrored) {
      v.leg_states.assign(v.spec.mirrors, LegState::kInSync);
      v.leg_details.assign(v.spec.mirrors, "");
    }
  }
  {
    RSIO_TRY(db::Statement * st,
             db_.prepare("SELECT volume_id, leg, state, detail FROM mirror_legs"));
    for (;;) {
      RSIO_TRY(bool row, st->step());
      if (!row) break;
      auto it = volumes_.find(st->column_int64(0));
      const auto leg = static_cast<size_t>(st->column_int64(1));
      if (it == volumes_.end() || leg >= it->second.leg_states.size())
        return make_error(Errc::kCorrupt, fmt::format("mirror_legs names leg {} of volume_id={}, "
                                                      "which has no such leg",
                                                      leg, st->column_int64(0)));
      it->second.leg_states[leg] = parse_leg_state(st->column_text(2)).value_or(LegState::kFaulty);
      it->second.leg_details[leg] = st->column_text(3);
    }
  }
  for (auto& [id, v] : volumes_) {
    if (Status st = check_segments(v.spec, v.segments); !st)
      return make_error(Errc::kCorrupt, fmt::format("volume '{}' has a malformed mapping: {}",
                                                    v.name, st.error().message));
    if (Status st = reserve_segments(space_.at(v.pool_id), v.segments); !st)
      return make_error(Errc::kCorrupt, fmt::format("volume '{}': {}", v.name, st.error().message));
  }
  return {};
}

// Where `pv` is now and whether it is this PV; nullopt when it is (its path may have been
// updated in memory, see record_path). `luns` is filled by discovery the first time a PV
// needs it.
std::optional<std::pair<PvState, std::string>> VolumeManager::identify(
    PvInfo& pv, std::optional<Result<std::vector<Lun>>>& luns) {
  using Finding = std::optional<std::pair<PvState, std::string>>;
  const PoolInfo& pool = pools_.at(pv.pool_id);
  const uint64_t needed = pv.kind == PvKind::kLun
                              ? pv.size_bytes
                              : pv.data_offset_bytes + pv.extent_count * pool.extent_size_bytes;
  // Checks the device at pv.path.
  auto check = [&]() -> Finding {
    auto fd = open_device(pv.path, false);
    if (!fd) return std::make_pair(PvState::kMissing, fd.error().message);
    if (pv.kind != PvKind::kLun) {
      auto label = read_label(fd->get());
      if (!label) return std::make_pair(PvState::kLabelMismatch, label.error().message);
      if (!label->has_value())
        return std::make_pair(PvState::kLabelMismatch,
                              std::string("no RSIO label (the device at this path was replaced?)"));
      if ((*label)->pv_uuid != pv.uuid || (*label)->pool_uuid != pool.uuid)
        return std::make_pair(PvState::kLabelMismatch,
                              fmt::format("label belongs to pv={} pool={}, not to this PV",
                                          (*label)->pv_uuid.str(), (*label)->pool_uuid.str()));
    }
    if (auto probe = probe_device(pv.path); probe && probe->size_bytes < needed)
      return std::make_pair(PvState::kSizeMismatch,
                            fmt::format("device shrank to {} bytes but its extents need {} bytes",
                                        probe->size_bytes, needed));
    return std::nullopt;
  };
  if (pv.kind == PvKind::kFile) return check();
  // Block devices and LUNs: the kernel may have given the disk another name, or a
  // multipath map may now stand in front of it. Discovery decides where it is now.
  if (options_.scan) {
    if (!luns) luns = scan();
    const auto& found = *luns;
    if (!found) {
      if (pv.kind == PvKind::kLun)
        return std::make_pair(PvState::kMissing,
                              "cannot identify the LUN: " + found.error().message);
    } else if (auto why = relocate(pv, *found)) {
      if (pv.kind == PvKind::kLun) return std::make_pair(PvState::kMissing, why->message);
      if (why->code == Errc::kAlreadyExists)  // the label is on several devices
        return std::make_pair(PvState::kLabelMismatch, why->message);
      // A labelled PV may still be at its recorded path (discovery may not see it); the
      // label check below decides.
      log::debug("pv={}: {}", pv.uuid.str(), why->message);
    }
  } else if (pv.kind == PvKind::kLun) {
    return std::make_pair(PvState::kMissing,
                          std::string("LUN discovery is off; a pass-through LUN is only used "
                                      "once its identity is confirmed"));
  }
  return check();
}

void VolumeManager::verify_labels() {
  // Discovery is read once, and only when a PV is not where it was recorded (or is a LUN).
  std::optional<Result<std::vector<Lun>>> luns;  // discovered once, when first needed
  scan_labels_.clear();
  for (auto& [id, pv] : pvs_) {
    if (auto bad = identify(pv, luns)) {
      pv.state = bad->first;
      pv.state_detail = std::move(bad->second);
      space_.at(pv.pool_id).set_usable(pv.id, false);
      log::error("pv={} path={}: {}; volumes on it are unavailable until it is back", pv.uuid.str(),
                 pv.path, pv.state_detail);
    }
  }
  if (Status st = persist_moves(); !st) {
    // The devices are where discovery found them; only the record is behind. The next
    // start finds them again.
    log::error("new device paths not recorded: {}", st.error().message);
    moved_.clear();
  }
  // The newest generation of each pool's metadata copies, so the next write goes above it.
  for (const auto& [id, pv] : pvs_) {
    if (pv.kind == PvKind::kLun || pv.state != PvState::kOk) continue;
    auto fd = open_device(pv.path, false);
    if (!fd) continue;
    for (int slot = 0; slot < 2; ++slot) {
      auto copy = read_pool_copy(fd->get(), slot, pools_.at(pv.pool_id).uuid, pv.uuid);
      if (copy && copy->has_value())
        copy_generation_[pv.pool_id] = std::max(copy_generation_[pv.pool_id], (*copy)->generation);
    }
  }
}

Result<RescanReport> VolumeManager::rescan() {
  if (!options_.scan)
    return make_error(Errc::kUnavailable, "LUN discovery is not enabled in this rsiod");
  std::optional<Result<std::vector<Lun>>> luns;  // discovered once, when first needed
  scan_labels_.clear();
  RescanReport report;
  for (auto& [id, pv] : pvs_) {
    if (pv.state == PvState::kOk) continue;
    if (auto bad = identify(pv, luns)) {
      pv.state = bad->first;
      pv.state_detail = std::move(bad->second);
      report.still_missing.push_back(pv.id);
      continue;
    }
    pv.state = PvState::kOk;
    pv.state_detail.clear();
    if (pv.kind != PvKind::kLun) space_.at(pv.pool_id).set_usable(pv.id, true);
    report.back.push_back(pv.id);
    log::info("pv={} path={}: back", pv.uuid.str(), pv.path);
  }
  if (Status st = persist_moves(); !st) {
    moved_.clear();
    return make_error(
        st.error().code,
        "devices found, but their new paths could not be recorded: " + st.error().message);
  }
  return report;
}

Result<std::vector<Lun>> VolumeManager::scan() const {
  if (!options_.scan)
    return make_error(Errc::kUnavailable, "LUN discovery is not enabled in this rsiod");
  return discover_luns(*options_.scan);
}

std::optional<Error> VolumeManager::relocate(PvInfo& pv, const std::vector<Lun>& luns) {
  const PoolInfo& pool = pools_.at(pv.pool_id);
  if (pv.kind == PvKind::kLun) {
    const Lun* hit = nullptr;
    for (const Lun& l : luns)
      if (!l.is_multipath_path() && l.identity == pv.lun_id) {
        hit = &l;
        break;
      }
    if (hit == nullptr)
      return make_error(Errc::kNotFound,
                        fmt::format("LUN {} is not visible (check zoning, cabling and "
                                    "multipath)",
                                    pv.lun_id));
    if (!hit->holders.empty())
      return make_error(Errc::kInUse,
                        fmt::format("LUN {} ({}) is held by {}; free it first", pv.lun_id,
                                    hit->device_path, fmt::join(hit->holders, ", ")));
    if (hit->device_path != pv.path) record_path(pv, hit->device_path, "its identity " + pv.lun_id);
    return std::nullopt;
  }
  // A labelled PV: the device carrying its label. Multipath member paths show the same
  // label as their map and are never taken; the map is.
  std::vector<const Lun*> carriers;
  for (const Lun& l : luns) {
    if (l.is_multipath_path() || !l.holders.empty()) continue;
    auto cached = scan_labels_.find(l.device_path);
    if (cached == scan_labels_.end()) {
      std::optional<PvLabel> label;
      UniqueFd fd(::open(l.device_path.c_str(), O_RDONLY | O_CLOEXEC));
      if (fd)
        if (auto read = read_label(fd.get()); read && read->has_value()) label = **read;
      cached = scan_labels_.emplace(l.device_path, std::move(label)).first;
    }
    if (cached->second && cached->second->pv_uuid == pv.uuid &&
        cached->second->pool_uuid == pool.uuid)
      carriers.push_back(&l);
  }
  if (carriers.empty()) return make_error(Errc::kNotFound, "no device carries its label");
  if (carriers.size() > 1) {
    std::vector<std::string> names;
    for (const Lun* l : carriers) names.push_back(l->device_path);
    return make_error(Errc::kAlreadyExists,
                      fmt::format("its label is on {} devices ({}): a copy of the LUN? Refusing "
                                  "to guess; detach the copies and restart rsiod",
                                  names.size(), fmt::join(names, ", ")));
  }
  // Compare devices, not names: /dev/disk/by-id/... and /dev/sdc may be the same disk.
  auto now = probe_device(carriers[0]->device_path);
  auto recorded = probe_device(pv.path);
  if (now && recorded && same_device(*now, *recorded)) return std::nullopt;
  record_path(pv, carriers[0]->device_path, "its label");
  return std::nullopt;
}

void VolumeManager::record_path(PvInfo& pv, const std::string& path, std::string_view why) {
  log::warn("pv={} found at {} by {} (recorded at {})", pv.uuid.str(), path, why, pv.path);
  moved_.emplace_back(pv.id, pv.path);
  pv.path = path;
  mark_dirty(pv.pool_id);
}

// Devices may have swapped names (loop1 <-> loop2), so every move goes through a name no
// device has before taking its new one, all in one transaction.
Status VolumeManager::persist_moves() {
  if (moved_.empty()) return {};
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(db::Statement * st, db_.prepare("UPDATE pvs SET path = ? WHERE id = ?"));
  for (const auto& [id, old_path] : moved_) {
    st->bind_all("moving:" + pvs_.at(id).uuid.str(), id);
    RSIO_TRY_STATUS(st->run());
  }
  for (const auto& [id, old_path] : moved_) {
    st->bind_all(pvs_.at(id).path, id);
    RSIO_TRY_STATUS(st->run());
  }
  RSIO_TRY_STATUS(txn.commit());
  moved_.clear();
  return {};
}

void VolumeManager::mark_dirty(int64_t pool_id) {
  const bool first = dirty_pools_.empty();
  dirty_pools_.insert(pool_id);
  if (first && on_dirty_) on_dirty_();
}

uint64_t VolumeManager::copy_generation(int64_t pool_id) const {
  auto it = copy_generation_.find(pool_id);
  return it == copy_generation_.end() ? 0 : it->second;
}

void VolumeManager::flush_pool_copies() {
  std::set<int64_t> dirty;
  dirty.swap(dirty_pools_);
  for (int64_t pool_id : dirty) {
    auto pool = pools_.find(pool_id);
    if (pool == pools_.end()) continue;
    const std::string doc = pool_document(pool_id);
    const uint64_t generation = copy_generation(pool_id) + 1;
    size_t written = 0;
    for (const auto& [id, pv] : pvs_) {
      if (pv.pool_id != pool_id || pv.kind == PvKind::kLun || pv.state != PvState::kOk) continue;
      auto fd = open_device(pv.path, false);
      Status st = fd ? write_pool_copy(fd->get(), pool->second.uuid, pv.uuid, generation, doc)
                     : Status(fd.error());
      if (!st) {
        log::warn("metadata copy not written: pool={} pv={} path={}: {}", pool->second.name,
                  pv.uuid.str(), pv.path, st.error().message);
        continue;
      }
      ++written;
    }
    copy_generation_[pool_id] = generation;
    log::debug("metadata copy: pool={} generation={} devices={} bytes={}", pool->second.name,
               generation, written, doc.size());
  }
}

Result<const PoolInfo*> VolumeManager::resolve_pool(std::string_view name) const {
  if (name.empty()) {
    const PoolInfo* p = default_pool();
    if (p == nullptr)
      return make_error(Errc::kNotFound,
                        "there is no default pool; create one with `smgr --create-pool NAME "
                        "--default` and add a device to it, or name a pool with --pool");
    return p;
  }
  const PoolInfo* p = find_pool(name);
  if (p == nullptr)
    return make_error(
        Errc::kNotFound,
        fmt::format("pool '{}' does not exist; `smgr --pools` lists the pools", name));
  return p;
}

Result<PoolInfo> VolumeManager::create_pool(const CreatePoolRequest& req) {
  RSIO_TRY_STATUS(validate_name(req.name, "pool name"));
  if (req.extent_size_bytes < kExtentSizeMinBytes || req.extent_size_bytes > kExtentSizeMaxBytes ||
      (req.extent_size_bytes & (req.extent_size_bytes - 1)) != 0)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("invalid extent size {}: use a power of two from {} to {}",
                                  req.extent_size_bytes, format_size(kExtentSizeMinBytes),
                                  format_size(kExtentSizeMaxBytes)));
  if (find_pool(req.name) != nullptr)
    return make_error(Errc::kAlreadyExists, fmt::format("pool '{}' already exists", req.name));

  PoolInfo p;
  p.uuid = Uuid::random();
  p.name = req.name;
  p.extent_size_bytes = req.extent_size_bytes;
  p.is_default = req.make_default || pools_.empty();
  p.created_ms = now_ms();

  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  if (p.is_default) {
    RSIO_TRY(db::Statement * clear,
             db_.prepare("UPDATE pools SET is_default = 0 WHERE is_default = 1"));
    RSIO_TRY_STATUS(clear->run());
  }
  RSIO_TRY(db::Statement * st,
           db_.prepare("INSERT INTO pools (uuid, name, extent_size_bytes, is_default, created_ms) "
                       "VALUES (?, ?, ?, ?, ?)"));
  st->bind_all(p.uuid.str(), p.name, p.extent_size_bytes, int64_t{p.is_default}, p.created_ms);
  RSIO_TRY_STATUS(st->run());
  p.id = db_.last_insert_rowid();
  RSIO_TRY_STATUS(txn.commit());

  if (p.is_default)
    for (auto& [id, other] : pools_) other.is_default = false;
  space_[p.id];
  pools_.emplace(p.id, p);
  for (const auto& [id, other] : pools_) mark_dirty(id);  // the default flag is in every copy
  log::info("pool created: pool={} extent_size_bytes={} default={}", p.name, p.extent_size_bytes,
            p.is_default);
  return p;
}

Status VolumeManager::delete_pool(std::string_view name) {
  const PoolInfo* p = find_pool(name);
  if (p == nullptr)
    return make_error(Errc::kNotFound, fmt::format("pool '{}' does not exist", name));
  if (space_.at(p->id).pv_count() > 0)
    return make_error(Errc::kInUse, fmt::format("pool '{}' still has {} device(s); remove them "
                                                "first (smgr --remove-device PATH)",
                                                name, space_.at(p->id).pv_count()));
  const int64_t id = p->id;
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(db::Statement * st, db_.prepare("DELETE FROM pools WHERE id = ?"));
  st->bind_all(id);
  RSIO_TRY_STATUS(st->run());
  RSIO_TRY_STATUS(txn.commit());
  space_.erase(id);
  pools_.erase(id);
  log::info("pool deleted: pool={}", name);
  return {};
}

Result<PoolInfo> VolumeManager::set_default_pool(std::string_view name) {
  const PoolInfo* p = find_pool(name);
  if (p == nullptr)
    return make_error(Errc::kNotFound, fmt::format("pool '{}' does not exist", name));
  const int64_t id = p->id;
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(db::Statement * clear,
           db_.prepare("UPDATE pools SET is_default = 0 WHERE is_default = 1"));
  RSIO_TRY_STATUS(clear->run());
  RSIO_TRY(db::Statement * set, db_.prepare("UPDATE pools SET is_default = 1 WHERE id = ?"));
  set->bind_all(id);
  RSIO_TRY_STATUS(set->run());
  RSIO_TRY_STATUS(txn.commit());
  for (auto& [pid, pool] : pools_) {
    pool.is_default = pid == id;
    mark_dirty(pid);
  }
  log::info("default pool: pool={}", name);
  return pools_.at(id);
}

Result<PvUsage> VolumeManager::add_device(const AddDeviceRequest& req) {
  RSIO_TRY(const PoolInfo* pool, resolve_pool(req.pool));
  if (req.path.empty() || req.path.front() != '/')
    return make_error(Errc::kInvalidArgument,
                      fmt::format("device path '{}' must be absolute", req.path));

  // A file created here is removed again if anything below fails.
  bool created = false;
  struct Cleanup {
    const std::string& path;
    bool& created;
    ~Cleanup() {
      if (created) ::unlink(path.c_str());
    }
  } cleanup{req.path, created};

  const uint64_t min_size = kPvDataOffsetBytes + pool->extent_size_bytes;
  if (req.create_size_bytes) {
    if (*req.create_size_bytes < min_size)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("device size {} is too small: pool '{}' needs at least {} "
                                    "(1 MiB label area + one {} extent)",
                                    format_size(*req.create_size_bytes), pool->name,
                                    format_size(min_size), format_size(pool->extent_size_bytes)));
    if (Status st = create_sparse_file(req.path, *req.create_size_bytes); !st) {
      if (st.error().code == Errc::kAlreadyExists)
        return make_error(Errc::kAlreadyExists,
                          fmt::format("{} already exists; to use an existing file or device "
                                      "leave out the size",
                                      req.path));
      return st.error();
    }
    created = true;
  }

  RSIO_TRY(DeviceProbe probe, probe_device(req.path));
  for (const auto& [id, pv] : pvs_) {
    auto other = probe_device(pv.path);
    if (pv.path == probe.canonical_path || (other && same_device(*other, probe))) {
      if (pv.state != PvState::kOk)
        return make_error(
            Errc::kAlreadyExists,
            fmt::format("{} is where device pv={} of pool '{}' was recorded, which is {} ({}); "
                        "if that disk is gone for good, remove its record first ({})",
                        req.path, pv.uuid.str(), pools_.at(pv.pool_id).name,
                        pv_state_name(pv.state), pv.state_detail,
                        pv.kind == PvKind::kLun ? "delete its pass-through volume with smgr -d"
                                                : "smgr --remove-device " + pv.path));
      return make_error(Errc::kAlreadyExists,
                        fmt::format("{} is already a device of pool '{}' (as {})", req.path,
                                    pools_.at(pv.pool_id).name, pv.path));
    }
  }
  if (probe.size_bytes < min_size)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("{} is too small ({}): pool '{}' needs at least {} (1 MiB "
                                  "label area + one {} extent)",
                                  req.path, format_size(probe.size_bytes), pool->name,
                                  format_size(min_size), format_size(pool->extent_size_bytes)));

  RSIO_TRY(UniqueFd fd, open_device(probe.canonical_path, true));
  if (!created) {
    auto label = read_label(fd.get());
    if (!label && !req.force)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("{} carries a damaged or unknown RSIO label ({}); it may hold "
                                    "data of another appliance. Add --force to overwrite it",
                                    req.path, label.error().message));
    if (label && label->has_value() && !req.force) {
      const PvLabel& l = **label;
      bool ours = false;
      for (const auto& [id, p] : pools_) ours = ours || p.uuid == l.pool_uuid;
      // A label of one of our pools with an unknown PV UUID is left over from an add that
      // failed before its commit; anything else belongs to another pool.
      if (!ours)
        return make_error(Errc::kInvalidArgument,
                          fmt::format("{} belongs to another RSIO pool '{}' (pool uuid {}); it "
                                      "may hold another appliance's volumes. Add --force to "
                                      "overwrite it",
                                      req.path, l.pool_name, l.pool_uuid.str()));
    }
    if (label && !label->has_value() && !req.force) {
      RSIO_TRY(auto sig, detect_signature(fd.get()));
      if (sig)
        return make_error(Errc::kInvalidArgument,
                          fmt::format("{} contains {}; adding it would destroy that data. Add "
                                      "--force to overwrite it",
                                      req.path, *sig));
    }
  }

  PvInfo pv;
  pv.uuid = Uuid::random();
  pv.pool_id = pool->id;
  // Block devices keep the name the admin gave (a /dev/disk/by-id link survives reboots,
  // /dev/sdX does not); files are recorded by their resolved path.
  pv.path = probe.kind == PvKind::kBlock
                ? std::filesystem::path(req.path).lexically_normal().string()
                : probe.canonical_path;
  pv.kind = probe.kind;
  pv.size_bytes = probe.size_bytes;
  pv.data_offset_bytes = kPvDataOffsetBytes;
  pv.extent_count = (probe.size_bytes - kPvDataOffsetBytes) / pool->extent_size_bytes;
  pv.label_generation = 1;
  pv.created_ms = now_ms();
  pv.lun_id = req.lun_id;

  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY_STATUS(insert_pv(pv));
  PvLabel label{pv.uuid,
                pool->uuid,
                pv.label_generation,
                pv.size_bytes,
                pv.data_offset_bytes,
                pool->extent_size_bytes,
                pv.created_ms,
                pool->name};
  RSIO_TRY_STATUS(write_label(fd.get(), label));
  RSIO_TRY_STATUS(txn.commit());
  created = false;

  space_.at(pv.pool_id).add_pv(pv.id, pv.extent_count);
  log::info("device added: pool={} path={} size_bytes={} extents={}", pool->name, pv.path,
            pv.size_bytes, pv.extent_count);
  PvUsage u{pv, pool->name, pv.extent_count};
  mark_dirty(pv.pool_id);
  pvs_.emplace(pv.id, std::move(pv));
  return u;
}

Result<PvInfo> VolumeManager::remove_device(std::string_view path) {
  const PvInfo* found = nullptr;
  auto probe = probe_device(std::string(path));
  for (const auto& [id, pv] : pvs_) {
    if (found != nullptr) break;
    auto other = probe_device(pv.path);
    if (pv.path == path || (probe && other && same_device(*probe, *other))) found = &pv;
  }
  if (found == nullptr)
    return make_error(
        Errc::kNotFound,
        fmt::format("{} is not a device of any pool; `smgr --devices` lists them", path));
  if (found->kind == PvKind::kLun)
    return make_error(Errc::kInUse,
                      fmt::format("{} is the pass-through LUN {}; delete its volume instead "
                                  "(smgr -d VOLUME), which leaves the LUN's data as it is",
                                  path, found->lun_id));
  const ExtentMap* map = space_.at(found->pool_id).find(found->id);
  if (map->free_count() != map->extent_count()) {
    std::string users;
    for (const auto& [vid, v] : volumes_)
      for (const Segment& s : v.segments)
        for (const Area& a : s.areas)
          if (a.pv_id == found->id && users.find("'" + v.name + "'") == std::string::npos)
            users += (users.empty() ? "'" : ", '") + v.name + "'";
    return make_error(Errc::kInUse, fmt::format("{} holds extents of volume(s) {}; delete or "
                                                "shrink them first",
                                                path, users));
  }
  const PvInfo pv = *found;
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(db::Statement * st, db_.prepare("DELETE FROM pvs WHERE id = ?"));
  st->bind_all(pv.id);
  RSIO_TRY_STATUS(st->run());
  RSIO_TRY_STATUS(txn.commit());
  space_.at(pv.pool_id).remove_pv(pv.id);
  pvs_.erase(pv.id);
  mark_dirty(pv.pool_id);
  if (pv.state == PvState::kOk) {
    auto fd = open_device(pv.path, false);
    Status wiped = fd ? wipe_label(fd->get()) : Status(fd.error());
    if (!wiped)
      log::warn("device removed but its label could not be wiped: path={} error={}", pv.path,
                wiped.error().message);
  }
  log::info("device removed: path={}", pv.path);
  return pv;
}

// The pvs row of `pv`; sets pv.id. Inside the caller's transaction.
Status VolumeManager::insert_pv(PvInfo& pv) {
  RSIO_TRY(db::Statement * st,
           db_.prepare("INSERT INTO pvs (uuid, pool_id, path, kind, size_bytes, data_offset_bytes, "
                       "extent_count, label_generation, created_ms, lun_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  st->bind_all(pv.uuid.str(), pv.pool_id, pv.path, pv_kind_name(pv.kind), pv.size_bytes,
               pv.data_offset_bytes, pv.extent_count, pv.label_generation, pv.created_ms);
  if (pv.lun_id.empty())
    st->bind_null(10);
  else
    st->bind(10, pv.lun_id);
  RSIO_TRY_STATUS(st->run());
  pv.id = db_.last_insert_rowid();
  return {};
}

// The volumes row of `v` and its segments; sets v.id. Inside the caller's transaction.
Status VolumeManager::insert_volume(VolumeInfo& v) {
  RSIO_TRY(db::Statement * st,
           db_.prepare("INSERT INTO volumes (uuid, name, pool_id, size_bytes, block_size_bytes, "
                       "layout, stripes, stripe_size_bytes, mirrors, created_ms) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  st->bind_all(v.uuid.str(), v.name, v.pool_id, v.size_bytes, v.block_size_bytes,
               layout_name(v.spec.layout), v.spec.stripes, v.spec.stripe_size_bytes, v.spec.mirrors,
               v.created_ms);
  RSIO_TRY_STATUS(st->run());
  v.id = db_.last_insert_rowid();
  return insert_segments(v);
}

Status VolumeManager::insert_segments(const VolumeInfo& v) {
  RSIO_TRY(
      db::Statement * seg,
      db_.prepare(
          "INSERT INTO segments (volume_id, idx, start_extent, extent_count) VALUES (?, ?, ?, ?)"));
  for (size_t i = 0; i < v.segments.size(); ++i) {
    const Segment& s = v.segments[i];
    seg->bind_all(v.id, static_cast<int64_t>(i), s.start_extent, s.extent_count);
    RSIO_TRY_STATUS(seg->run());
    RSIO_TRY(
        db::Statement * area,
        db_.prepare("INSERT INTO areas (volume_id, segment_idx, area_idx, pv_id, pv_start_extent, "
                    "extent_count) VALUES (?, ?, ?, ?, ?, ?)"));
    for (size_t k = 0; k < s.areas.size(); ++k) {
      const Area& a = s.areas[k];
      area->bind_all(v.id, static_cast<int64_t>(i), static_cast<int64_t>(k), a.pv_id,
                     a.pv_start_extent, a.extent_count);
      RSIO_TRY_STATUS(area->run());
    }
  }
  return {};
}

Status VolumeManager::replace_segments(const VolumeInfo& v) {
  RSIO_TRY(db::Statement * del, db_.prepare("DELETE FROM segments WHERE volume_id = ?"));
  del->bind_all(v.id);
  RSIO_TRY_STATUS(del->run());
  return insert_segments(v);
}

Result<VolumeInfo> VolumeManager::create_volume(const CreateVolumeRequest& req) {
  RSIO_TRY_STATUS(validate_name(req.name, "volume name"));
  if (find_volume(req.name) != nullptr)
    return make_error(Errc::kAlreadyExists,
                      fmt::format("volume '{}' already exists; choose another name", req.name));
  RSIO_TRY(const PoolInfo* pool, resolve_pool(req.pool));
  if (req.size_bytes == 0)
    return make_error(Errc::kInvalidArgument, "volume size must be greater than zero");
  if (req.block_size_bytes != 512 && req.block_size_bytes != 4096)
    return make_error(Errc::kInvalidArgument, "block size must be 512 or 4096 bytes");

  LayoutSpec spec = req.spec;
  switch (spec.layout) {
    case Layout::kLinear:
      spec.stripes = 1;
      spec.mirrors = 1;
      spec.stripe_size_bytes = 0;
      break;
    case Layout::kStriped:
      if (spec.stripes < 2 || spec.stripes > kStripesMax)
        return make_error(
            Errc::kInvalidArgument,
            fmt::format("stripe count {} is out of range 2..{}", spec.stripes, kStripesMax));
      if (spec.stripe_size_bytes == 0) spec.stripe_size_bytes = kDefaultStripeSizeBytes;
      if (spec.stripe_size_bytes < 4096 || spec.stripe_size_bytes > pool->extent_size_bytes ||
          (spec.stripe_size_bytes & (spec.stripe_size_bytes - 1)) != 0)
        return make_error(
            Errc::kInvalidArgument,
            fmt::format("invalid stripe size {}: use a power of two from 4 KiB to "
                        "the pool's extent size ({})",
                        spec.stripe_size_bytes, format_size(pool->extent_size_bytes)));
      spec.mirrors = 1;
      break;
    case Layout::kMirrored:
      if (spec.mirrors < 2 || spec.mirrors > kMirrorsMax)
        return make_error(
            Errc::kInvalidArgument,
            fmt::format("mirror count {} is out of range 2..{}", spec.mirrors, kMirrorsMax));
      spec.stripes = 1;
      spec.stripe_size_bytes = 0;
      break;
  }

  const uint64_t logical = logical_extents_for(req.size_bytes, spec, pool->extent_size_bytes);
  auto size = checked_mul(logical, pool->extent_size_bytes);
  if (!size || *size > (uint64_t{1} << 62))
    return make_error(Errc::kInvalidArgument,
                      fmt::format("volume size {} is too large", req.size_bytes));

  VolumeInfo v;
  v.uuid = Uuid::random();
  v.name = req.name;
  v.pool_id = pool->id;
  v.size_bytes = *size;
  v.block_size_bytes = req.block_size_bytes;
  v.spec = spec;
  v.created_ms = now_ms();
  if (spec.layout == Layout::kMirrored) {
    v.leg_states.assign(spec.mirrors, LegState::kInSync);
    v.leg_details.assign(spec.mirrors, "");
  }
  PoolSpace& space = space_.at(pool->id);
  RSIO_TRY_STATUS(allocate_extents(space, spec, AllocContext{pool->name, pool->extent_size_bytes},
                                   v.segments, logical));

  auto persist = [&]() -> Status {
    RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
    RSIO_TRY_STATUS(insert_volume(v));
    return txn.commit();
  };
  if (Status st = persist(); !st) {
    release_segments(space, v.segments);
    return st.error();
  }
  log::info("volume created: volume={} pool={} size_bytes={} layout={} segments={}", v.name,
            pool->name, v.size_bytes, layout_name(spec.layout), v.segments.size());
  volume_ids_.emplace(v.name, v.id);
  volumes_.emplace(v.id, v);
  mark_dirty(v.pool_id);
  return v;
}

Result<VolumeInfo> VolumeManager::resize_volume(std::string_view name, uint64_t size_bytes,
                                                bool force) {
  auto it = volume_ids_.find(std::string(name));
  if (it == volume_ids_.end())
    return make_error(Errc::kNotFound, fmt::format("volume '{}' does not exist", name));
  VolumeInfo& v = volumes_.at(it->second);
  const PoolInfo& pool = pools_.at(v.pool_id);
  if (is_passthrough(v))
    return make_error(Errc::kInvalidArgument,
                      fmt::format("volume '{}' is a pass-through LUN: its size is the LUN's "
                                  "size when the volume was created; after growing the LUN on "
                                  "the array, delete the volume and pass the LUN through again "
                                  "(its data stays)",
                                  name));
  if (size_bytes == 0)
    return make_error(Errc::kInvalidArgument, "volume size must be greater than zero");
  const uint64_t old_logical = v.logical_extents();
  const uint64_t new_logical = logical_extents_for(size_bytes, v.spec, pool.extent_size_bytes);
  auto new_size = checked_mul(new_logical, pool.extent_size_bytes);
  if (!new_size || *new_size > (uint64_t{1} << 62))
    return make_error(Errc::kInvalidArgument,
                      fmt::format("volume size {} is too large", size_bytes));
  if (new_logical == old_logical) return v;
  if (new_logical < old_logical && !force)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("shrinking volume '{}' from {} to {} destroys the data beyond "
                                  "{}; shrink the file system first, then repeat with --force",
                                  name, format_size(v.size_bytes), format_size(*new_size),
                                  format_size(*new_size)));

  PoolSpace& space = space_.at(v.pool_id);
  std::vector<Segment> segments = v.segments;
  std::vector<Area> cut;
  if (new_logical > old_logical) {
    RSIO_TRY_STATUS(allocate_extents(space, v.spec, AllocContext{pool.name, pool.extent_size_bytes},
                                     segments, new_logical - old_logical));
  } else {
    cut = cut_segments(v.spec, segments, new_logical);
  }
  VolumeInfo next = v;
  next.segments = std::move(segments);
  next.size_bytes = *new_size;
  auto persist = [&]() -> Status {
    RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
    RSIO_TRY(db::Statement * st, db_.prepare("UPDATE volumes SET size_bytes = ? WHERE id = ?"));
    st->bind_all(next.size_bytes, next.id);
    RSIO_TRY_STATUS(st->run());
    RSIO_TRY_STATUS(replace_segments(next));
    return txn.commit();
  };
  if (Status st = persist(); !st) {
    if (new_logical > old_logical) {
      std::vector<Segment> grown = next.segments;
      release_areas(space, cut_segments(v.spec, grown, old_logical));
    }
    return st.error();
  }
  release_areas(space, cut);
  mark_dirty(v.pool_id);
  log::info("volume resized: volume={} from_bytes={} to_bytes={}", v.name, v.size_bytes,
            next.size_bytes);
  v = std::move(next);
  return v;
}

Result<VolumeInfo> VolumeManager::add_leg(std::string_view name) {
  return change_legs(name, std::nullopt, true, false);
}

Result<VolumeInfo> VolumeManager::remove_leg(std::string_view name, uint32_t leg, bool force) {
  return change_legs(name, leg, false, force);
}

Result<VolumeInfo> VolumeManager::replace_leg(std::string_view name, uint32_t leg) {
  // Replacing the only in-sync leg would lose the data: refused like a removal.
  return change_legs(name, leg, true, false);
}

// Rewrites the volume's layout columns, segments (with areas) and leg rows.
Status VolumeManager::persist_legs(const VolumeInfo& v) {
  RSIO_TRY(db::Statement * st, db_.prepare("UPDATE volumes SET layout = ?, stripes = 1, "
                                           "stripe_size_bytes = 0, mirrors = ? WHERE id = ?"));
  st->bind_all(layout_name(v.spec.layout), v.spec.mirrors, v.id);
  RSIO_TRY_STATUS(st->run());
  RSIO_TRY_STATUS(replace_segments(v));
  RSIO_TRY(db::Statement * del, db_.prepare("DELETE FROM mirror_legs WHERE volume_id = ?"));
  del->bind_all(v.id);
  RSIO_TRY_STATUS(del->run());
  for (size_t k = 0; k < v.leg_states.size(); ++k) {
    if (v.leg_states[k] == LegState::kInSync) continue;
    RSIO_TRY(db::Statement * ins, db_.prepare("INSERT INTO mirror_legs (volume_id, leg, state, "
                                              "detail, updated_ms) VALUES (?, ?, ?, ?, ?)"));
    ins->bind_all(v.id, static_cast<int64_t>(k), leg_state_name(v.leg_states[k]), v.leg_details[k],
                  now_ms());
    RSIO_TRY_STATUS(ins->run());
  }
  return {};
}

Result<VolumeInfo> VolumeManager::change_legs(std::string_view name, std::optional<uint32_t> remove,
                                              bool add, bool force) {
  auto it = volume_ids_.find(std::string(name));
  if (it == volume_ids_.end())
    return make_error(Errc::kNotFound, fmt::format("volume '{}' does not exist", name));
  const VolumeInfo& cur = volumes_.at(it->second);
  if (is_passthrough(cur))
    return make_error(
        Errc::kInvalidArgument,
        fmt::format("volume '{}' is a pass-through LUN; mirror it on the array", name));
  if (cur.spec.layout == Layout::kStriped)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("volume '{}' is striped; only linear and mirrored volumes have "
                                  "legs",
                                  name));
  VolumeInfo next = cur;
  if (next.spec.layout == Layout::kLinear) {
    next.leg_states.assign(1, LegState::kInSync);
    next.leg_details.assign(1, "");
  }
  const uint32_t legs = static_cast<uint32_t>(next.leg_states.size());
  std::vector<Area> freed;
  if (remove) {
    if (*remove >= legs || legs < 2)
      return make_error(Errc::kInvalidArgument,
                        legs < 2 ? fmt::format("volume '{}' has a single leg; delete the volume "
                                               "instead",
                                               name)
                                 : fmt::format("volume '{}' has legs 0 to {}", name, legs - 1));
    bool other_in_sync = false;
    for (uint32_t k = 0; k < legs; ++k)
      other_in_sync = other_in_sync || (k != *remove && next.leg_states[k] == LegState::kInSync);
    if (!other_in_sync && !force)
      return make_error(Errc::kInUse,
                        fmt::format("leg {} is the only in-sync leg of '{}': removing it loses "
                                    "the data; add --force if that is intended",
                                    *remove, name));
    for (Segment& s : next.segments) {
      freed.push_back(s.areas[*remove]);
      s.areas.erase(s.areas.begin() + *remove);
    }
    next.leg_states.erase(next.leg_states.begin() + *remove);
    next.leg_details.erase(next.leg_details.begin() + *remove);
  }
  const PoolInfo& pool = pools_.at(cur.pool_id);
  PoolSpace& space = space_.at(cur.pool_id);
  std::vector<Area> reserved;
  if (add) {
    if (next.leg_states.size() >= kMirrorsMax)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("volume '{}' already has {} legs", name, kMirrorsMax));
    // PVs of the remaining legs are off limits; the new leg prefers one PV for all segments.
    std::set<int64_t> taken;
    for (const Segment& s : next.segments)
      for (const Area& a : s.areas) taken.insert(a.pv_id);
    // Extents being freed by a replace stay off limits too: the new leg must not land where
    // the old leg's data still is until the change is committed.
    for (const Area& a : freed) taken.insert(a.pv_id);
    std::optional<int64_t> leg_pv;
    for (Segment& s : next.segments) {
      const uint64_t need = s.areas.empty() ? s.extent_count : s.areas[0].extent_count;
      std::optional<Area> placed;
      auto try_pv = [&](int64_t pv_id) {
        const ExtentMap* map = space.find(pv_id);
        if (map == nullptr || !space.usable(pv_id) || taken.contains(pv_id)) return;
        for (const auto& [start, count] : map->free_runs())
          if (count >= need) {
            placed = Area{pv_id, start, need};
            return;
          }
      };
      if (leg_pv) try_pv(*leg_pv);
      for (const auto& [pv_id, pv] : space.pvs()) {
        if (placed) break;
        try_pv(pv_id);
      }
      if (!placed) {
        release_areas(space, reserved);
        return make_error(Errc::kNoSpace,
                          fmt::format("no device of pool '{}' outside the other legs has {} "
                                      "contiguous free; add a device (smgr --add-device)",
                                      pool.name, format_size(need * pool.extent_size_bytes)));
      }
      space.find(placed->pv_id)->reserve(placed->pv_start_extent, placed->extent_count);
      reserved.push_back(*placed);
      leg_pv = placed->pv_id;
      s.areas.push_back(*placed);
    }
    next.leg_states.push_back(LegState::kResyncing);
    next.leg_details.push_back("new leg");
  }
  const uint32_t now_legs = static_cast<uint32_t>(next.leg_states.size());
  next.spec.mirrors = now_legs;
  next.spec.layout = now_legs >= 2 ? Layout::kMirrored : Layout::kLinear;
  if (now_legs < 2) {
    next.leg_states.clear();
    next.leg_details.clear();
  }
  RSIO_ASSERT(check_segments(next.spec, next.segments));
  auto persist = [&]() -> Status {
    RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
    RSIO_TRY_STATUS(persist_legs(next));
    return txn.commit();
  };
  if (Status st = persist(); !st) {
    release_areas(space, reserved);
    return st.error();
  }
  release_areas(space, freed);
  log::info("mirror legs changed: volume={} legs={} (removed={} added={})", name, now_legs,
            remove ? std::to_string(*remove) : "-", add);
  volumes_.at(next.id) = next;
  mark_dirty(next.pool_id);
  return next;
}

Status VolumeManager::set_leg_state(int64_t volume_id, uint32_t leg, LegState state,
                                    std::string_view detail) {
  auto it = volumes_.find(volume_id);
  if (it == volumes_.end())
    return make_error(Errc::kNotFound, fmt::format("volume_id={} does not exist", volume_id));
  VolumeInfo& v = it->second;
  if (leg >= v.leg_states.size())
    return make_error(Errc::kInvalidArgument,
                      fmt::format("volume '{}' has no mirror leg {}", v.name, leg));
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  if (state == LegState::kInSync) {
    RSIO_TRY(db::Statement * st,
             db_.prepare("DELETE FROM mirror_legs WHERE volume_id = ? AND leg = ?"));
    st->bind_all(volume_id, leg);
    RSIO_TRY_STATUS(st->run());
  } else {
    RSIO_TRY(db::Statement * st,
             db_.prepare("INSERT INTO mirror_legs (volume_id, leg, state, detail, updated_ms) "
                         "VALUES (?, ?, ?, ?, ?) "
                         "ON CONFLICT (volume_id, leg) DO UPDATE SET state = excluded.state, "
                         "detail = excluded.detail, updated_ms = excluded.updated_ms"));
    st->bind_all(volume_id, leg, leg_state_name(state), detail, now_ms());
    RSIO_TRY_STATUS(st->run());
  }
  RSIO_TRY_STATUS(txn.commit());
  v.leg_states[leg] = state;
  v.leg_details[leg] = state == LegState::kInSync ? "" : std::string(detail);
  mark_dirty(v.pool_id);
  log::info("mirror leg state: volume={} leg={} state={} detail={}", v.name, leg,
            leg_state_name(state), detail);
  return {};
}

Result<VolumeInfo> VolumeManager::rename_volume(std::string_view name, std::string_view new_name) {
  auto it = volume_ids_.find(std::string(name));
  if (it == volume_ids_.end())
    return make_error(Errc::kNotFound, fmt::format("volume '{}' does not exist", name));
  RSIO_TRY_STATUS(validate_name(new_name, "volume name"));
  if (name == new_name) return volumes_.at(it->second);
  if (find_volume(new_name) != nullptr)
    return make_error(Errc::kAlreadyExists, fmt::format("volume '{}' already exists", new_name));
  const int64_t id = it->second;
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY(db::Statement * st, db_.prepare("UPDATE volumes SET name = ? WHERE id = ?"));
  st->bind_all(new_name, id);
  RSIO_TRY_STATUS(st->run());
  RSIO_TRY_STATUS(txn.commit());
  volume_ids_.erase(it);
  volume_ids_.emplace(std::string(new_name), id);
  volumes_.at(id).name = std::string(new_name);
  mark_dirty(volumes_.at(id).pool_id);
  log::info("volume renamed: from={} to={}", name, new_name);
  return volumes_.at(id);
}

Result<std::optional<int64_t>> VolumeManager::delete_volume(std::string_view name,
                                                            const DeleteHook& hook) {
  auto it = volume_ids_.find(std::string(name));
  if (it == volume_ids_.end())
    return make_error(Errc::kNotFound, fmt::format("volume '{}' does not exist", name));
  const VolumeInfo& v = volumes_.at(it->second);
  // A pass-through LUN leaves the appliance with its volume; its data is not touched.
  const std::optional<int64_t> lun_pv =
      is_passthrough(v) ? std::optional(v.segments[0].areas[0].pv_id) : std::nullopt;
  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  if (hook) RSIO_TRY_STATUS(hook(db_, v));
  RSIO_TRY(db::Statement * st, db_.prepare("DELETE FROM volumes WHERE id = ?"));
  st->bind_all(v.id);
  RSIO_TRY_STATUS(st->run());
  if (lun_pv) {
    RSIO_TRY(db::Statement * del, db_.prepare("DELETE FROM pvs WHERE id = ?"));
    del->bind_all(*lun_pv);
    RSIO_TRY_STATUS(del->run());
  }
  RSIO_TRY_STATUS(txn.commit());
  release_segments(space_.at(v.pool_id), v.segments);
  mark_dirty(v.pool_id);
  if (lun_pv) {
    log::info("pass-through LUN released: lun={} path={}", pvs_.at(*lun_pv).lun_id,
              pvs_.at(*lun_pv).path);
    space_.at(v.pool_id).remove_pv(*lun_pv);
    pvs_.erase(*lun_pv);
  }
  log::info("volume deleted: volume={}", v.name);
  const int64_t id = v.id;
  volume_ids_.erase(it);
  volumes_.erase(id);
  return lun_pv;
}

bool VolumeManager::is_passthrough(const VolumeInfo& v) const {
  if (v.segments.size() != 1 || v.segments[0].areas.size() != 1) return false;
  auto pv = pvs_.find(v.segments[0].areas[0].pv_id);
  return pv != pvs_.end() && pv->second.kind == PvKind::kLun;
}

Result<std::vector<LunUsage>> VolumeManager::luns() const {
  RSIO_TRY(std::vector<Lun> found, scan());
  std::vector<LunUsage> out;
  std::map<int64_t, std::optional<DeviceProbe>> probes;
  for (Lun& l : found) {
    LunUsage u;
    const PvInfo* owner = nullptr;
    for (const auto& [id, pv] : pvs_) {
      if (owner != nullptr) break;
      if (!l.identity.empty() && pv.lun_id == l.identity && !l.is_multipath_path()) {
        owner = &pv;
        break;
      }
      // A pass-through LUN is its identity alone; a labelled PV counts by device only while
      // its label was confirmed there.
      if (pv.kind != PvKind::kBlock || pv.state != PvState::kOk) continue;
      auto& probe = probes[id];
      if (!probe) {
        auto p = probe_device(pv.path);
        probe = p ? std::optional(*p) : std::optional(DeviceProbe{});
      }
      if (probe->kind == PvKind::kBlock && probe->st_rdev != 0 &&
          probe->st_rdev == makedev(l.major, l.minor))
        owner = &pv;
    }
    if (owner != nullptr) {
      const std::string& pool = pools_.at(owner->pool_id).name;
      if (owner->kind == PvKind::kLun) {
        u.use = "passthrough";
        for (const auto& [vid, v] : volumes_)
          if (is_passthrough(v) && v.segments[0].areas[0].pv_id == owner->id)
            u.detail = fmt::format("volume {}", v.name);
      } else {
        u.use = "pv";
        u.detail = fmt::format("pool {}", pool);
      }
    } else if (std::string why = l.os_use(); !why.empty()) {
      u.use = "in-use";
      u.detail = why;
    } else {
      u.use = "free";
    }
    u.lun = std::move(l);
    out.push_back(std::move(u));
  }
  return out;
}

Result<Lun> VolumeManager::lun_for_use(std::string_view key, const std::vector<Lun>& luns) const {
  const Lun* l = find_lun(luns, key);
  if (l == nullptr)
    return make_error(Errc::kNotFound,
                      fmt::format("no LUN matches '{}'; `smgr -L` lists the LUNs this appliance "
                                  "sees (by WWN, device or /dev/disk/by-id name)",
                                  key));
  for (const auto& [id, pv] : pvs_)
    if (!l->identity.empty() && pv.lun_id == l->identity)
      return make_error(Errc::kAlreadyExists,
                        fmt::format("LUN {} is already used by pool '{}' (as {})", l->identity,
                                    pools_.at(pv.pool_id).name, pv.path));
  if (std::string why = l->os_use(); !why.empty())
    return make_error(Errc::kInUse, fmt::format("LUN {} ({}) is in use: {}; free it first",
                                                l->identity.empty() ? l->name : l->identity,
                                                l->device_path, why));
  return *l;
}

Result<PvUsage> VolumeManager::import_lun(const ImportLunRequest& req) {
  RSIO_TRY(std::vector<Lun> found, scan());
  RSIO_TRY(Lun lun, lun_for_use(req.lun, found));
  AddDeviceRequest add;
  add.pool = req.pool;
  add.path = lun.device_path;
  add.force = req.force;
  add.lun_id = lun.identity;
  return add_device(add);
}

Result<VolumeInfo> VolumeManager::create_passthrough(const PassthroughRequest& req) {
  RSIO_TRY_STATUS(validate_name(req.name, "volume name"));
  if (find_volume(req.name) != nullptr)
    return make_error(Errc::kAlreadyExists,
                      fmt::format("volume '{}' already exists; choose another name", req.name));
  RSIO_TRY(std::vector<Lun> found, scan());
  RSIO_TRY(Lun lun, lun_for_use(req.lun, found));
  if (lun.identity.empty())
    return make_error(Errc::kInvalidArgument,
                      fmt::format("{} has no stable identity (no WWN, serial or backing file), so "
                                  "it could not be found again after the kernel renames it; add "
                                  "it to a pool as a labelled device instead (smgr --import-lun)",
                                  lun.device_path));
  RSIO_TRY(DeviceProbe probe, probe_device(lun.device_path));
  if (probe.kind != PvKind::kBlock)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("{} is not a block device", lun.device_path));
  for (const auto& [id, pv] : pvs_) {
    auto other = probe_device(pv.path);
    if (other && same_device(*other, probe))
      return make_error(Errc::kAlreadyExists,
                        fmt::format("{} is already a device of pool '{}' (as {})", lun.device_path,
                                    pools_.at(pv.pool_id).name, pv.path));
  }
  {
    // O_EXCL: refused while mounted or held; the label check keeps a PV of a pool (this
    // appliance's or another's) from being exported raw, extents, labels and all.
    RSIO_TRY(UniqueFd fd, open_device(lun.device_path, true));
    auto label = read_label(fd.get());
    if (!label || label->has_value())
      return make_error(
          Errc::kInvalidArgument,
          fmt::format("{} carries an RSIO label{}: it is a device of an RSIO pool, not a LUN "
                      "with data of its own; import it with smgr --import-lun or rebuild its "
                      "pool (rsiod --rebuild-db)",
                      lun.device_path,
                      label ? fmt::format(" of pool '{}'", (*label)->pool_name) : " (damaged)"));
  }
  const uint64_t block = lun.logical_block_bytes == 4096 ? 4096 : 512;
  if (probe.size_bytes == 0 || probe.size_bytes % block != 0)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("{} has a size of {} bytes, not a multiple of its {}-byte "
                                  "blocks",
                                  lun.device_path, probe.size_bytes, block));
  const PoolInfo* pool = nullptr;
  if (!req.pool.empty() || default_pool() != nullptr) {
    RSIO_TRY(pool, resolve_pool(req.pool));
  } else if ((pool = find_pool("gateway")) == nullptr) {
    // A pure gateway has no pools: pass-through LUNs get one of their own.
    RSIO_TRY(PoolInfo created, create_pool({"gateway", kDefaultExtentSizeBytes, false}));
    pool = find_pool(created.id);
  }

  PvInfo pv;
  pv.uuid = Uuid::random();
  pv.pool_id = pool->id;
  pv.path = lun.device_path;
  pv.kind = PvKind::kLun;
  pv.size_bytes = probe.size_bytes;
  pv.data_offset_bytes = 0;
  pv.extent_count = div_round_up(probe.size_bytes, pool->extent_size_bytes);
  pv.created_ms = now_ms();
  pv.lun_id = lun.identity;

  VolumeInfo v;
  v.uuid = Uuid::random();
  v.name = req.name;
  v.pool_id = pool->id;
  v.size_bytes = probe.size_bytes;
  v.block_size_bytes = block;
  v.created_ms = pv.created_ms;

  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db_));
  RSIO_TRY_STATUS(insert_pv(pv));
  v.segments.push_back(Segment{0, pv.extent_count, {Area{pv.id, 0, pv.extent_count}}});
  RSIO_TRY_STATUS(insert_volume(v));
  RSIO_TRY_STATUS(txn.commit());

  PoolSpace& space = space_.at(pool->id);
  space.add_pv(pv.id, pv.extent_count);
  space.set_usable(pv.id, false);
  RSIO_ASSERT(reserve_segments(space, v.segments));
  log::info("pass-through volume created: volume={} lun={} path={} size_bytes={}", v.name,
            pv.lun_id, pv.path, v.size_bytes);
  pvs_.emplace(pv.id, std::move(pv));
  volume_ids_.emplace(v.name, v.id);
  volumes_.emplace(v.id, v);
  mark_dirty(v.pool_id);
  return v;
}

std::string VolumeManager::pool_document(int64_t pool_id) const {
  using nlohmann::json;
  const PoolInfo& p = pools_.at(pool_id);
  json doc;
  doc["format"] = 1;
  doc["written_ms"] = now_ms();
  doc["pool"] = {{"id", p.id},
                 {"uuid", p.uuid.str()},
                 {"name", p.name},
                 {"extent_size_bytes", p.extent_size_bytes},
                 {"is_default", p.is_default},
                 {"created_ms", p.created_ms}};
  json pvs = json::array();
  for (const auto& [id, pv] : pvs_) {
    if (pv.pool_id != pool_id) continue;
    pvs.push_back({{"id", pv.id},
                   {"uuid", pv.uuid.str()},
                   {"path", pv.path},
                   {"kind", pv_kind_name(pv.kind)},
                   {"size_bytes", pv.size_bytes},
                   {"data_offset_bytes", pv.data_offset_bytes},
                   {"extent_count", pv.extent_count},
                   {"label_generation", pv.label_generation},
                   {"created_ms", pv.created_ms},
                   {"lun_id", pv.lun_id}});
  }
  doc["pvs"] = std::move(pvs);
  json vols = json::array();
  for (const auto& [id, v] : volumes_) {
    if (v.pool_id != pool_id) continue;
    json segs = json::array();
    for (const Segment& s : v.segments) {
      json areas = json::array();
      for (const Area& a : s.areas) areas.push_back({a.pv_id, a.pv_start_extent, a.extent_count});
      segs.push_back({s.start_extent, s.extent_count, std::move(areas)});
    }
    json legs = json::array();
    for (size_t k = 0; k < v.leg_states.size(); ++k)
      if (v.leg_states[k] != LegState::kInSync)
        legs.push_back({k, leg_state_name(v.leg_states[k]), v.leg_details[k]});
    vols.push_back({{"id", v.id},
                    {"uuid", v.uuid.str()},
                    {"name", v.name},
                    {"size_bytes", v.size_bytes},
                    {"block_size_bytes", v.block_size_bytes},
                    {"layout", layout_name(v.spec.layout)},
                    {"stripes", v.spec.stripes},
                    {"stripe_size_bytes", v.spec.stripe_size_bytes},
                    {"mirrors", v.spec.mirrors},
                    {"created_ms", v.created_ms},
                    {"segments", std::move(segs)},
                    {"legs", std::move(legs)}});
  }
  doc["volumes"] = std::move(vols);
  // Appliance-wide facts every copy carries: the namespace and the id high-water marks, so
  // a rebuilt database never hands out an id again.
  json settings = json::object(), seq = json::object();
  if (auto st = db_.prepare("SELECT key, value FROM settings WHERE key LIKE 'namespace.%'"); st) {
    for (auto row = (*st)->step(); row && *row; row = (*st)->step())
      settings[(*st)->column_text(0)] = (*st)->column_text(1);
  }
  if (auto st = db_.prepare("SELECT name, seq FROM sqlite_sequence"); st) {
    for (auto row = (*st)->step(); row && *row; row = (*st)->step())
      seq[(*st)->column_text(0)] = (*st)->column_int64(1);
  }
  doc["settings"] = std::move(settings);
  doc["sequences"] = std::move(seq);
  return doc.dump();
}

PoolUsage VolumeManager::usage_of(const PoolInfo& pool) const {
  PoolUsage u;
  u.info = pool;
  const PoolSpace& space = space_.at(pool.id);
  u.pv_count = space.pv_count();
  for (const auto& [id, pv] : space.pvs()) {
    u.extent_count += pv.map.extent_count();
    u.free_extents += pv.usable ? pv.map.free_count() : 0;
  }
  for (const auto& [id, v] : volumes_) u.volume_count += v.pool_id == pool.id ? 1 : 0;
  return u;
}

std::vector<PoolUsage> VolumeManager::pools() const {
  std::vector<PoolUsage> out;
  for (const auto& [id, p] : pools_) out.push_back(usage_of(p));
  return out;
}

std::vector<PvUsage> VolumeManager::devices() const {
  std::vector<PvUsage> out;
  for (const auto& [id, pv] : pvs_) {
    const ExtentMap* map = space_.at(pv.pool_id).find(pv.id);
    out.push_back(PvUsage{pv, pools_.at(pv.pool_id).name, map->free_count()});
  }
  return out;
}

std::vector<const VolumeInfo*> VolumeManager::volumes() const {
  std::vector<const VolumeInfo*> out;
  out.reserve(volumes_.size());
  for (const auto& [id, v] : volumes_) out.push_back(&v);
  return out;
}

const VolumeInfo* VolumeManager::find_volume(std::string_view name) const {
  auto it = volume_ids_.find(std::string(name));
  return it == volume_ids_.end() ? nullptr : &volumes_.at(it->second);
}

const VolumeInfo* VolumeManager::find_volume(int64_t id) const {
  auto it = volumes_.find(id);
  return it == volumes_.end() ? nullptr : &it->second;
}

const PoolInfo* VolumeManager::find_pool(std::string_view name) const {
  for (const auto& [id, p] : pools_)
    if (p.name == name) return &p;
  return nullptr;
}

const PoolInfo* VolumeManager::find_pool(int64_t id) const {
  auto it = pools_.find(id);
  return it == pools_.end() ? nullptr : &it->second;
}

const PvInfo* VolumeManager::find_pv(int64_t id) const {
  auto it = pvs_.find(id);
  return it == pvs_.end() ? nullptr : &it->second;
}

const PoolInfo* VolumeManager::default_pool() const {
  for (const auto& [id, p] : pools_)
    if (p.is_default) return &p;
  return nullptr;
}

}  // namespace rsio::volmgr
