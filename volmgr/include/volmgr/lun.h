// LUN discovery: the block devices of this machine as an admin of an FC gateway sees them,
// identified by WWN (or another stable identity), never by the /dev/sdX name the kernel
// happened to give them at this boot.
//
// Everything is read from sysfs and /dev, whose roots are parameters so that tests run on
// committed fixture trees. Nothing is opened for I/O here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace rsio::volmgr {

struct LunScanOptions {
  std::string sysfs_root = "/sys";
  std::string dev_root = "/dev";
  std::string mountinfo = "/proc/self/mountinfo";
};

// One way to reach a SCSI LUN: the sdX device of one initiator/target pair.
struct LunPath {
  std::string name;          // "sdc"
  std::string transport;     // "fc", "sas", "iscsi", ...
  std::string scsi_address;  // "5:0:0:3" (host:channel:target:lun), empty when not SCSI
  std::string host_wwpn;     // FC: the HBA port's WWPN (0x...)
  std::string target_wwpn;   // FC: the remote (array) port's WWPN
  std::string iscsi_target;  // iSCSI: the target's IQN
  std::string state;         // SCSI device state ("running", "offline", ...)
};

struct Lun {
  // Stable identity: "naa.<hex>" / "eui.<hex>" / "t10.<...>" (SCSI and NVMe WWIDs),
  // "virtio-<serial>", "file:<backing file>" (loop devices). Empty when the device offers
  // none; such a device can become a labelled PV but not a pass-through volume.
  std::string identity;
  std::string name;         // kernel name of the device to use: "dm-0", "sde", "loop3"
  std::string device_path;  // "/dev/mapper/mpatha", "/dev/sde" (under dev_root)
  std::string dm_name;      // device-mapper name ("mpatha"), empty otherwise
  uint32_t major = 0;
  uint32_t minor = 0;
  std::string transport;  // "fc", "sas", "iscsi", "virtio", "nvme", "ata", "usb", "loop",
                          // "multipath" (a dm multipath map), "dm", "unknown"
  std::string vendor, model, revision, serial;
  uint64_t size_bytes = 0;
  uint32_t logical_block_bytes = 512;
  uint32_t physical_block_bytes = 512;
  bool rotational = false;
  bool read_only = false;
  std::vector<std::string> by_id;  // names under /dev/disk/by-id that lead to the device
  std::string backing_file;        // loop devices
  // Multipath maps: the SCSI paths under the map. Other SCSI devices: their own path.
  std::vector<LunPath> paths;
  std::vector<std::string> partitions;  // "sdb1", "sdb2"
  std::vector<std::string> holders;     // kernel names of devices stacked on this one
  std::string holder_map;               // set on a path of a multipath map: the map's name
  std::vector<std::string> mounts;      // "sdb1 on /", "loop3 on /mnt"

  // A member path of a multipath map: use the map instead.
  bool is_multipath_path() const { return !holder_map.empty(); }
  // Why the device cannot be used as a LUN (empty: it is free as far as the OS knows).
  std::string os_use() const;
};

// Enumerates <sysfs_root>/block. Devices of size 0, RAM disks, zram and CD drives are left
// out. Sorted: multipath maps and whole disks by identity, then member paths. Errors: kIo
// when <sysfs_root>/block cannot be read.
Result<std::vector<Lun>> discover_luns(const LunScanOptions& options);

// Finds a LUN by identity (case-insensitive, "0x"-prefixed and bare WWN hex accepted), by
// kernel name ("sde", "dm-0"), by device path, or by a /dev/disk/by-id name. A multipath
// path named directly resolves to its map. nullptr when nothing matches.
const Lun* find_lun(const std::vector<Lun>& luns, std::string_view key);

}  // namespace rsio::volmgr
