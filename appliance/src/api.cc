#include "appliance/api.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "common/log.h"
#include "common/names.h"
#include "common/units.h"

namespace rsio::appliance {

using mgmt::get_bool;
using mgmt::get_string;
using mgmt::get_u64;
using mgmt::parse_body;
using mgmt::query_flag;
using nlohmann::json;
using volmgr::Layout;
using volmgr::VolumeInfo;

namespace {

Error bad_request(std::string message) {
  return make_error(Errc::kInvalidArgument, std::move(message));
}

// A mirror leg number from a path segment; nullopt unless it is a plain decimal number.
std::optional<uint32_t> parse_leg(const std::string& text) {
  if (text.empty() || text.size() > 2) return std::nullopt;
  uint32_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  return n;
}

}  // namespace

ApiResponse Api::error_response(const Error& e) { return mgmt::api_error_response(e); }

Result<uint64_t> Api::backup_database(const std::string& path) {
  if (db_ == nullptr) return make_error(Errc::kUnavailable, "no database to back up");
  if (path.empty() || path.front() != '/')
    return make_error(Errc::kInvalidArgument,
                      fmt::format("backup path '{}' must be absolute", path));
  // The file is created here, empty and private, so the copy is never readable by others
  // for a moment; SQLite fills an empty file.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST)
      return make_error(Errc::kAlreadyExists,
                        fmt::format("{} already exists; choose a new file name (backups are "
                                    "never overwritten)",
                                    path));
    return errno_error(fmt::format("create backup {}", path), errno);
  }
  ::close(fd);
  RSIO_TRY(db::Statement * st, db_->prepare("VACUUM INTO ?"));
  st->bind(1, std::string_view(path));
  if (Status done = st->run(); !done) {
    ::unlink(path.c_str());
    return done.error();
  }
  struct stat sb {};
  ::stat(path.c_str(), &sb);
  log::info("database backed up: path={} size_bytes={}", path, sb.st_size);
  return static_cast<uint64_t>(sb.st_size);
}

namespace {

// Everything below builds JSON views of the model; shapes are documented in docs/api.md.

std::string volume_state(const volmgr::VolumeManager& vm, const VolumeInfo& v) {
  bool any_bad = false;
  bool all_segments_readable = true;
  for (const auto& s : v.segments) {
    size_t ok = 0;
    for (size_t k = 0; k < s.areas.size(); ++k) {
      const auto* pv = vm.find_pv(s.areas[k].pv_id);
      const bool leg_ok = k >= v.leg_states.size() || v.leg_states[k] == volmgr::LegState::kInSync;
      if (pv != nullptr && pv->state == volmgr::PvState::kOk && leg_ok)
        ++ok;
      else
        any_bad = true;
    }
    const bool readable = v.spec.layout == Layout::kMirrored ? ok > 0 : ok == s.areas.size();
    all_segments_readable = all_segments_readable && readable;
  }
  if (!all_segments_readable) return "unavailable";
  return any_bad ? "degraded" : "ok";
}

}  // namespace

ApiResponse Api::handle(const ApiRequest& req) {
  const ApiRoute route = mgmt::parse_api_target(req.target);
  const std::string& m = req.method;
  const auto& p = route.parts;

  auto ok = [](int status, const json& j) { return ApiResponse{status, j.dump()}; };
  auto fail = [](const Error& e) { return error_response(e); };
  auto not_found = [&] {
    return fail(
        make_error(Errc::kNotFound,
                   fmt::format("no such API resource: {} {} (see docs/api.md)", m, req.target)));
  };
  auto method_not_allowed = [&] {
    return ApiResponse{405,
                       json{{"error",
                             {{"code", "method-not-allowed"},
                              {"message", fmt::format("{} is not allowed on {}", m, req.target)}}}}
                           .dump()};
  };
  if (!route.versioned) {
    if (p.empty() && !route.versioned && (req.target == "/" || req.target.empty()))
      return ok(200, json{{"api_versions", json::array({mgmt::kApiVersion})}});
    return not_found();
  }

  auto pool_json = [&](const volmgr::PoolUsage& u) {
    return json{{"id", u.info.id},
                {"uuid", u.info.uuid.str()},
                {"name", u.info.name},
                {"extent_size_bytes", u.info.extent_size_bytes},
                {"default", u.info.is_default},
                {"device_count", u.pv_count},
                {"size_bytes", u.extent_count * u.info.extent_size_bytes},
                {"free_bytes", u.free_extents * u.info.extent_size_bytes},
                {"volume_count", u.volume_count},
                {"created_ms", u.info.created_ms}};
  };
  auto device_json = [&](const volmgr::PvUsage& u) {
    const auto* pool = volumes_.find_pool(u.info.pool_id);
    const uint64_t extent = pool->extent_size_bytes;
    return json{{"id", u.info.id},
                {"uuid", u.info.uuid.str()},
                {"path", u.info.path},
                {"kind", volmgr::pv_kind_name(u.info.kind)},
                {"pool", u.pool_name},
                {"size_bytes", u.info.size_bytes},
                {"data_offset_bytes", u.info.data_offset_bytes},
                {"extent_count", u.info.extent_count},
                {"free_extents", u.free_extents},
                {"used_bytes", (u.info.extent_count - u.free_extents) * extent},
                {"free_bytes", u.free_extents * extent},
                {"state", volmgr::pv_state_name(u.info.state)},
                {"state_detail", u.info.state_detail},
                {"lun_id", u.info.lun_id}};
  };
  auto lun_json = [&](const volmgr::LunUsage& u) {
    const volmgr::Lun& l = u.lun;
    json paths = json::array();
    for (const volmgr::LunPath& path : l.paths)
      paths.push_back({{"name", path.name},
                       {"transport", path.transport},
                       {"scsi_address", path.scsi_address},
                       {"host_wwpn", path.host_wwpn},
                       {"target_wwpn", path.target_wwpn},
                       {"iscsi_target", path.iscsi_target},
                       {"state", path.state}});
    return json{{"identity", l.identity},
                {"name", l.name},
                {"device", l.device_path},
                {"dm_name", l.dm_name},
                {"transport", l.transport},
                {"vendor", l.vendor},
                {"model", l.model},
                {"revision", l.revision},
                {"serial", l.serial},
                {"size_bytes", l.size_bytes},
                {"logical_block_bytes", l.logical_block_bytes},
                {"physical_block_bytes", l.physical_block_bytes},
                {"rotational", l.rotational},
                {"read_only", l.read_only},
                {"by_id", l.by_id},
                {"backing_file", l.backing_file},
                {"paths", paths},
                {"partitions", l.partitions},
                {"holders", l.holders},
                {"multipath_map", l.holder_map},
                {"mounts", l.mounts},
                {"use", u.use},
                {"use_detail", u.detail}};
  };
  auto volume_json = [&](const VolumeInfo& v, bool detail) {
    const auto* pool = volumes_.find_pool(v.pool_id);
    json grants = json::array();
    for (const Grant& g : catalog_.grants_of_volume(v.id)) {
      const Client* c = catalog_.find_client(g.client_id);
      grants.push_back(
          {{"client", c->name}, {"client_id", c->id}, {"access", access_name(g.access)}});
    }
    json j = {{"id", v.id},
              {"uuid", v.uuid.str()},
              {"name", v.name},
              {"namespace_index", info_.namespace_index},
              {"pool", pool->name},
              {"size_bytes", v.size_bytes},
              {"block_size_bytes", v.block_size_bytes},
              {"blocks", v.size_bytes / v.block_size_bytes},
              {"layout", volmgr::layout_name(v.spec.layout)},
              {"stripes", v.spec.stripes},
              {"stripe_size_bytes", v.spec.stripe_size_bytes},
              {"mirrors", v.spec.mirrors},
              {"segment_count", v.segments.size()},
              {"state", volume_state(volumes_, v)},
              {"grants", grants},
              {"created_ms", v.created_ms}};
    if (volumes_.is_passthrough(v)) {
      const auto* pv = volumes_.find_pv(v.segments[0].areas[0].pv_id);
      j["passthrough"] = {{"lun_id", pv->lun_id}, {"device", pv->path}};
    }
    if (v.spec.layout == Layout::kMirrored) {
      json legs = json::array();
      for (size_t k = 0; k < v.leg_states.size(); ++k)
        legs.push_back({{"leg", k},
                        {"state", volmgr::leg_state_name(v.leg_states[k])},
                        {"detail", v.leg_details[k]}});
      j["legs"] = legs;
    }
    if (detail) {
      json segs = json::array();
      for (const auto& s : v.segments) {
        json areas = json::array();
        for (const auto& a : s.areas) {
          const auto* pv = volumes_.find_pv(a.pv_id);
          areas.push_back({{"device", pv->path},
                           {"device_id", pv->id},
                           {"device_state", volmgr::pv_state_name(pv->state)},
                           {"device_start_extent", a.pv_start_extent},
                           {"extent_count", a.extent_count}});
        }
        segs.push_back({{"start_extent", s.start_extent},
                        {"extent_count", s.extent_count},
                        {"start_bytes", s.start_extent * pool->extent_size_bytes},
                        {"size_bytes", s.extent_count * pool->extent_size_bytes},
                        {"areas", areas}});
      }
      j["extent_size_bytes"] = pool->extent_size_bytes;
      j["segments"] = segs;
    }
    return j;
  };
  // Node keys are secrets: shown only when asked for (rsadmin -qv), as the seed does.
  // What the I/O engine reports about a volume: open or not, resync and scrub progress.
  auto io_json = [&](int64_t volume_id) {
    if (engine_ == nullptr) return json{{"open", false}, {"reason", engine_reason_}};
    const VolumeIoStatus s = engine_->status(volume_id);
    if (!s.open) return json{{"open", false}, {"reason", s.reason}};
    json legs = json::array();
    for (auto l : s.legs) legs.push_back(volmgr::leg_state_name(l));
    const double pct = s.resync.regions_total == 0
                           ? 100.0
                           : 100.0 * static_cast<double>(s.resync.regions_done) /
                                 static_cast<double>(s.resync.regions_total);
    json mism = json::array();
    for (uint64_t off : s.scrub.mismatches) mism.push_back(off);
    return json{{"open", true},
                {"legs", legs},
                {"marked_regions", s.marked_regions},
                {"resync",
                 {{"active", s.resync.active},
                  {"regions_total", s.resync.regions_total},
                  {"regions_done", s.resync.regions_done},
                  {"percent", pct},
                  {"bytes_done", s.resync.bytes_done},
                  {"rate_bytes_per_s", s.resync.rate_bytes_per_s},
                  {"eta_s", s.resync.eta_s}}},
                {"scrub",
                 {{"active", s.scrub.active},
                  {"regions_total", s.scrub.regions_total},
                  {"regions_done", s.scrub.regions_done},
                  {"mismatched_regions", s.scrub.mismatched_regions},
                  {"mismatch_offsets_bytes", mism},
                  {"region_bytes", s.scrub.region_bytes}}}};
  };
  auto client_json = [&](const Client& c, bool with_key) {
    json j = {{"id", c.id}, {"name", c.name}, {"mode", c.mode}, {"created_ms", c.created_ms}};
    if (with_key) j["node_key"] = c.node_key;
    return j;
  };
  auto grant_json = [&](const Grant& g) {
    const VolumeInfo* v = volumes_.find_volume(g.volume_id);
    const Client* c = catalog_.find_client(g.client_id);
    return json{{"volume", v ? v->name : ""},
                {"volume_id", g.volume_id},
                {"namespace_index", info_.namespace_index},
                {"client", c ? c->name : ""},
                {"client_id", g.client_id},
                {"access", access_name(g.access)},
                {"created_ms", g.created_ms}};
  };
  auto find_volume = [&](const std::string& name) -> Result<const VolumeInfo*> {
    const VolumeInfo* v = volumes_.find_volume(name);
    if (v == nullptr)
      return make_error(Errc::kNotFound,
                        fmt::format("volume {} does not exist; `smgr -q` lists the volumes", name));
    return v;
  };

  const std::string_view res = p.empty() ? std::string_view() : std::string_view(p[0]);

  // GET /1.0
  if (p.empty()) {
    if (m != "GET") return method_not_allowed();
    json listen = json::array();
    if (engine_ != nullptr)
      for (const auto& a : engine_->export_addresses())
        listen.push_back(a.host.find(':') != std::string::npos
                             ? fmt::format("[{}]:{}", a.host, a.port)
                             : fmt::format("{}:{}", a.host, a.port));
    return ok(
        200, json{{"api_version", mgmt::kApiVersion},
                  {"product", "rsio"},
                  {"version", info_.version},
                  {"state_dir", info_.state_dir},
                  {"namespace", {{"name", info_.namespace_name}, {"index", info_.namespace_index}}},
                  {"started_ms", info_.started_ms},
                  {"rsio_listen", listen}});
  }

  if (res == "pools") {
    if (p.size() == 1 && m == "GET") {
      json list = json::array();
      for (const auto& u : volumes_.pools()) list.push_back(pool_json(u));
      return ok(200, json{{"pools", list}});
    }
    if (p.size() == 1 && m == "POST") {
      auto body = parse_body(req.body, {"name", "extent_size_bytes", "default"});
      if (!body) return fail(body.error());
      volmgr::CreatePoolRequest r;
      auto name = get_string(*body, "name", true);
      if (!name) return fail(name.error());
      r.name = *name;
      auto ext = get_u64(*body, "extent_size_bytes", false);
      if (!ext) return fail(ext.error());
      if (*ext) r.extent_size_bytes = **ext;
      auto def = get_bool(*body, "default");
      if (!def) return fail(def.error());
      r.make_default = *def;
      auto created = volumes_.create_pool(r);
      if (!created) return fail(created.error());
      for (const auto& u : volumes_.pools())
        if (u.info.id == created->id) return ok(201, pool_json(u));
    }
    if (p.size() == 2 && m == "DELETE") {
      if (Status st = volumes_.delete_pool(p[1]); !st) return fail(st.error());
      return ok(200, json{{"deleted", p[1]}});
    }
    if (p.size() == 2 && m == "PATCH") {
      auto body = parse_body(req.body, {"default"});
      if (!body) return fail(body.error());
      auto def = get_bool(*body, "default");
      if (!def) return fail(def.error());
      if (!*def)
        return fail(
            bad_request("only {\"default\": true} can be set; make another pool the "
                        "default instead"));
      auto pool = volumes_.set_default_pool(p[1]);
      if (!pool) return fail(pool.error());
      for (const auto& u : volumes_.pools())
        if (u.info.id == pool->id) return ok(200, pool_json(u));
    }
    return p.size() <= 2 ? method_not_allowed() : not_found();
  }

  if (res == "devices") {
    if (p.size() != 1) return not_found();
    if (m == "GET") {
      json list = json::array();
      for (const auto& u : volumes_.devices()) list.push_back(device_json(u));
      return ok(200, json{{"devices", list}});
    }
    if (m == "POST") {
      auto body = parse_body(req.body, {"path", "pool", "size_bytes", "force"});
      if (!body) return fail(body.error());
      volmgr::AddDeviceRequest r;
      auto path = get_string(*body, "path", true);
      if (!path) return fail(path.error());
      r.path = *path;
      auto pool = get_string(*body, "pool", false);
      if (!pool) return fail(pool.error());
      r.pool = *pool;
      auto size = get_u64(*body, "size_bytes", false);
      if (!size) return fail(size.error());
      r.create_size_bytes = *size;
      auto force = get_bool(*body, "force");
      if (!force) return fail(force.error());
      r.force = *force;
      auto added = volumes_.add_device(r);
      if (!added) return fail(added.error());
      return ok(201, device_json(*added));
    }
    if (m == "DELETE") {
      auto it = route.query.find("path");
      if (it == route.query.end())
        return fail(bad_request("DELETE /1.0/devices needs the query parameter path=DEVICE"));
      auto removed = volumes_.remove_device(it->second);
      if (!removed) return fail(removed.error());
      if (engine_ != nullptr) engine_->device_removed(removed->id);
      return ok(200, json{{"removed", it->second}});
    }
    return method_not_allowed();
  }

  if (res == "luns") {
    if (p.size() == 1 && m == "GET") {
      auto found = volumes_.luns();
      if (!found) return fail(found.error());
      json list = json::array();
      for (const volmgr::LunUsage& u : *found) list.push_back(lun_json(u));
      return ok(200, json{{"luns", list}});
    }
    if (p.size() == 1) return method_not_allowed();
    // POST /1.0/luns/rescan: looks again for devices that are not ok and reopens the
    // volumes that have all their devices back.
    if (p.size() == 2 && p[1] == "rescan") {
      if (m != "POST") return method_not_allowed();
      auto body = parse_body(req.body, {});
      if (!body) return fail(body.error());
      auto report = volumes_.rescan();
      if (!report) return fail(report.error());
      auto pv_brief = [&](int64_t id) {
        const auto* pv = volumes_.find_pv(id);
        return json{{"path", pv->path},
                    {"uuid", pv->uuid.str()},
                    {"lun_id", pv->lun_id},
                    {"state", volmgr::pv_state_name(pv->state)},
                    {"state_detail", pv->state_detail}};
      };
      json back = json::array(), missing = json::array(), reopened = json::array(),
           legs = json::array(), errors = json::array();
      for (int64_t id : report->back) back.push_back(pv_brief(id));
      for (int64_t id : report->still_missing) missing.push_back(pv_brief(id));
      const std::set<int64_t> came_back(report->back.begin(), report->back.end());
      for (const VolumeInfo* v : volumes_.volumes()) {
        bool touched = false;
        for (const auto& seg : v->segments)
          for (const auto& a : seg.areas) touched = touched || came_back.contains(a.pv_id);
        if (!touched) continue;
        if (v->spec.layout == Layout::kMirrored) {
          // The leg fell behind while its device was away: it comes back through a resync.
          for (size_t k = 0; k < v->leg_states.size(); ++k) {
            bool leg_back = false, leg_ok = true;
            for (const auto& seg : v->segments) {
              const auto* pv = volumes_.find_pv(seg.areas[k].pv_id);
              leg_back = leg_back || came_back.contains(seg.areas[k].pv_id);
              leg_ok = leg_ok && pv != nullptr && pv->state == volmgr::PvState::kOk;
            }
            if (leg_back && leg_ok && v->leg_states[k] != volmgr::LegState::kInSync)
              legs.push_back({{"volume", v->name},
                              {"leg", k},
                              {"command", fmt::format("smgr --restore-leg {} {}", v->name, k)}});
          }
          continue;
        }
        if (volume_state(volumes_, *v) != "ok") continue;
        Status st = engine_ != nullptr ? engine_->open(*v)
                                       : Status(make_error(Errc::kUnavailable, engine_reason_));
        if (st)
          reopened.push_back(v->name);
        else
          errors.push_back({{"volume", v->name}, {"error", st.error().message}});
      }
      return ok(200, json{{"back", back},
                          {"still_missing", missing},
                          {"reopened", reopened},
                          {"legs_to_restore", legs},
                          {"errors", errors}});
    }
    // POST /1.0/luns/import {lun, pool, force}: a labelled PV of a pool.
    if (p.size() == 2 && p[1] == "import") {
      if (m != "POST") return method_not_allowed();
      auto body = parse_body(req.body, {"lun", "pool", "force"});
      if (!body) return fail(body.error());
      volmgr::ImportLunRequest r;
      auto lun = get_string(*body, "lun", true);
      if (!lun) return fail(lun.error());
      auto pool = get_string(*body, "pool", false);
      if (!pool) return fail(pool.error());
      auto force = get_bool(*body, "force");
      if (!force) return fail(force.error());
      r.lun = *lun;
      r.pool = *pool;
      r.force = *force;
      auto added = volumes_.import_lun(r);
      if (!added) return fail(added.error());
      return ok(201, device_json(*added));
    }
    // POST /1.0/luns/passthrough {lun, volume, pool}: the whole LUN as one volume.
    if (p.size() == 2 && p[1] == "passthrough") {
      if (m != "POST") return method_not_allowed();
      auto body = parse_body(req.body, {"lun", "volume", "pool"});
      if (!body) return fail(body.error());
      volmgr::PassthroughRequest r;
      auto lun = get_string(*body, "lun", true);
      if (!lun) return fail(lun.error());
      auto name = get_string(*body, "volume", true);
      if (!name) return fail(name.error());
      auto pool = get_string(*body, "pool", false);
      if (!pool) return fail(pool.error());
      r.lun = *lun;
      r.name = *name;
      r.pool = *pool;
      auto created = volumes_.create_passthrough(r);
      if (!created) return fail(created.error());
      if (engine_ != nullptr) {
        if (Status st = engine_->open(*created); !st)
          log::error("volume={} created but not opened for I/O: {}", created->name,
                     st.error().message);
      }
      return ok(201, volume_json(*created, true));
    }
    return not_found();
  }

  // POST /1.0/backup {path}: an online copy of the whole database (VACUUM INTO).
  if (res == "backup" && p.size() == 1) {
    if (m != "POST") return method_not_allowed();
    auto body = parse_body(req.body, {"path"});
    if (!body) return fail(body.error());
    auto path = get_string(*body, "path", true);
    if (!path) return fail(path.error());
    auto done = backup_database(*path);
    if (!done) return fail(done.error());
    return ok(201, json{{"path", *path}, {"size_bytes", *done}});
  }

  if (res == "volumes") {
    if (p.size() == 1 && m == "GET") {
      auto detail = query_flag(route, "detail");
      if (!detail) return fail(detail.error());
      json list = json::array();
      for (const VolumeInfo* v : volumes_.volumes()) {
        list.push_back(volume_json(*v, *detail));
        // Resync and scrub progress of mirrors (smgr -qv); asking the engine costs a round
        // trip, so only for mirrored volumes and only in the detailed listing.
        if (*detail && v->spec.layout == Layout::kMirrored) list.back()["io"] = io_json(v->id);
      }
      return ok(200, json{{"volumes", list}});
    }
    if (p.size() == 1 && m == "POST") {
      auto body = parse_body(req.body, {"name", "pool", "size_bytes", "layout", "stripes",
                                        "stripe_size_bytes", "mirrors", "block_size_bytes"});
      if (!body) return fail(body.error());
      volmgr::CreateVolumeRequest r;
      auto name = get_string(*body, "name", true);
      if (!name) return fail(name.error());
      r.name = *name;
      auto pool = get_string(*body, "pool", false);
      if (!pool) return fail(pool.error());
      r.pool = *pool;
      auto size = get_u64(*body, "size_bytes", true);
      if (!size) return fail(size.error());
      r.size_bytes = **size;
      auto stripes = get_u64(*body, "stripes", false);
      auto stripe_size = get_u64(*body, "stripe_size_bytes", false);
      auto mirrors = get_u64(*body, "mirrors", false);
      auto bs = get_u64(*body, "block_size_bytes", false);
      auto layout_text = get_string(*body, "layout", false);
      for (const auto* e : {&stripes, &stripe_size, &mirrors, &bs})
        if (!*e) return fail(e->error());
      if (!layout_text) return fail(layout_text.error());
      // The layout follows from the counts unless named explicitly.
      const uint64_t s = stripes->value_or(1), mi = mirrors->value_or(1);
      if (s == 0 || mi == 0) return fail(bad_request("stripes and mirrors must be at least 1"));
      if (s > 1 && mi > 1)
        return fail(
            bad_request("a volume is either striped or mirrored, not both; choose "
                        "--stripes or --mirrors"));
      if (s > volmgr::kStripesMax || mi > volmgr::kMirrorsMax)
        return fail(bad_request(fmt::format("at most {} stripes and {} mirrors",
                                            volmgr::kStripesMax, volmgr::kMirrorsMax)));
      Layout layout = s > 1 ? Layout::kStriped : mi > 1 ? Layout::kMirrored : Layout::kLinear;
      if (!layout_text->empty()) {
        auto named = volmgr::parse_layout(*layout_text);
        if (!named) return fail(bad_request("layout must be linear, striped or mirrored"));
        const Layout implied = s > 1 ? Layout::kStriped : mi > 1 ? Layout::kMirrored : layout;
        if (implied != *named)
          return fail(bad_request(
              fmt::format("layout '{}' contradicts stripes={} mirrors={}", *layout_text, s, mi)));
        layout = *named;
      }
      if (stripe_size->has_value() && layout != Layout::kStriped)
        return fail(bad_request("a stripe size needs a striped layout (--stripes N with N >= 2)"));
      r.spec.layout = layout;
      r.spec.stripes = static_cast<uint32_t>(s);
      r.spec.mirrors = static_cast<uint32_t>(mi);
      r.spec.stripe_size_bytes = stripe_size->value_or(0);
      r.block_size_bytes = bs->value_or(512);
      auto created = volumes_.create_volume(r);
      if (!created) return fail(created.error());
      // A new mirror's legs start out with whatever their extents held: mark every region
      // so the engine copies leg 0 to the others once (like adding a leg).
      if (engine_ != nullptr && created->spec.layout == Layout::kMirrored) {
        if (Status st = engine_->legs_changed(*created, true); !st)
          log::error("volume={} created but not opened for I/O: {}", created->name,
                     st.error().message);
      } else if (engine_ != nullptr) {
        if (Status st = engine_->open(*created); !st)
          log::error("volume={} created but not opened for I/O: {}", created->name,
                     st.error().message);
      }
      json j = volume_json(*created, true);
      j["requested_size_bytes"] = r.size_bytes;
      return ok(201, j);
    }
    if (p.size() == 2) {
      auto v = find_volume(p[1]);
      if (!v) return fail(v.error());
      if (m == "GET") {
        json j = volume_json(**v, true);
        j["io"] = io_json((*v)->id);
        return ok(200, j);
      }
      if (m == "PATCH") {
        auto body = parse_body(req.body, {"size_bytes", "name", "force"});
        if (!body) return fail(body.error());
        auto size = get_u64(*body, "size_bytes", false);
        if (!size) return fail(size.error());
        auto name = get_string(*body, "name", false);
        if (!name) return fail(name.error());
        auto force = get_bool(*body, "force");
        if (!force) return fail(force.error());
        if (!size->has_value() && name->empty())
          return fail(bad_request("PATCH needs size_bytes or name"));
        // Each is its own transaction; one per request keeps a request all-or-nothing.
        if (size->has_value() && !name->empty())
          return fail(bad_request("change size_bytes and name in separate requests"));
        std::string current = (*v)->name;
        // Validate both changes before applying either, so a bad request changes nothing.
        if (!name->empty()) {
          if (Status st = validate_name(*name, "volume name"); !st) return fail(st.error());
        }
        if (!name->empty() && *name != current && volumes_.find_volume(*name) != nullptr)
          return fail(
              make_error(Errc::kAlreadyExists, fmt::format("volume '{}' already exists", *name)));
        if (size->has_value()) {
          auto r = volumes_.resize_volume(current, **size, *force);
          if (!r) return fail(r.error());
          if (engine_ != nullptr) {
            if (Status st = engine_->resized(*r); !st)
              log::error("volume={} resized but the I/O engine kept the old size: {}", r->name,
                         st.error().message);
          }
        }
        if (!name->empty()) {
          auto r = volumes_.rename_volume(current, *name);
          if (!r) return fail(r.error());
          current = *name;
        }
        return ok(200, volume_json(*volumes_.find_volume(current), true));
      }
      if (m == "DELETE") {
        auto force = query_flag(route, "force");
        if (!force) return fail(force.error());
        const int64_t id = (*v)->id;
        // Refuse a granted volume before closing it in the engine (the delete itself checks
        // again inside its transaction).
        if (!*force && !catalog_.grants_of_volume(id).empty())
          return fail(catalog_.check_and_drop_grants_error(id, (*v)->name));
        if (engine_ != nullptr) {
          if (Status st = engine_->forget(**v); !st) return fail(st.error());
        }
        auto lun_pv = volumes_.delete_volume(p[1], [&](db::Database& db, const VolumeInfo& vol) {
          return catalog_.check_and_drop_grants(db, vol.id, vol.name, *force);
        });
        if (!lun_pv) return fail(lun_pv.error());
        if (*lun_pv && engine_ != nullptr) engine_->device_removed(**lun_pv);
        catalog_.forget_volume(id);
        return ok(200, json{{"deleted", p[1]}});
      }
      return method_not_allowed();
    }
    // POST /1.0/volumes/NAME/legs (add), DELETE /1.0/volumes/NAME/legs/N (remove),
    // POST /1.0/volumes/NAME/legs/N/replace
    const bool add_leg = p.size() == 3 && p[2] == "legs";
    const bool one_leg = p.size() == 4 && p[2] == "legs";
    const bool replace_leg = p.size() == 5 && p[2] == "legs" && p[4] == "replace";
    if (add_leg || one_leg || replace_leg) {
      if ((add_leg || replace_leg) && m != "POST") return method_not_allowed();
      if (one_leg && m != "DELETE") return method_not_allowed();
      auto v = find_volume(p[1]);
      if (!v) return fail(v.error());
      const int64_t id = (*v)->id;
      uint32_t leg = 0;
      if (!add_leg) {
        auto n = parse_leg(p[3]);
        if (!n) return fail(bad_request("leg must be a number"));
        leg = *n;
      }
      auto force = query_flag(route, "force");
      if (!force) return fail(force.error());
      if (engine_ != nullptr && engine_->busy(id))
        return fail(make_error(Errc::kInUse, fmt::format("volume {} has a resync or scrub running; "
                                                         "wait for it (smgr -qv shows progress)",
                                                         p[1])));
      auto changed = add_leg       ? volumes_.add_leg(p[1])
                     : replace_leg ? volumes_.replace_leg(p[1], leg)
                                   : volumes_.remove_leg(p[1], leg, *force);
      if (!changed) return fail(changed.error());
      if (engine_ != nullptr) {
        if (Status st = engine_->legs_changed(*changed, add_leg || replace_leg); !st)
          log::error("volume={} legs changed but the I/O engine could not reopen it: {}",
                     changed->name, st.error().message);
      }
      json j = volume_json(*changed, true);
      j["io"] = io_json(id);
      return ok(one_leg ? 200 : 202, j);
    }
    // POST /1.0/volumes/NAME/scrub, POST /1.0/volumes/NAME/legs/N/restore
    if ((p.size() == 3 && p[2] == "scrub") ||
        (p.size() == 5 && p[2] == "legs" && p[4] == "restore")) {
      if (m != "POST") return method_not_allowed();
      auto v = find_volume(p[1]);
      if (!v) return fail(v.error());
      if (engine_ == nullptr) return fail(make_error(Errc::kUnavailable, engine_reason_));
      if ((*v)->spec.layout != Layout::kMirrored)
        return fail(bad_request(fmt::format("volume {} is not mirrored", p[1])));
      Status st;
      if (p.size() == 3) {
        st = engine_->start_scrub((*v)->id);
      } else {
        auto leg = parse_leg(p[3]);
        if (!leg || *leg >= (*v)->spec.mirrors)
          return fail(
              bad_request(fmt::format("volume {} has legs 0 to {}", p[1], (*v)->spec.mirrors - 1)));
        st = engine_->restore_leg((*v)->id, *leg);
      }
      if (!st) return fail(st.error());
      json j = volume_json(*volumes_.find_volume((*v)->id), true);
      j["io"] = io_json((*v)->id);
      return ok(202, j);
    }
    return p.size() == 1 ? method_not_allowed() : not_found();
  }

  if (res == "clients") {
    if (p.size() == 1 && m == "GET") {
      auto keys = query_flag(route, "keys");
      if (!keys) return fail(keys.error());
      json list = json::array();
      for (const Client* c : catalog_.clients()) list.push_back(client_json(*c, *keys));
      return ok(200, json{{"clients", list}});
    }
    if (p.size() == 1 && m == "POST") {
      auto body = parse_body(req.body, {"name", "node_key"});
      if (!body) return fail(body.error());
      auto name = get_string(*body, "name", true);
      if (!name) return fail(name.error());
      auto key = get_string(*body, "node_key", true);
      if (!key) return fail(key.error());
      auto c = catalog_.add_client(*name, *key);
      if (!c) return fail(c.error());
      // The copies on the devices carry the id high-water marks: a rebuilt database must
      // not hand this node's id to another.
      volumes_.refresh_pool_copies();
      return ok(201, client_json(*c, false));
    }
    if (p.size() == 2 && m == "GET") {
      const Client* c = catalog_.find_client(p[1]);
      if (c == nullptr)
        return fail(make_error(Errc::kNotFound, fmt::format("node {} does not exist", p[1])));
      auto keys = query_flag(route, "keys");
      if (!keys) return fail(keys.error());
      return ok(200, client_json(*c, *keys));
    }
    if (p.size() == 2 && m == "DELETE") {
      auto force = query_flag(route, "force");
      if (!force) return fail(force.error());
      std::vector<Grant> dropped;
      if (const Client* c = catalog_.find_client(p[1]))
        for (const Grant& g : catalog_.grants())
          if (g.client_id == c->id) dropped.push_back(g);
      if (Status st = catalog_.delete_client(p[1], *force); !st) return fail(st.error());
      if (engine_ != nullptr)
        for (const Grant& g : dropped)
          engine_->grant_changed(g.volume_id, g.client_id, true, false);
      return ok(200, json{{"deleted", p[1]}});
    }
    return p.size() <= 2 ? method_not_allowed() : not_found();
  }

  if (res == "grants") {
    if (p.size() == 1 && m == "GET") {
      json list = json::array();
      for (const Grant& g : catalog_.grants()) list.push_back(grant_json(g));
      return ok(200, json{{"grants", list}});
    }
    if (p.size() == 1 && m == "POST") {
      auto body = parse_body(req.body, {"volume", "client", "access"});
      if (!body) return fail(body.error());
      auto vol = get_string(*body, "volume", true);
      if (!vol) return fail(vol.error());
      auto client = get_string(*body, "client", true);
      if (!client) return fail(client.error());
      auto access_text = get_string(*body, "access", false);
      if (!access_text) return fail(access_text.error());
      Access access = Access::kReadWrite;
      if (*access_text == "ro")
        access = Access::kReadOnly;
      else if (!access_text->empty() && *access_text != "rw")
        return fail(bad_request("access must be \"rw\" or \"ro\""));
      auto v = find_volume(*vol);
      if (!v) return fail(v.error());
      auto g = catalog_.grant((*v)->id, *client, access);
      if (!g) return fail(g.error());
      if (engine_ != nullptr)
        engine_->grant_changed(g->volume_id, g->client_id, false, g->access == Access::kReadOnly);
      return ok(201, grant_json(*g));
    }
    if (p.size() == 3 && m == "DELETE") {
      auto v = find_volume(p[1]);
      if (!v) return fail(v.error());
      const Client* who = catalog_.find_client(p[2]);
      const int64_t who_id = who != nullptr ? who->id : 0;
      if (Status st = catalog_.revoke((*v)->id, p[2]); !st) return fail(st.error());
      if (engine_ != nullptr) engine_->grant_changed((*v)->id, who_id, true, false);
      return ok(
          200,
          json{{"revoked",
                {{"volume", p[1]}, {"client", p[2]}, {"namespace_index", info_.namespace_index}}}});
    }
    return p.size() <= 3 ? method_not_allowed() : not_found();
  }

  // Sessions and open volumes come from the RSIO export service on the engine thread.
  if (res == "sessions" && p.size() == 1) {
    if (m != "GET") return method_not_allowed();
    json list = json::array();
    const auto sessions =
        engine_ != nullptr ? engine_->sessions() : std::vector<server::SessionInfo>{};
    for (const auto& si : sessions) {
      json paths = json::array();
      for (const auto& pi : si.paths)
        paths.push_back(
            {{"path_id", pi.path_id},
             {"local", pi.local},
             {"remote", pi.remote},
             {"state", pi.connected ? "connected" : "closing"},
             {"requests", pi.requests},
             {"in_flight", pi.in_flight},
             {"description", fmt::format("IP(TCP) {}<->{} {}  tx: ok rx: ok", pi.local, pi.remote,
                                         pi.connected ? "connected" : "closing")}});
      json handles = json::array();
      for (const auto& h : si.handles)
        handles.push_back({{"handle", h.handle},
                           {"volume", h.volume},
                           {"mode", h.read_only ? "RO" : "RW"},
                           {"revoked", h.revoked}});
      list.push_back({{"session_id", fmt::format("{:016x}", si.session_id)},
                      {"client_id", si.client_id},
                      {"client", si.node_name},
                      {"platform", si.platform},
                      {"paths", paths},
                      {"handles", handles}});
    }
    return ok(
        200, json{{"namespace", {{"name", info_.namespace_name}, {"index", info_.namespace_index}}},
                  {"sessions", list}});
  }
  if (res == "opens" && p.size() == 1) {
    if (m != "GET") return method_not_allowed();
    const auto sessions =
        engine_ != nullptr ? engine_->sessions() : std::vector<server::SessionInfo>{};
    json list = json::array();
    for (const VolumeInfo* v : volumes_.volumes()) {
      json openers = json::array();
      for (const auto& si : sessions)
        for (const auto& h : si.handles)
          if (h.volume_id == v->id && !h.revoked)
            openers.push_back({{"client_id", si.client_id},
                               {"client", si.node_name},
                               {"handle", h.handle},
                               {"mode", h.read_only ? "RO" : "RW"}});
      list.push_back({{"volume", v->name},
                      {"volume_id", v->id},
                      {"namespace_index", info_.namespace_index},
                      {"openers", openers}});
    }
    return ok(200, json{{"volumes", list}});
  }
  return not_found();
}

}  // namespace rsio::appliance
