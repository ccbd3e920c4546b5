// A frontend turns an open RSIO volume into a kernel block device: ublk where the kernel
// has it, FUSE + loop devices elsewhere.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "rsio/client.h"

namespace rsio::rsclient {

// A volume as frontends see it. The synchronous calls (FUSE) are thread-safe and return 0 or
// -errno; ublk submits to the client library directly.
class BlockBackend {
 public:
  virtual ~BlockBackend() = default;
  virtual uint64_t size_bytes() const = 0;
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
  virtual Result<std::string> attach(const std::string& name,
                                     std::shared_ptr<BlockBackend> backend) = 0;
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
