// A frontend turns an open RSIO volume into a kernel block device: ublk where the kernel
// has it, FUSE + loop devices elsewhere.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "rsio/client.h"

namespace rsio::rsclient {

// A volume as frontends see it. The synchronous calls (FUSE) are thread-safe and return 0 or
// -errno; ublk submits to the client library directly.
class BlockBackend {
 public:
  virtual ~BlockBackend() = default;
  virtual uint64_t size_bytes() const = 0;
  // The volume's logical block size (512 or 4096): the device's, and the unit of requests.
  virtual uint32_t block_size_bytes() const = 0;
  virtual bool read_only() const = 0;
  virtual int read(void* buf, uint64_t length, uint64_t offset) = 0;
  virtual int write(const void* buf, uint64_t length, uint64_t offset) = 0;
  virtual int flush() = 0;
  virtual int discard(uint64_t length, uint64_t offset) = 0;
  // The session and volume behind it, for asynchronous frontends.
  virtual client::Client& client() = 0;
  virtual uint32_t volume_id() const = 0;
};

class Frontend {
 public:
  virtual ~Frontend() = default;
  virtual std::string kind() const = 0;  // "ublk", "fuse"
  // Makes `name` a block device; returns the kernel's device path (/dev/ublkbN, /dev/loopN).
  // `resume` is what handle() said before a restart of rsclientd: a frontend whose devices
  // survive the daemon (ublk with user recovery) takes the existing device over.
  virtual Result<std::string> attach(const std::string& name, std::shared_ptr<BlockBackend> backend,
                                     const std::string& resume = "") = 0;
  // What to persist so that attach() can take the device over after a restart ("" if nothing).
  virtual std::string handle(const std::string& name) const {
    (void)name;
    return "";
  }
  // rsclientd stops without detaching: devices that can outlive it are left for the next
  // start (their requests wait in the kernel); the others are detached. Returns the names of
  // the devices left.
  virtual std::vector<std::string> release_all() = 0;
  // Removes the block device. Without `force`, refuses (kInUse) while it is open exclusively
  // (mounted, held by another driver).
  virtual Status detach(const std::string& name, bool force) = 0;
  // The volume's size changed on the server: the device follows where the kernel allows.
  virtual Status resized(const std::string& name) = 0;
  virtual Result<dev_t> device_number(const std::string& name) const = 0;
};

// True when `dev` is open exclusively by someone (a mounted file system, a device mapper).
bool block_device_busy(const std::string& dev);

}  // namespace rsio::rsclient
