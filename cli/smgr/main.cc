// smgr: the volume manager CLI. Creates, lists, resizes, renames and deletes volumes, and
// manages pools and their devices. Thin: parses, calls rsiod's management API, prints.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/api_client.h"
#include "common/units.h"

using nlohmann::json;
using namespace rsio;
using namespace rsio::cli;

namespace {

struct Args {
  std::string create;
  std::string size;
  std::string pool;
  // kNotGiven until the option appears, so that an explicit 0 is refused, not ignored.
  static constexpr int64_t kNotGiven = INT64_MIN;
  int64_t stripes = kNotGiven;
  std::string stripe_size;
  int64_t mirrors = kNotGiven;
  int64_t block_size = kNotGiven;
  bool query = false;
  int verbose = 0;
  std::string resize;
  std::string remove;
  std::vector<std::string> rename;
  bool force = false;
  std::string create_pool;
  std::string extent_size;
  bool make_default = false;
  std::string delete_pool;
  std::string set_default;
  std::string scrub;
  std::string add_leg;
  std::vector<std::string> remove_leg;
  std::vector<std::string> replace_leg;
  std::vector<std::string> restore_leg;
  bool list_pools = false;
  std::string add_device;
  std::string remove_device;
  bool list_devices = false;
  bool list_luns = false;
  bool rescan = false;
  std::string import_lun;
  std::vector<std::string> passthrough;
  std::string backup_db;
  bool json_out = false;
  std::string socket = kDefaultSocket;
};

void print_json(const json& j) { fmt::print("{}\n", j.dump(2)); }

uint64_t u64(const json& j, const char* key) { return j[key].get<uint64_t>(); }
std::string str(const json& j, const char* key) { return j[key].get<std::string>(); }

std::string layout_text(const json& v) {
  if (v.contains("passthrough")) return "pass-through";
  const std::string layout = str(v, "layout");
  if (layout == "striped")
    return fmt::format("striped {}x{}", u64(v, "stripes"),
                       format_size(u64(v, "stripe_size_bytes")));
  if (layout == "mirrored") return fmt::format("mirrored {}-way", u64(v, "mirrors"));
  return layout;
}

Status list_volumes(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", a.verbose > 0 ? "/1.0/volumes?detail=true" : "/1.0/volumes"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  fmt::print("{}\n", rstrip(fmt::format("{:>4} {:<16} {:>11} {:>12} {:>5}  {:<20} {:<12} {:<11} {}",
                                        "id", "volume", "size", "blocks", "bs", "layout", "pool",
                                        "state", "granted to")));
  for (const auto& v : r["volumes"]) {
    std::vector<std::string> who;
    for (const auto& g : v["grants"])
      who.push_back(str(g, "client") + (g["access"] == "ro" ? "(ro)" : ""));
    fmt::print("{}\n",
               rstrip(fmt::format("{:04} {:<16} {:>11} {:>12} {:>5}  {:<20} {:<12} {:<11} {}",
                                  v["id"].get<int64_t>(), str(v, "name"),
                                  format_size(u64(v, "size_bytes")), u64(v, "blocks"),
                                  u64(v, "block_size_bytes"), layout_text(v), str(v, "pool"),
                                  str(v, "state"), fmt::join(who, ","))));
    if (a.verbose == 0) continue;
    const std::string layout = str(v, "layout");
    const char* area_word = layout == "striped" ? "stripe" : layout == "mirrored" ? "leg" : "area";
    if (v.contains("legs"))
      for (const auto& leg : v["legs"])
        if (leg["state"] != "in-sync")
          fmt::print("     leg {} is {}{}\n", leg["leg"].get<int>(), str(leg, "state"),
                     str(leg, "detail").empty() ? "" : ": " + str(leg, "detail"));
    if (v.contains("io") && v["io"].value("open", false)) {
      const auto& io = v["io"];
      const auto& rs = io["resync"];
      if (rs["active"].get<bool>())
        fmt::print("     resync: {:.1f}% ({} of {} regions), {}/s, about {:.0f} s left\n",
                   rs["percent"].get<double>(), u64(rs, "regions_done"), u64(rs, "regions_total"),
                   format_size(static_cast<uint64_t>(rs["rate_bytes_per_s"].get<double>())),
                   rs["eta_s"].get<double>());
      const auto& sc = io["scrub"];
      if (sc["active"].get<bool>())
        fmt::print("     scrub: {} of {} regions compared, {} differ so far\n",
                   u64(sc, "regions_done"), u64(sc, "regions_total"),
                   u64(sc, "mismatched_regions"));
      else if (u64(sc, "regions_done") > 0)
        fmt::print("     last scrub: {} of {} regions compared, {} differ\n",
                   u64(sc, "regions_done"), u64(sc, "regions_total"),
                   u64(sc, "mismatched_regions"));
      if (u64(io, "marked_regions") > 0)
        fmt::print("     write-intent bitmap: {} region(s) marked\n", u64(io, "marked_regions"));
    } else if (v.contains("io") && layout == "mirrored") {
      fmt::print("     not open for I/O: {}\n", str(v["io"], "reason"));
    }
    size_t i = 0;
    for (const auto& s : v["segments"]) {
      const uint64_t first = u64(s, "start_extent");
      fmt::print("     segment {}: extents {}-{} ({} at offset {})\n", i++, first,
                 first + u64(s, "extent_count") - 1, format_size(u64(s, "size_bytes")),
                 format_size(u64(s, "start_bytes")));
      size_t k = 0;
      for (const auto& ar : s["areas"]) {
        const uint64_t pv_first = u64(ar, "device_start_extent");
        fmt::print("       {} {}: {} extents {}-{}{}\n", area_word, k++, str(ar, "device"),
                   pv_first, pv_first + u64(ar, "extent_count") - 1,
                   ar["device_state"] == "ok" ? "" : " [" + str(ar, "device_state") + "]");
      }
    }
  }
  return {};
}

Status list_pools(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", "/1.0/pools"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  fmt::print("{:<16} {:>10} {:>11} {:>11} {:>8} {:>8}  {}\n", "pool", "extent", "size", "free",
             "devices", "volumes", "default");
  for (const auto& p : r["pools"])
    fmt::print("{}\n",
               rstrip(fmt::format("{:<16} {:>10} {:>11} {:>11} {:>8} {:>8}  {}", str(p, "name"),
                                  format_size(u64(p, "extent_size_bytes")),
                                  format_size(u64(p, "size_bytes")),
                                  format_size(u64(p, "free_bytes")), u64(p, "device_count"),
                                  u64(p, "volume_count"), p["default"].get<bool>() ? "*" : "")));
  return {};
}

Status list_devices(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", "/1.0/devices"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  fmt::print("{:>4} {:<40} {:<12} {:<5} {:>11} {:>11} {:>11}  {}\n", "id", "device", "pool", "kind",
             "size", "used", "free", "state");
  for (const auto& d : r["devices"])
    fmt::print(
        "{:04} {:<40} {:<12} {:<5} {:>11} {:>11} {:>11}  {}\n", d["id"].get<int64_t>(),
        str(d, "path"), str(d, "pool"), str(d, "kind"), format_size(u64(d, "size_bytes")),
        format_size(u64(d, "used_bytes")), format_size(u64(d, "free_bytes")),
        d["state"] == "ok" ? std::string("ok") : str(d, "state") + ": " + str(d, "state_detail"));
  return {};
}

std::string lun_size(const json& l) { return format_size(u64(l, "size_bytes")); }

std::string lun_use(const json& l) {
  const std::string use = str(l, "use"), detail = str(l, "use_detail");
  if (use == "pv") return "pv of " + detail.substr(detail.find(' ') + 1);
  if (use == "passthrough") return "pass-through " + detail;
  if (use == "in-use") return "in use: " + detail;
  return use;
}

std::string path_text(const json& p) {
  std::string t = fmt::format("{:<6} {:<6}", str(p, "name"), str(p, "transport"));
  if (!str(p, "scsi_address").empty()) t += fmt::format(" {:<9}", str(p, "scsi_address"));
  if (!str(p, "host_wwpn").empty() || !str(p, "target_wwpn").empty())
    t += fmt::format(" initiator {} -> target {}", str(p, "host_wwpn"), str(p, "target_wwpn"));
  if (!str(p, "iscsi_target").empty()) t += " target " + str(p, "iscsi_target");
  if (!str(p, "state").empty()) t += "  " + str(p, "state");
  return rstrip(t);
}

// smgr -L: one line per LUN (multipath maps stand for their paths); -Lv: everything the
// appliance knows about each, paths included.
Status list_luns(ApiClient& api, const Args& a) {
  RSIO_TRY(json r, api.call("GET", "/1.0/luns"));
  if (a.json_out) {
    print_json(r);
    return {};
  }
  if (a.verbose == 0) {
    size_t id_w = 3, dev_w = 6;
    for (const auto& l : r["luns"]) {
      id_w = std::max(id_w, str(l, "identity").size());
      dev_w = std::max(dev_w, str(l, "device").size());
    }
    fmt::print("{:<{}} {:<{}} {:>10} {:<9} {:>5}  {}\n", "lun", id_w, "device", dev_w, "size",
               "transport", "paths", "use");
    for (const auto& l : r["luns"]) {
      if (!str(l, "multipath_map").empty()) continue;
      const std::string id = str(l, "identity").empty() ? "-" : str(l, "identity");
      fmt::print("{}\n", rstrip(fmt::format("{:<{}} {:<{}} {:>10} {:<9} {:>5}  {}", id, id_w,
                                            str(l, "device"), dev_w, lun_size(l),
                                            str(l, "transport"), l["paths"].size(), lun_use(l))));
    }
    return {};
  }
  bool first = true;
  for (const auto& l : r["luns"]) {
    if (!str(l, "multipath_map").empty()) continue;
    if (!first) fmt::print("\n");
    first = false;
    fmt::print("{}  {} ({})\n",
               str(l, "identity").empty() ? "(no stable identity)" : str(l, "identity"),
               str(l, "device"), str(l, "name"));
    std::string what = str(l, "vendor");
    if (!str(l, "model").empty()) what += (what.empty() ? "" : " ") + str(l, "model");
    if (!str(l, "revision").empty()) what += " rev " + str(l, "revision");
    if (!str(l, "serial").empty())
      what += (what.empty() ? "serial " : " serial ") + str(l, "serial");
    fmt::print("  {}{}, {}, {}/{}-byte blocks, {}{}\n", what.empty() ? "" : what + ", ",
               str(l, "transport"), lun_size(l), u64(l, "logical_block_bytes"),
               u64(l, "physical_block_bytes"),
               l["rotational"].get<bool>() ? "rotational" : "non-rotational",
               l["read_only"].get<bool>() ? ", read-only" : "");
    fmt::print("  use: {}\n", lun_use(l));
    if (!str(l, "backing_file").empty()) fmt::print("  backing file: {}\n", str(l, "backing_file"));
    if (!l["by_id"].empty())
      fmt::print("  by-id: {}\n", fmt::join(l["by_id"].get<std::vector<std::string>>(), ", "));
    for (const auto& p : l["paths"]) fmt::print("  path {}\n", path_text(p));
    if (!l["partitions"].empty())
      fmt::print("  partitions: {}\n",
                 fmt::join(l["partitions"].get<std::vector<std::string>>(), ", "));
    if (!l["mounts"].empty())
      fmt::print("  mounted: {}\n", fmt::join(l["mounts"].get<std::vector<std::string>>(), ", "));
    if (!l["holders"].empty())
      fmt::print("  held by: {}\n", fmt::join(l["holders"].get<std::vector<std::string>>(), ", "));
  }
  return {};
}

void note_rounding(uint64_t requested, const json& v) {
  if (u64(v, "size_bytes") != requested)
    fmt::print(stderr,
               "smgr: note: size rounded up to {} ({} blocks): volumes are allocated in "
               "whole extents of {}\n",
               format_size(u64(v, "size_bytes")), u64(v, "blocks"),
               format_size(u64(v, "extent_size_bytes")));
}

Status run(ApiClient& api, const Args& a) {
  const int actions =
      int{!a.create.empty()} + int{a.query} + int{!a.resize.empty()} + int{!a.remove.empty()} +
      int{!a.rename.empty()} + int{!a.create_pool.empty()} + int{!a.delete_pool.empty()} +
      int{a.list_pools} + int{!a.add_device.empty()} + int{!a.remove_device.empty()} +
      int{a.list_devices} + int{!a.set_default.empty()} + int{!a.scrub.empty()} +
      int{!a.restore_leg.empty()} + int{!a.add_leg.empty()} + int{!a.remove_leg.empty()} +
      int{!a.replace_leg.empty()} + int{a.list_luns} + int{!a.import_lun.empty()} +
      int{!a.passthrough.empty()} + int{!a.backup_db.empty()} + int{a.rescan};
  if (actions == 0)
    throw UsageError(
        "say what to do: -c, -q, -r, -d, --rename, --create-pool, -P, -a, -D, --scrub, "
        "--add-leg, --remove-leg, --replace-leg, --restore-leg, -L, --import-lun, "
        "--passthrough, --rescan, --backup-db ...");
  if (actions > 1) throw UsageError("give one action at a time");
  const bool sized = !a.create.empty() || !a.resize.empty() || !a.add_device.empty();
  if (!a.size.empty() && !sized) throw UsageError("-S/--size belongs to -c, -r or -a");
  const bool given_stripes = a.stripes != Args::kNotGiven,
             given_mirrors = a.mirrors != Args::kNotGiven,
             given_bs = a.block_size != Args::kNotGiven;
  if ((given_stripes && a.stripes < 1) || (given_mirrors && a.mirrors < 1))
    throw UsageError("--stripes and --mirrors must be at least 1");
  if (given_bs && a.block_size < 1) throw UsageError("--block-size must be 512 or 4096");
  if ((given_stripes || given_mirrors || !a.stripe_size.empty() || given_bs) && a.create.empty())
    throw UsageError("--stripes, --stripe-size, --mirrors and --block-size belong to -c");
  if ((!a.extent_size.empty() || a.make_default) && a.create_pool.empty())
    throw UsageError("--extent-size and --default belong to --create-pool");
  if (!a.pool.empty() && a.create.empty() && a.add_device.empty() && a.import_lun.empty() &&
      a.passthrough.empty())
    throw UsageError("-p/--pool belongs to -c, -a, --import-lun or --passthrough");
  if (a.verbose > 0 && !a.query && !a.list_luns)
    throw UsageError("-v/--verbose belongs to -q or -L");
  if (a.force && a.resize.empty() && a.remove.empty() && a.add_device.empty() &&
      a.remove_leg.empty() && a.import_lun.empty())
    throw UsageError("-f/--force belongs to -r, -d, -a, --import-lun or --remove-leg");

  if (a.query) return list_volumes(api, a);
  if (a.list_pools) return list_pools(api, a);
  if (a.list_devices) return list_devices(api, a);
  if (a.list_luns) return list_luns(api, a);
  if (a.rescan) {
    RSIO_TRY(json r, api.call("POST", "/1.0/luns/rescan", json::object()));
    if (a.json_out) {
      print_json(r);
      return {};
    }
    for (const auto& d : r["back"])
      fmt::print("back: {}{}\n", str(d, "path"),
                 str(d, "lun_id").empty() ? "" : " (" + str(d, "lun_id") + ")");
    for (const auto& d : r["still_missing"])
      fmt::print("still {}: {}: {}\n", str(d, "state"), str(d, "path"), str(d, "state_detail"));
    for (const auto& v : r["reopened"])
      fmt::print("volume {} is available again\n", v.get<std::string>());
    for (const auto& l : r["legs_to_restore"])
      fmt::print("volume {}: leg {} fell behind while its device was away; resync it with `{}`\n",
                 str(l, "volume"), l["leg"].get<uint64_t>(), str(l, "command"));
    for (const auto& e : r["errors"])
      fmt::print(stderr, "smgr: volume {} not reopened: {}\n", str(e, "volume"), str(e, "error"));
    if (r["back"].empty() && r["still_missing"].empty()) fmt::print("every device is in place\n");
    if (!r["errors"].empty()) return make_error(Errc::kIo, "not every volume could be reopened");
    return {};
  }
  if (!a.import_lun.empty()) {
    json body = {{"lun", a.import_lun}, {"force", a.force}};
    if (!a.pool.empty()) body["pool"] = a.pool;
    RSIO_TRY(json d, api.call("POST", "/1.0/luns/import", body));
    if (a.json_out)
      print_json(d);
    else
      fmt::print("LUN {} ({}) added to pool {}: {}, {} extents\n", str(d, "lun_id"), str(d, "path"),
                 str(d, "pool"), format_size(u64(d, "size_bytes")), u64(d, "extent_count"));
    return {};
  }
  if (!a.passthrough.empty()) {
    json body = {{"lun", a.passthrough[0]}, {"volume", a.passthrough[1]}};
    if (!a.pool.empty()) body["pool"] = a.pool;
    RSIO_TRY(json v, api.call("POST", "/1.0/luns/passthrough", body));
    if (a.json_out)
      print_json(v);
    else
      fmt::print(
          "volume {} passes LUN {} ({}) through: {} ({} blocks of {} bytes); its data "
          "was left as it is\n",
          str(v, "name"), str(v["passthrough"], "lun_id"), str(v["passthrough"], "device"),
          format_size(u64(v, "size_bytes")), u64(v, "blocks"), u64(v, "block_size_bytes"));
    return {};
  }
  if (!a.backup_db.empty()) {
    const std::string path = std::filesystem::absolute(a.backup_db).lexically_normal().string();
    RSIO_TRY(json b, api.call("POST", "/1.0/backup", json{{"path", path}}));
    if (a.json_out)
      print_json(b);
    else
      fmt::print("database backed up to {} ({})\n", str(b, "path"),
                 format_size(u64(b, "size_bytes")));
    return {};
  }

  if (!a.create.empty()) {
    if (a.size.empty()) throw UsageError("-c/--create needs a size: -S SIZE (e.g. -S 1g)");
    const uint64_t size = parse_size_option("-S/--size", a.size);
    json body = {{"name", a.create}, {"size_bytes", size}};
    if (!a.pool.empty()) body["pool"] = a.pool;
    if (a.stripes != Args::kNotGiven) body["stripes"] = a.stripes;
    if (a.mirrors != Args::kNotGiven) body["mirrors"] = a.mirrors;
    if (!a.stripe_size.empty())
      body["stripe_size_bytes"] = parse_size_option("--stripe-size", a.stripe_size);
    if (a.block_size != Args::kNotGiven) body["block_size_bytes"] = a.block_size;
    RSIO_TRY(json v, api.call("POST", "/1.0/volumes", body));
    if (a.json_out)
      print_json(v);
    else
      note_rounding(size, v);
    return {};
  }
  if (!a.resize.empty()) {
    if (a.size.empty()) throw UsageError("-r/--resize needs the new size: -S SIZE");
    const uint64_t size = parse_size_option("-S/--size", a.size);
    RSIO_TRY(json v, api.call("PATCH", "/1.0/volumes/" + url_encode(a.resize),
                              json{{"size_bytes", size}, {"force", a.force}}));
    if (a.json_out)
      print_json(v);
    else {
      note_rounding(size, v);
      fmt::print("volume {} is now {} ({} blocks)\n", str(v, "name"),
                 format_size(u64(v, "size_bytes")), u64(v, "blocks"));
    }
    return {};
  }
  if (!a.remove.empty()) {
    RSIO_TRY(json r, api.call("DELETE", "/1.0/volumes/" + url_encode(a.remove) +
                                            (a.force ? "?force=true" : "")));
    if (a.json_out)
      print_json(r);
    else
      fmt::print("volume {} deleted\n", a.remove);
    return {};
  }
  if (!a.rename.empty()) {
    RSIO_TRY(json v, api.call("PATCH", "/1.0/volumes/" + url_encode(a.rename[0]),
                              json{{"name", a.rename[1]}}));
    if (a.json_out)
      print_json(v);
    else
      fmt::print("volume {} renamed to {}\n", a.rename[0], str(v, "name"));
    return {};
  }
  if (!a.create_pool.empty()) {
    json body = {{"name", a.create_pool}, {"default", a.make_default}};
    if (!a.extent_size.empty())
      body["extent_size_bytes"] = parse_size_option("--extent-size", a.extent_size);
    RSIO_TRY(json p, api.call("POST", "/1.0/pools", body));
    if (a.json_out)
      print_json(p);
    else
      fmt::print("pool {} created (extent size {}{})\n", str(p, "name"),
                 format_size(u64(p, "extent_size_bytes")),
                 p["default"].get<bool>() ? ", default" : "");
    return {};
  }
  if (!a.add_leg.empty() || !a.remove_leg.empty() || !a.replace_leg.empty()) {
    std::string method = "POST", target;
    if (!a.add_leg.empty()) {
      target = "/1.0/volumes/" + url_encode(a.add_leg) + "/legs";
    } else if (!a.remove_leg.empty()) {
      method = "DELETE";
      target = "/1.0/volumes/" + url_encode(a.remove_leg[0]) + "/legs/" +
               url_encode(a.remove_leg[1]) + (a.force ? "?force=true" : "");
    } else {
      target = "/1.0/volumes/" + url_encode(a.replace_leg[0]) + "/legs/" +
               url_encode(a.replace_leg[1]) + "/replace";
    }
    RSIO_TRY(json v,
             api.call(method, target,
                      method == "POST" ? std::optional<json>(json::object()) : std::nullopt));
    if (a.json_out) {
      print_json(v);
    } else if (!a.remove_leg.empty()) {
      fmt::print("leg {} of {} removed; {} now {}\n", a.remove_leg[1], a.remove_leg[0],
                 str(v, "name"), layout_text(v));
    } else {
      fmt::print("{} is now {}; the new leg {} is being copied (`smgr -qv` shows progress)\n",
                 str(v, "name"), layout_text(v), u64(v, "mirrors") - 1);
    }
    return {};
  }
  if (!a.scrub.empty() || !a.restore_leg.empty()) {
    const std::string target = !a.scrub.empty()
                                   ? "/1.0/volumes/" + url_encode(a.scrub) + "/scrub"
                                   : "/1.0/volumes/" + url_encode(a.restore_leg[0]) + "/legs/" +
                                         url_encode(a.restore_leg[1]) + "/restore";
    RSIO_TRY(json v, api.call("POST", target, json::object()));
    if (a.json_out)
      print_json(v);
    else if (!a.scrub.empty())
      fmt::print("scrub of {} started; `smgr -qv` shows its progress and what it finds\n", a.scrub);
    else
      fmt::print("leg {} of {} is resyncing; `smgr -qv` shows its progress\n", a.restore_leg[1],
                 a.restore_leg[0]);
    return {};
  }
  if (!a.set_default.empty()) {
    RSIO_TRY(json p,
             api.call("PATCH", "/1.0/pools/" + url_encode(a.set_default), json{{"default", true}}));
    if (a.json_out)
      print_json(p);
    else
      fmt::print("pool {} is now the default pool\n", str(p, "name"));
    return {};
  }
  if (!a.delete_pool.empty()) {
    RSIO_TRY(json r, api.call("DELETE", "/1.0/pools/" + url_encode(a.delete_pool)));
    if (a.json_out)
      print_json(r);
    else
      fmt::print("pool {} deleted\n", a.delete_pool);
    return {};
  }
  if (!a.add_device.empty()) {
    json body = {{"path", a.add_device}, {"force", a.force}};
    if (!a.pool.empty()) body["pool"] = a.pool;
    if (!a.size.empty()) body["size_bytes"] = parse_size_option("-S/--size", a.size);
    RSIO_TRY(json d, api.call("POST", "/1.0/devices", body));
    if (a.json_out)
      print_json(d);
    else
      fmt::print("device {} added to pool {}: {}, {} extents\n", str(d, "path"), str(d, "pool"),
                 format_size(u64(d, "size_bytes")), u64(d, "extent_count"));
    return {};
  }
  RSIO_TRY(json r, api.call("DELETE", "/1.0/devices?path=" + url_encode(a.remove_device)));
  if (a.json_out)
    print_json(r);
  else
    fmt::print("device {} removed\n", a.remove_device);
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{
      "smgr - the RSIO volume manager.\n\n"
      "Sizes: bytes, or a number with K, M, G, T, P (powers of 1024, e.g. 512M, 1g, 1.5T),\n"
      "or 512-byte sectors with s (2097152s).\n\n"
      "Examples:\n"
      "  smgr -c eisberg -S 1g                  create a 1 GiB volume in the default pool\n"
      "  smgr -c fast -S 10g --stripes 2        striped over two devices\n"
      "  smgr -c safe -S 10g --mirrors 2        mirrored on two devices\n"
      "  smgr -q / -qv                          list volumes (-qv: segments and devices)\n"
      "  smgr -r eisberg -S 2g                  grow a volume (shrinking needs --force)\n"
      "  smgr --create-pool big --extent-size 16M\n"
      "  smgr -a /dev/sdb -p big                add a block device to a pool\n"
      "  smgr -a /srv/pool1.img -S 100g         create a sparse file and add it\n"
      "  smgr -P / -D                           list pools / devices\n"
      "  smgr -L / -Lv                          list LUNs by WWN (-Lv: paths, ports, users)\n"
      "  smgr --import-lun naa.600a0980... -p big   a LUN as a labelled device of a pool\n"
      "  smgr --passthrough naa.600a0980... lun3    a whole LUN as volume lun3, data kept\n"
      "  smgr --backup-db /root/rsio-backup.db  online copy of the database (clients, grants)\n",
      "smgr"};
  app.get_formatter()->column_width(32);
  app.add_option("-c,--create", a.create, "Create a volume with this name")->type_name("NAME");
  app.add_option("-S,--size", a.size, "Size for -c, -r, or of a file to create with -a")
      ->type_name("SIZE");
  app.add_option("-p,--pool", a.pool,
                 "Pool for -c, -a, --import-lun or --passthrough (default: the default pool)")
      ->type_name("POOL");
  app.add_option("--stripes", a.stripes, "With -c: stripe over N devices")->type_name("N");
  app.add_option("--stripe-size", a.stripe_size, "With -c: stripe size (default 64K)")
      ->type_name("SIZE");
  app.add_option("--mirrors", a.mirrors, "With -c: keep N copies on distinct devices")
      ->type_name("N");
  app.add_option("--block-size", a.block_size, "With -c: logical block size, 512 or 4096")
      ->type_name("BYTES");
  app.add_flag("-q,--query", a.query, "List volumes");
  app.add_flag("-v,--verbose", a.verbose,
               "With -q: show segments and devices; with -L: paths, ports and users");
  app.add_option("-r,--resize", a.resize, "Resize a volume to -S SIZE")->type_name("NAME");
  app.add_option("-d,--delete", a.remove, "Delete a volume (refused while granted)")
      ->type_name("NAME");
  app.add_option("-n,--rename", a.rename, "Rename a volume")
      ->expected(2)
      ->type_name("NAME NEWNAME");
  app.add_flag("-f,--force", a.force,
               "Allow shrinking, deleting a granted volume, overwriting a labelled device (-a, "
               "--import-lun)");
  app.add_option("--create-pool", a.create_pool, "Create a pool")->type_name("NAME");
  app.add_option("--extent-size", a.extent_size, "With --create-pool: extent size (default 4M)")
      ->type_name("SIZE");
  app.add_flag("--default", a.make_default, "With --create-pool: make it the default pool");
  app.add_option("--set-default-pool", a.set_default,
                 "Make a pool the default for -c and -a without -p")
      ->type_name("NAME");
  app.add_option("--add-leg", a.add_leg,
                 "Give a linear or mirrored volume another mirror leg (copied in the background)")
      ->type_name("NAME");
  app.add_option("--remove-leg", a.remove_leg, "Remove a mirror leg and free its space")
      ->expected(2)
      ->type_name("NAME LEG");
  app.add_option("--replace-leg", a.replace_leg,
                 "Replace a mirror leg by a new one on other devices")
      ->expected(2)
      ->type_name("NAME LEG");
  app.add_option("--scrub", a.scrub, "Compare the legs of a mirrored volume (in the background)")
      ->type_name("NAME");
  app.add_option("--restore-leg", a.restore_leg,
                 "Bring a faulty mirror leg back: it is resynced in the background")
      ->expected(2)
      ->type_name("NAME LEG");
  app.add_option("--delete-pool", a.delete_pool, "Delete an empty pool")->type_name("NAME");
  app.add_flag("-P,--pools", a.list_pools, "List pools");
  app.add_option("-a,--add-device", a.add_device, "Add a block device or file to a pool")
      ->type_name("PATH");
  app.add_option("--remove-device", a.remove_device, "Remove an unused device from its pool")
      ->type_name("PATH");
  app.add_flag("-D,--devices", a.list_devices, "List devices with used and free space");
  app.add_flag("-L,--luns", a.list_luns,
               "List the LUNs (block devices) this appliance sees, by WWN, and what uses them");
  app.add_flag("--rescan", a.rescan,
               "Look again for devices and LUNs that are missing (after fixing zoning or "
               "cabling) and make their volumes available without restarting rsiod");
  app.add_option("--import-lun", a.import_lun,
                 "Add a LUN to a pool (-p) as a labelled device; LUN: WWN, device or by-id name")
      ->type_name("LUN");
  app.add_option("--passthrough", a.passthrough,
                 "Export a whole LUN 1:1 as a new volume; no label is written, the LUN's data "
                 "is kept, and it is found again by its WWN")
      ->expected(2)
      ->type_name("LUN VOLUME");
  app.add_option("--backup-db", a.backup_db,
                 "Write an online copy of the metadata database (volumes, clients, grants) to "
                 "a new file")
      ->type_name("FILE");
  app.add_flag("--json", a.json_out, "Print the API's JSON instead of tables");
  add_socket_option(app, a.socket);
  return run_cli(app, argc, argv, [&] {
    ApiClient api(a.socket);
    return run(api, a);
  });
}
