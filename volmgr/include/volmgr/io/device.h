// Devices under the I/O engine: one per physical volume. A Device executes DevOps (byte
// ranges on the PV) asynchronously and reports each result on the loop thread.
//
// Thread model: all members run on the owning Loop's thread.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "block/loop.h"
#include "block/target.h"

namespace rsio::volmgr::io {

class Device;

// The data path's loop and request vocabulary (block/), under the engine's names.
using block::Completion;
using block::Loop;
using block::Op;
using block::op_name;

// One operation on one device. The submitter owns it (and the iovecs) until `done` runs.
// Result: bytes transferred (read/write), 0 (flush, discard, write-zeroes) or -errno.
struct DevOp {
  Completion completion;  // internal to the device
  Op op = Op::kRead;
  bool fua = false;  // write: durable before completion
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  const iovec* iov = nullptr;
  int iov_count = 0;
  void (*done)(DevOp* op, int result) = nullptr;
  void* ctx = nullptr;
  Device* device = nullptr;  // the device running it (set by submit())
  // Internal to the device.
  void* device_state = nullptr;
  uint64_t done_bytes = 0;   // progress of a transfer the kernel completed in parts
  uint32_t retries = 0;      // transient errors (EAGAIN, EINTR) retried so far
  bool used_direct = false;  // the last attempt went through the O_DIRECT descriptor
  bool no_direct = false;    // O_DIRECT refused this transfer: use the buffered one
};

class Device {
 public:
  virtual ~Device() = default;
  // Starts `op`; `op->done` runs later on the loop thread (never inside submit()).
  virtual void submit(DevOp* op) = 0;
  virtual uint64_t size_bytes() const = 0;
  virtual const std::string& name() const = 0;
};

enum class DirectIo { kAuto, kOn, kOff };

struct UringDeviceOptions {
  // kAuto: O_DIRECT for requests aligned to the device's logical block size where the file
  // system supports it, buffered otherwise. kOn: fail to open if O_DIRECT is unsupported.
  DirectIo direct_io = DirectIo::kAuto;
  bool read_only = false;
};

// A regular file or block device driven through the loop's io_uring. Discard and
// write-zeroes use fallocate (PUNCH_HOLE / ZERO_RANGE), which block devices map to
// discard and zero-out; where that is unsupported write-zeroes writes zeroes.
// Errors of open(): kNotFound, kPermissionDenied, kInvalidArgument (O_DIRECT requested but
// unsupported), kIo.
Result<std::unique_ptr<Device>> open_uring_device(Loop& loop, const std::string& path,
                                                  const UringDeviceOptions& options);

}  // namespace rsio::volmgr::io
