#include "volmgr/rebuild.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "volmgr/device.h"
#include "volmgr/label.h"
#include "volmgr/pool_copy.h"

namespace rsio::volmgr {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A device with a valid label, and the newest intact copy in its slots.
struct Found {
  std::string path;
  PvLabel label;
  std::optional<CopySlot> copy;
};

std::vector<std::string> candidates(const RebuildOptions& opt, RebuildReport& report) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& p) {
    if (seen.insert(p).second) out.push_back(p);
  };
  for (const std::string& p : opt.paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> files;
      for (fs::directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec))
        if (it->is_regular_file(ec)) files.push_back(fs::canonical(it->path(), ec).string());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) add(f);
    } else if (fs::exists(p, ec)) {
      add(fs::is_regular_file(p, ec) ? fs::canonical(p, ec).string() : p);
    } else {
      report.notes.push_back(fmt::format("{}: does not exist (skipped)", p));
    }
  }
  if (opt.scan) {
    auto luns = discover_luns(*opt.scan);
    if (!luns) {
      report.notes.push_back("LUN discovery failed: " + luns.error().message);
    } else {
      for (const Lun& l : *luns)
        if (!l.is_multipath_path() && l.holders.empty()) add(l.device_path);
    }
  }
  return out;
}

Status insert_pool(db::Database& db, const json& doc, const std::vector<Found>& found,
                   const std::optional<std::vector<Lun>>& luns, RebuildReport& report) {
  const json& p = doc.at("pool");
  RSIO_TRY(db::Statement * pool,
           db.prepare("INSERT INTO pools (id, uuid, name, extent_size_bytes, is_default, "
                      "created_ms) VALUES (?, ?, ?, ?, ?, ?)"));
  pool->bind_all(p.at("id").get<int64_t>(), p.at("uuid").get<std::string>(),
                 p.at("name").get<std::string>(), p.at("extent_size_bytes").get<int64_t>(),
                 int64_t{p.at("is_default").get<bool>()}, p.at("created_ms").get<int64_t>());
  RSIO_TRY_STATUS(pool->run());
  ++report.pools;

  for (const json& pv : doc.at("pvs")) {
    const std::string uuid = pv.at("uuid").get<std::string>(), kind = pv.at("kind");
    const std::string lun_id = pv.at("lun_id").get<std::string>();
    std::string path = pv.at("path").get<std::string>();
    bool located = false;
    for (const Found& f : found)
      if (f.label.pv_uuid.str() == uuid) {
        path = f.path;
        located = true;
      }
    if (!located && kind == "lun" && luns)
      for (const Lun& l : *luns)
        if (!l.is_multipath_path() && l.identity == lun_id) {
          path = l.device_path;
          located = true;
        }
    if (!located) {
      ++report.missing_pvs;
      report.notes.push_back(
          fmt::format("pool {}: device pv={} ({}) was not found; it is "
                      "recorded at {} and shows as missing until it is back",
                      p.at("name").get<std::string>(), uuid, lun_id.empty() ? kind : lun_id, path));
    }
    RSIO_TRY(db::Statement * st,
             db.prepare("INSERT INTO pvs (id, uuid, pool_id, path, kind, size_bytes, "
                        "data_offset_bytes, extent_count, label_generation, created_ms, lun_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    st->bind_all(pv.at("id").get<int64_t>(), uuid, p.at("id").get<int64_t>(), path, kind,
                 pv.at("size_bytes").get<int64_t>(), pv.at("data_offset_bytes").get<int64_t>(),
                 pv.at("extent_count").get<int64_t>(), pv.at("label_generation").get<int64_t>(),
                 pv.at("created_ms").get<int64_t>());
    if (lun_id.empty())
      st->bind_null(11);
    else
      st->bind(11, lun_id);
    RSIO_TRY_STATUS(st->run());
    ++report.pvs;
  }

  const int64_t written_ms = doc.value("written_ms", int64_t{0});
  for (const json& v : doc.at("volumes")) {
    const int64_t vid = v.at("id").get<int64_t>();
    RSIO_TRY(db::Statement * st,
             db.prepare("INSERT INTO volumes (id, uuid, name, pool_id, size_bytes, "
                        "block_size_bytes, layout, stripes, stripe_size_bytes, mirrors, "
                        "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    st->bind_all(vid, v.at("uuid").get<std::string>(), v.at("name").get<std::string>(),
                 p.at("id").get<int64_t>(), v.at("size_bytes").get<int64_t>(),
                 v.at("block_size_bytes").get<int64_t>(), v.at("layout").get<std::string>(),
                 v.at("stripes").get<int64_t>(), v.at("stripe_size_bytes").get<int64_t>(),
                 v.at("mirrors").get<int64_t>(), v.at("created_ms").get<int64_t>());
    RSIO_TRY_STATUS(st->run());
    int64_t idx = 0;
    for (const json& s : v.at("segments")) {
      RSIO_TRY(db::Statement * seg, db.prepare("INSERT INTO segments (volume_id, idx, "
                                               "start_extent, extent_count) VALUES (?, ?, ?, ?)"));
      seg->bind_all(vid, idx, s.at(0).get<int64_t>(), s.at(1).get<int64_t>());
      RSIO_TRY_STATUS(seg->run());
      int64_t k = 0;
      for (const json& a : s.at(2)) {
        RSIO_TRY(db::Statement * area,
                 db.prepare("INSERT INTO areas (volume_id, segment_idx, area_idx, pv_id, "
                            "pv_start_extent, extent_count) VALUES (?, ?, ?, ?, ?, ?)"));
        area->bind_all(vid, idx, k++, a.at(0).get<int64_t>(), a.at(1).get<int64_t>(),
                       a.at(2).get<int64_t>());
        RSIO_TRY_STATUS(area->run());
      }
      ++idx;
    }
    for (const json& leg : v.at("legs")) {
      RSIO_TRY(db::Statement * st2,
               db.prepare("INSERT INTO mirror_legs (volume_id, leg, state, detail, updated_ms) "
                          "VALUES (?, ?, ?, ?, ?)"));
      st2->bind_all(vid, leg.at(0).get<int64_t>(), leg.at(1).get<std::string>(),
                    leg.at(2).get<std::string>(), written_ms);
      RSIO_TRY_STATUS(st2->run());
    }
    ++report.volumes;
  }
  return {};
}

}  // namespace

Result<RebuildReport> rebuild_database(db::Database& db, const RebuildOptions& options) {
  RebuildReport report;
  {
    RSIO_TRY(db::Statement * st, db.prepare("SELECT count(*) FROM pools"));
    RSIO_TRY(bool row, st->step());
    if (row && st->column_int64(0) > 0)
      return make_error(Errc::kInvalidArgument,
                        fmt::format("database {} already has pools; a rebuild starts from an "
                                    "empty database (move the old one away first)",
                                    db.path()));
  }
  std::optional<std::vector<Lun>> luns;
  if (options.scan)
    if (auto l = discover_luns(*options.scan); l) luns = std::move(*l);

  std::map<std::string, std::vector<Found>> by_pool;  // pool uuid -> its devices
  for (const std::string& path : candidates(options, report)) {
    ++report.devices_scanned;
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) continue;
    auto label = read_label(fd.get());
    if (!label) {
      report.notes.push_back(fmt::format("{}: {} (skipped)", path, label.error().message));
      continue;
    }
    if (!label->has_value()) continue;
    Found f{path, **label, std::nullopt};
    for (int slot = 0; slot < 2; ++slot) {
      auto copy = read_pool_copy(fd.get(), slot, f.label.pool_uuid, f.label.pv_uuid);
      if (!copy) {
        ++report.damaged_copies;
        report.notes.push_back(fmt::format("{}: {}; not used", path, copy.error().message));
      } else if (copy->has_value() && (!f.copy || (*copy)->generation > f.copy->generation)) {
        f.copy = std::move(**copy);
      }
    }
    by_pool[f.label.pool_uuid.str()].push_back(std::move(f));
  }

  RSIO_TRY(db::Transaction txn, db::Transaction::begin(db));
  std::set<std::string> names;
  json newest_settings;
  int64_t newest_written = -1;
  std::map<std::string, int64_t> sequences;
  for (const auto& [pool_uuid, found] : by_pool) {
    const Found* best = nullptr;
    for (const Found& f : found)
      if (f.copy && (best == nullptr || f.copy->generation > best->copy->generation)) best = &f;
    if (best == nullptr) {
      report.notes.push_back(
          fmt::format("pool '{}' (uuid {}) on {}: no intact metadata copy, so "
                      "it cannot be rebuilt from its devices",
                      found.front().label.pool_name, pool_uuid, found.front().path));
      continue;
    }
    for (const Found& f : found)
      if (f.copy && f.copy->generation < best->copy->generation) {
        ++report.stale_copies;
        report.notes.push_back(fmt::format(
            "{}: its newest copy of pool '{}' is generation {}, "
            "older than generation {} on {}: stale, not used",
            f.path, f.label.pool_name, f.copy->generation, best->copy->generation, best->path));
      }
    json doc = json::parse(best->copy->json, nullptr, false);
    if (doc.is_discarded() || doc.value("format", 0) != 1)
      return make_error(Errc::kCorrupt,
                        fmt::format("{}: the metadata copy of pool '{}' passed its checksum but "
                                    "is not a format this release reads",
                                    best->path, best->label.pool_name));
    const std::string name = doc.at("pool").at("name").get<std::string>();
    if (!names.insert(name).second) {
      report.notes.push_back(
          fmt::format("pool '{}' (uuid {}): another pool of that name was "
                      "already rebuilt; this one is left out",
                      name, pool_uuid));
      continue;
    }
    try {
      RSIO_TRY_STATUS(insert_pool(db, doc, found, luns, report));
    } catch (const json::exception& e) {
      return make_error(Errc::kCorrupt, fmt::format("{}: metadata copy of pool '{}': {}",
                                                    best->path, name, e.what()));
    }
    report.notes.push_back(fmt::format("pool '{}': generation {} from {} ({} devices, {} volumes)",
                                       name, best->copy->generation, best->path,
                                       doc.at("pvs").size(), doc.at("volumes").size()));
    const int64_t written = doc.value("written_ms", int64_t{0});
    if (written > newest_written && doc.contains("settings")) {
      newest_written = written;
      newest_settings = doc.at("settings");
    }
    if (doc.contains("sequences"))
      for (const auto& [table, seq] : doc.at("sequences").items())
        sequences[table] = std::max(sequences[table], seq.get<int64_t>());
  }
  if (report.pools == 0)
    return make_error(
        Errc::kNotFound,
        fmt::format("no pool could be rebuilt from {} device(s) scanned{}", report.devices_scanned,
                    report.notes.empty() ? "" : ": " + report.notes.back()));
  if (newest_settings.is_object())
    for (const auto& [key, value] : newest_settings.items()) {
      RSIO_TRY(db::Statement * st,
               db.prepare("INSERT INTO settings (key, value) VALUES (?, ?) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
      st->bind_all(key, value.get<std::string>());
      RSIO_TRY_STATUS(st->run());
    }
  for (const auto& [table, seq] : sequences) {
    RSIO_TRY(db::Statement * up,
             db.prepare("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?"));
    up->bind_all(seq, table);
    RSIO_TRY_STATUS(up->run());
    if (db.changes() == 0) {
      RSIO_TRY(db::Statement * ins,
               db.prepare("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)"));
      ins->bind_all(table, seq);
      RSIO_TRY_STATUS(ins->run());
    }
  }
  RSIO_TRY_STATUS(txn.commit());
  return report;
}

}  // namespace rsio::volmgr
