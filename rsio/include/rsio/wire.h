// The RSIO wire codec: frame headers and message payloads of docs/wire-protocol.md.
//
// Pure functions over byte spans: no sockets, no allocation on the I/O path (headers encode
// into caller-provided arrays; decoders return views into the input). Every decoder checks
// sizes before it reads and fails with a WireError instead of trusting a length field.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rsio::wire {

// Version 2 adds the server instance identity to the HELLO reply (§3, §5.5). A server
// speaks every version from kProtocolVersionMin to kProtocolVersion.
inline constexpr uint16_t kProtocolVersion = 2;
inline constexpr uint16_t kProtocolVersionMin = 1;
inline constexpr uint16_t kVersionInstance = 2;  // first version with the instance identity
inline constexpr uint16_t kDefaultPort = 5000;
inline constexpr size_t kRequestHeaderBytes = 32;
inline constexpr size_t kReplyHeaderBytes = 24;
inline constexpr uint32_t kMaxIo = 1U << 20;
inline constexpr uint32_t kMaxControlPayload = 4096;
inline constexpr uint32_t kMaxHandshakePayload = 512;
inline constexpr uint32_t kMaxReplyPayload = 16U << 20;
inline constexpr uint32_t kMaxInFlightPerPath = 256;
inline constexpr uint32_t kHeartbeatMs = 1000;
inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kProofBytes = 32;
inline constexpr size_t kInstanceBytes = 16;
inline constexpr size_t kNodeNameMax = 64;
inline constexpr size_t kPlatformMax = 128;

enum class Opcode : uint8_t {
  kHello = 0x01,
  kAuth = 0x02,
  kList = 0x10,
  kOpen = 0x11,
  kClose = 0x12,
  kRead = 0x20,
  kWrite = 0x21,
  kFlush = 0x22,
  kDiscard = 0x23,
  kWriteZeroes = 0x24,
  kKeepalive = 0x30,
  kFence = 0x31,
  kNotify = 0x40,
};
std::string_view opcode_name(uint8_t op);
bool is_io_opcode(uint8_t op);      // READ..WRITE_ZEROES
bool is_write_class(uint8_t op);    // WRITE, DISCARD, WRITE_ZEROES
bool is_known_request(uint8_t op);  // any opcode a client may send

inline constexpr uint8_t kFlagFua = 0x01;

enum class StatusCode : uint32_t {
  kOk = 0,
  kInvalid = 1,
  kOutOfRange = 2,
  kReadOnly = 3,
  kBadHandle = 4,
  kIoError = 5,
  kUnavailable = 6,
  kNotFound = 7,
  kAuthFailed = 8,
  kVersion = 9,
  kNoSession = 10,
  kRevoked = 11,
  kShuttingDown = 12,
  kBusy = 13,
};
std::string_view status_name(uint32_t s);
// The errno a block device reports for a request that ended with `s` (0 for OK; positive).
int status_errno(StatusCode s);

enum class Event : uint32_t { kResized = 1, kRevoked = 2, kShutdown = 3, kReadOnly = 4 };

inline constexpr uint16_t kOpenReadOnly = 0x01;
inline constexpr uint32_t kVolReadOnly = 0x01, kVolFlush = 0x02, kVolFua = 0x04, kVolDiscard = 0x08,
                          kVolWriteZeroes = 0x10;

struct RequestHeader {
  uint8_t opcode = 0;
  uint8_t flags = 0;
  uint16_t reserved = 0;
  uint32_t handle = 0;
  uint64_t tag = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t payload_len = 0;
};

struct ReplyHeader {
  uint8_t opcode = 0;
  uint8_t flags = 0;
  uint16_t reserved = 0;
  uint32_t status = 0;
  uint64_t tag = 0;
  uint32_t payload_len = 0;
  uint32_t reserved2 = 0;
};

void encode(const RequestHeader& h, uint8_t* out);  // kRequestHeaderBytes
void encode(const ReplyHeader& h, uint8_t* out);    // kReplyHeaderBytes
RequestHeader decode_request_header(const uint8_t* in);
ReplyHeader decode_reply_header(const uint8_t* in);

// Largest payload a request with this opcode may carry; 0 for none. `authenticated` selects
// the limits after AUTH_OK. Unknown opcodes may carry a control-sized payload (it is skipped
// and the request answered INVALID).
uint32_t max_request_payload(uint8_t opcode, bool authenticated);

// --- payloads -----------------------------------------------------------------------------

// Little-endian writer into a growable buffer (control messages only).
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}
  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v);
  void u32(uint32_t v);
  void u64(uint64_t v);
  void bytes(const void* p, size_t n);
  void str(std::string_view s) { bytes(s.data(), s.size()); }

 private:
  std::vector<uint8_t>& out_;
};

// Bounds-checked little-endian reader; after any failed read ok() is false and every
// further read returns zeros.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}
  uint8_t u8();
  uint16_t u16();
  uint32_t u32();
  uint64_t u64();
  // A view of the next `n` bytes (empty and !ok() when fewer remain).
  std::span<const uint8_t> bytes(size_t n);
  std::string_view str(size_t n);
  bool ok() const { return ok_; }
  size_t remaining() const { return ok_ ? in_.size() - pos_ : 0; }
  bool done() const { return ok_ && pos_ == in_.size(); }

 private:
  bool take(size_t n);
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

struct Hello {
  uint16_t version_min = kProtocolVersionMin;
  uint16_t version_max = kProtocolVersion;
  uint16_t mode = 0;  // 0 new session, 1 join
  std::array<uint8_t, kNonceBytes> client_nonce{};
  uint64_t session_id = 0;
  std::string node_name;
  std::string platform;
};
void encode_payload(const Hello& m, std::vector<uint8_t>& out);
std::optional<Hello> decode_hello(std::span<const uint8_t> payload);

// The identity of one server instance: random per rsiod start (docs/wire-protocol.md §5.5).
// Writes acknowledged by one instance and not yet flushed there are lost when the instance
// is; all zero means "unknown" (a version 1 server).
using InstanceId = std::array<uint8_t, kInstanceBytes>;
bool instance_known(const InstanceId& id);
std::string instance_hex(const InstanceId& id);
std::optional<InstanceId> parse_instance_hex(std::string_view hex);

struct HelloReply {
  uint16_t version = kProtocolVersion;
  std::array<uint8_t, kNonceBytes> server_nonce{};
  InstanceId instance{};  // sent from version 2 on
};
void encode_payload(const HelloReply& m, std::vector<uint8_t>& out);
std::optional<HelloReply> decode_hello_reply(std::span<const uint8_t> payload);

struct AuthOk {
  std::array<uint8_t, kProofBytes> server_proof{};
  uint64_t session_id = 0;
  uint32_t path_id = 0;
  uint32_t max_io = kMaxIo;
  uint32_t max_in_flight = kMaxInFlightPerPath;
  uint32_t heartbeat_ms = kHeartbeatMs;
};
void encode_payload(const AuthOk& m, std::vector<uint8_t>& out);
std::optional<AuthOk> decode_auth_ok(std::span<const uint8_t> payload);

struct VolumeEntry {
  uint64_t size_bytes = 0;
  uint32_t block_size = 512;
  bool read_only = false;
  std::string name;
};
void encode_list(const std::vector<VolumeEntry>& vols, std::vector<uint8_t>& out);
std::optional<std::vector<VolumeEntry>> decode_list(std::span<const uint8_t> payload);

struct OpenRequest {
  bool read_only = false;
  std::string name;
};
void encode_payload(const OpenRequest& m, std::vector<uint8_t>& out);
std::optional<OpenRequest> decode_open(std::span<const uint8_t> payload);

struct OpenReply {
  uint32_t handle = 0;
  uint32_t block_size = 512;
  uint64_t size_bytes = 0;
  uint32_t flags = 0;
};
void encode_payload(const OpenReply& m, std::vector<uint8_t>& out);
std::optional<OpenReply> decode_open_reply(std::span<const uint8_t> payload);

struct Notification {
  uint32_t event = 0;
  uint32_t handle = 0;
  uint64_t value = 0;
};
inline constexpr size_t kNotifyPayloadBytes = 16;
void encode_notify_payload(const Notification& n, uint8_t* out);  // kNotifyPayloadBytes
std::optional<Notification> decode_notify(uint32_t event, std::span<const uint8_t> payload);

// The validation of docs/wire-protocol.md §4.2 for the header-only checks of an I/O request
// on an open handle (the session checks tag, handle and grant first).
StatusCode validate_io(const RequestHeader& h, uint64_t volume_size, uint32_t block_size,
                       bool read_only);

}  // namespace rsio::wire
