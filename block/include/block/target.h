// A block target: something that executes byte-addressed block requests on the loop thread
// and describes itself (size, logical block size, what it supports). The I/O engine's volumes
// are block targets; the export server talks to nothing else, so it does not depend on how a
// target maps its requests (a volume manager today, a replica or a remote owner later).
//
// Thread model: a target lives on one block::Loop's thread; submit() and every other member
// are called there, and completions run there.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <string_view>

namespace rsio::block {

enum class Op : uint8_t { kRead, kWrite, kFlush, kDiscard, kWriteZeroes };
std::string_view op_name(Op op);

enum class IoStatus : uint8_t {
  kOk,
  kIoError,      // a device failed and no redundant copy could serve the request
  kOutOfRange,   // offset/length beyond the target's size
  kReadOnly,     // write-class request on a read-only target
  kInvalid,      // malformed request (iov total differs from length, ...)
  kUnavailable,  // a device the request needs is missing, or every mirror leg is faulty
};
std::string_view io_status_name(IoStatus s);

// A request on a target. The caller owns it and its buffers until `done` has run.
struct IoRequest {
  Op op = Op::kRead;
  bool fua = false;  // write / write-zeroes: durable before completion
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  const iovec* iov = nullptr;  // read/write: buffers totalling length_bytes
  int iov_count = 0;
  void (*done)(IoRequest* req, IoStatus status) = nullptr;  // on the loop thread
  void* user = nullptr;
};

// What a target supports besides read and write.
enum Capability : uint32_t {
  kCapFlush = 1u << 0,        // writes may be volatile until a FLUSH: FLUSH is needed
  kCapFua = 1u << 1,          // a FUA write is durable when it completes
  kCapDiscard = 1u << 2,      // DISCARD
  kCapWriteZeroes = 1u << 3,  // WRITE_ZEROES (reads of the range return zeroes)
};

class BlockTarget {
 public:
  virtual ~BlockTarget() = default;
  // Starts `req`; `req->done` runs on the loop thread later, never inside submit(). The
  // target checks the range against its size (kOutOfRange); callers check alignment.
  virtual void submit(IoRequest* req) = 0;
  virtual uint64_t size_bytes() const = 0;
  // Requests are multiples of it: 512 or 4096.
  virtual uint32_t block_size_bytes() const = 0;
  virtual uint32_t capabilities() const = 0;  // Capability bits
};

}  // namespace rsio::block
