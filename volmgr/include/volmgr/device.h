// OS access for physical volumes: probing, sparse file creation and label I/O.
// All functions are synchronous and may block; call them from the metadata thread only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"
#include "volmgr/label.h"
#include "volmgr/model.h"

namespace rsio::volmgr {

// Owns a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct DeviceProbe {
  std::string canonical_path;  // symlinks resolved
  PvKind kind = PvKind::kFile;
  uint64_t size_bytes = 0;
  dev_t st_dev = 0;
  ino_t st_ino = 0;
  dev_t st_rdev = 0;
};

// True when two probes name the same file or the same block device.
bool same_device(const DeviceProbe& a, const DeviceProbe& b);

// Resolves and stats `path`. Errors: kNotFound, kInvalidArgument (neither a regular file nor
// a block device), kPermissionDenied, kIo.
Result<DeviceProbe> probe_device(const std::string& path);

// Creates a sparse regular file of `size_bytes`. Errors: kAlreadyExists, kNotFound (missing
// directory), kPermissionDenied, kNoSpace, kIo.
Status create_sparse_file(const std::string& path, uint64_t size_bytes);

// Opens a PV read-write. Block devices are opened with O_EXCL when `exclusive`, which the
// kernel refuses (kInUse) while the device is mounted or held by another driver.
Result<UniqueFd> open_device(const std::string& path, bool exclusive);

// Reads buf.size() bytes at `offset`; what lies past the end of a short file reads as
// zeroes. Errors: kIo (`what` names the read).
Status read_at(int fd, std::span<std::byte> buf, uint64_t offset, std::string_view what);
// Writes all of `buf` at `offset` (not synced). Errors: kIo.
Status write_at(int fd, std::span<const std::byte> buf, uint64_t offset, std::string_view what);

// Reads and decodes the label at offset 0. nullopt: no RSIO label.
Result<std::optional<PvLabel>> read_label(int fd);

// Names a well-known on-disk signature in the first 68 KiB (file systems, partition tables,
// LVM, MD RAID, LUKS, bcache, swap), or nullopt when none is found. Used to refuse devices
// that hold data.
Result<std::optional<std::string>> detect_signature(int fd);

// Writes zeroes over the label block and syncs, so the device is no longer seen as a PV.
Status wipe_label(int fd);

// Writes the label at offset 0 and makes it durable (fdatasync).
Status write_label(int fd, const PvLabel& label);

}  // namespace rsio::volmgr
