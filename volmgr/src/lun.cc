#include "volmgr/lun.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace rsio::volmgr {
namespace fs = std::filesystem;
namespace {

std::string trim(std::string s) {
  auto space = [](unsigned char c) { return std::isspace(c) != 0 || c == 0; };
  while (!s.empty() && space(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && space(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A sysfs attribute, trimmed; empty when it does not exist or cannot be read.
std::string attr(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return trim(ss.str());
}

uint64_t attr_u64(const fs::path& p, uint64_t fallback) {
  const std::string s = attr(p);
  if (s.empty()) return fallback;
  try {
    return std::stoull(s);
  } catch (...) {
    return fallback;
  }
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    out.push_back(it->path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool is_scsi_address(const std::string& s) {
  return std::count(s.begin(), s.end(), ':') == 3 && std::all_of(s.begin(), s.end(), [](char c) {
           return c == ':' || std::isdigit(static_cast<unsigned char>(c));
         });
}

// The SCSI identity as udev's scsi_id prints it ("3<hex>" for NAA, "2<hex>" for EUI-64)
// turned into the sysfs wwid form.
std::string identity_from_scsi_id(const std::string& id) {
  if (id.size() < 2) return {};
  switch (id[0]) {
    case '3':
      return "naa." + lower(id.substr(1));
    case '2':
      return "eui." + lower(id.substr(1));
    default:
      return "t10." + id.substr(1);
  }
}

struct Scanner {
  const LunScanOptions& opt;
  fs::path block_dir;
  std::map<std::string, std::string> mounts;              // "maj:min" -> mount point
  std::map<std::string, std::vector<std::string>> by_id;  // kernel name -> by-id names

  void load_mounts() {
    std::ifstream in(opt.mountinfo);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string id, parent, devno, root, point;
      if (ls >> id >> parent >> devno >> root >> point) mounts.emplace(devno, point);
    }
  }

  void load_by_id() {
    const fs::path dir = fs::path(opt.dev_root) / "disk" / "by-id";
    for (const std::string& e : entries(dir)) {
      std::error_code ec;
      const fs::path target = fs::read_symlink(dir / e, ec);
      if (!ec) by_id[target.filename().string()].push_back(e);
    }
  }

  // The SCSI path facts of one sdX device.
  LunPath path_of(const std::string& name) {
    LunPath p;
    p.name = name;
    std::error_code ec;
    const fs::path real = fs::canonical(block_dir / name, ec);
    std::vector<std::string> parts;
    for (const auto& c : real) parts.push_back(c.string());
    std::string host, rport, session;
    bool sas = false, virtio = false, nvme = false, ata = false, usb = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string& c = parts[i];
      if (c.starts_with("host") && c.size() > 4 && std::all_of(c.begin() + 4, c.end(), [](char ch) {
            return std::isdigit(static_cast<unsigned char>(ch));
          }))
        host = c;
      if (c.starts_with("rport-")) rport = c;
      if (c.starts_with("session")) session = c;
      if (c.starts_with("end_device-") || c.starts_with("expander-")) sas = true;
      if (c.starts_with("virtio")) virtio = true;
      if (c.starts_with("nvme")) nvme = true;
      if (c.starts_with("ata")) ata = true;
      if (c.starts_with("usb")) usb = true;
      if (c == "block" && i > 0 && is_scsi_address(parts[i - 1])) p.scsi_address = parts[i - 1];
    }
    const fs::path sys(opt.sysfs_root);
    if (!rport.empty()) {
      p.transport = "fc";
      p.target_wwpn = attr(sys / "class" / "fc_remote_ports" / rport / "port_name");
      if (!host.empty()) p.host_wwpn = attr(sys / "class" / "fc_host" / host / "port_name");
    } else if (!session.empty()) {
      p.transport = "iscsi";
      p.iscsi_target = attr(sys / "class" / "iscsi_session" / session / "targetname");
    } else if (sas) {
      p.transport = "sas";
    } else if (nvme) {
      p.transport = "nvme";
    } else if (virtio) {
      p.transport = "virtio";
    } else if (usb) {
      p.transport = "usb";
    } else if (ata) {
      p.transport = "ata";
    } else {
      p.transport = "unknown";
    }
    if (!p.scsi_address.empty()) p.state = attr(block_dir / name / "device" / "state");
    return p;
  }

  Lun lun_of(const std::string& name) {
    const fs::path d = block_dir / name;
    Lun l;
    l.name = name;
    const std::string devno = attr(d / "dev");
    if (auto colon = devno.find(':'); colon != std::string::npos) {
      l.major = static_cast<uint32_t>(std::strtoul(devno.c_str(), nullptr, 10));
      l.minor = static_cast<uint32_t>(std::strtoul(devno.c_str() + colon + 1, nullptr, 10));
    }
    l.size_bytes = attr_u64(d / "size", 0) * 512;
    l.logical_block_bytes =
        static_cast<uint32_t>(attr_u64(d / "queue" / "logical_block_size", 512));
    l.physical_block_bytes =
        static_cast<uint32_t>(attr_u64(d / "queue" / "physical_block_size", 512));
    l.rotational = attr(d / "queue" / "rotational") == "1";
    l.read_only = attr(d / "ro") == "1";
    l.vendor = attr(d / "device" / "vendor");
    l.model = attr(d / "device" / "model");
    l.revision = attr(d / "device" / "rev");
    if (l.revision.empty()) l.revision = attr(d / "device" / "firmware_rev");
    l.serial = attr(d / "serial");
    if (l.serial.empty()) l.serial = attr(d / "device" / "serial");
    l.device_path = (fs::path(opt.dev_root) / name).string();
    if (auto it = by_id.find(name); it != by_id.end()) l.by_id = it->second;
    for (const std::string& e : entries(d))
      if (fs::exists(d / e / "partition")) l.partitions.push_back(e);
    l.holders = entries(d / "holders");
    auto note_mount = [&](const std::string& who, const fs::path& dir) {
      if (auto it = mounts.find(attr(dir / "dev")); it != mounts.end())
        l.mounts.push_back(fmt::format("{} on {}", who, it->second));
    };
    note_mount(name, d);
    for (const std::string& part : l.partitions) note_mount(part, d / part);

    std::string wwid = attr(d / "device" / "wwid");
    if (wwid.empty()) wwid = attr(d / "wwid");  // NVMe namespaces
    if (name.starts_with("dm-")) {
      l.dm_name = attr(d / "dm" / "name");
      const std::string uuid = attr(d / "dm" / "uuid");
      if (!l.dm_name.empty())
        l.device_path = (fs::path(opt.dev_root) / "mapper" / l.dm_name).string();
      if (uuid.starts_with("mpath-")) {
        l.transport = "multipath";
        for (const std::string& slave : entries(d / "slaves")) {
          l.paths.push_back(path_of(slave));
          const fs::path sd = block_dir / slave;
          if (wwid.empty()) wwid = attr(sd / "device" / "wwid");
          if (l.vendor.empty()) l.vendor = attr(sd / "device" / "vendor");
          if (l.model.empty()) l.model = attr(sd / "device" / "model");
          if (l.revision.empty()) l.revision = attr(sd / "device" / "rev");
        }
        if (wwid.empty()) wwid = identity_from_scsi_id(uuid.substr(6));
      } else {
        l.transport = "dm";
        if (!uuid.empty()) l.identity = "dm-uuid-" + uuid;
      }
    } else if (name.starts_with("loop")) {
      l.transport = "loop";
      l.backing_file = attr(d / "loop" / "backing_file");
      if (!l.backing_file.empty()) l.identity = "file:" + l.backing_file;
    } else {
      LunPath p = path_of(name);
      l.transport = p.transport;
      if (!p.scsi_address.empty() || p.transport == "fc" || p.transport == "iscsi")
        l.paths.push_back(std::move(p));
      if (wwid.empty() && l.transport == "virtio" && !l.serial.empty())
        l.identity = "virtio-" + l.serial;
    }
    if (!wwid.empty()) l.identity = lower(wwid);
    return l;
  }
};

bool skipped(const std::string& name) {
  return name.starts_with("ram") || name.starts_with("zram") || name.starts_with("sr") ||
         name.starts_with("fd");
}

}  // namespace

std::string Lun::os_use() const {
  if (!holder_map.empty()) return fmt::format("path of multipath map {}", holder_map);
  if (!holders.empty()) return fmt::format("held by {}", fmt::join(holders, ", "));
  if (!mounts.empty()) return fmt::format("mounted ({})", fmt::join(mounts, ", "));
  if (!partitions.empty()) return fmt::format("has partitions ({})", fmt::join(partitions, ", "));
  return {};
}

Result<std::vector<Lun>> discover_luns(const LunScanOptions& options) {
  Scanner s{options, fs::path(options.sysfs_root) / "block", {}, {}};
  std::error_code ec;
  if (!fs::is_directory(s.block_dir, ec))
    return make_error(Errc::kIo, fmt::format("cannot read {}: not a sysfs tree (is /sys mounted?)",
                                             s.block_dir.string()));
  s.load_mounts();
  s.load_by_id();
  std::vector<Lun> luns;
  for (const std::string& name : entries(s.block_dir)) {
    if (skipped(name)) continue;
    Lun l = s.lun_of(name);
    if (l.size_bytes == 0) continue;
    luns.push_back(std::move(l));
  }
  // Paths of multipath maps name their map, so listings send the admin to the map.
  for (const Lun& map : luns) {
    if (map.transport != "multipath") continue;
    for (Lun& l : luns)
      for (const LunPath& p : map.paths)
        if (l.name == p.name) l.holder_map = map.dm_name.empty() ? map.name : map.dm_name;
  }
  std::stable_sort(luns.begin(), luns.end(), [](const Lun& a, const Lun& b) {
    auto key = [](const Lun& l) {
      return std::make_tuple(l.is_multipath_path(), l.identity.empty(), l.identity, l.name);
    };
    return key(a) < key(b);
  });
  return luns;
}

const Lun* find_lun(const std::vector<Lun>& luns, std::string_view key_in) {
  std::string key = lower(std::string(key_in));
  auto bare = [](std::string s) {
    if (s.starts_with("0x")) s = s.substr(2);
    if (s.starts_with("wwn-0x")) s = s.substr(6);
    if (s.starts_with("naa.") || s.starts_with("eui.")) s = s.substr(4);
    return s;
  };
  const Lun* hit = nullptr;
  for (const Lun& l : luns) {
    // WWNs compare case-insensitively; a backing file's path as it is.
    const std::string id = lower(l.identity);
    bool match = !l.identity.empty() &&
                 (key_in == l.identity ||
                  (!l.identity.starts_with("file:") && (key == id || bare(key) == bare(id))));
    match = match || key == l.name || key == lower(l.device_path) ||
            (!l.dm_name.empty() && key == lower(l.dm_name));
    for (const std::string& link : l.by_id)
      match = match || key == lower(link) || key_in.ends_with("/disk/by-id/" + link);
    if (match) {
      hit = &l;
      break;
    }
  }
  if (hit != nullptr && hit->is_multipath_path())
    for (const Lun& l : luns)
      if (l.dm_name == hit->holder_map || l.name == hit->holder_map) return &l;
  return hit;
}

}  // namespace rsio::volmgr
