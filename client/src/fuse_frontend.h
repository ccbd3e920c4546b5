// The FUSE + loop frontend: where ublk is missing, each attached volume is a file in a FUSE
// file system served by rsclientd (direct I/O, multi-threaded), bound to a loop device, so it
// is still a kernel block device; /dev/av<N>/<volume> is a device node of that loop device.
//
// Thread model: libfuse runs its own threads (fuse_loop_mt) and calls the BlockBackend of a
// file from any of them, concurrently; add(), remove() and set_size() may be called from any
// other thread. The map of files is guarded by a mutex; backends are shared_ptr so a request
// in progress keeps its backend alive across remove().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "frontend.h"

namespace rsio::rsclient {

class FuseFrontend final : public Frontend {
 public:
  // Mounts the FUSE file system on `mount_dir` (created if missing; a stale mount left by a
  // crashed rsclientd is detached first) and starts serving it. Errors: kUnavailable when
  // FUSE is missing (/dev/fuse), with what to install or load.
  static Result<std::unique_ptr<FuseFrontend>> start(const std::string& mount_dir);
  ~FuseFrontend();  // unmounts

  // Serves `name` backed by `backend` and binds it to a free loop device; returns the loop
  // device's path. Errors: kAlreadyExists, kIo (loop setup failed).
  std::string kind() const override { return "fuse"; }
  Result<std::string> attach(const std::string& name, std::shared_ptr<BlockBackend> backend,
                             const std::string& resume = "") override;
  // FUSE devices cannot outlive the daemon: detaches every device.
  std::vector<std::string> release_all() override;
  // Unbinds the loop device and removes the file. Without `force`, refuses (kInUse) while
  // the block device is open exclusively (mounted, in a RAID, ...).
  Status detach(const std::string& name, bool force) override;
  // The volume grew or shrank: the file and the loop device take the new size.
  Status resized(const std::string& name) override;

  // The loop device's number (major, minor) of an attached volume.
  Result<dev_t> device_number(const std::string& name) const override;

  struct Impl;

 private:
  explicit FuseFrontend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rsio::rsclient
