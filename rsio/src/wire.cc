#include "rsio/wire.h"

#include <cerrno>

namespace rsio::wire {

namespace {

void put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

std::string_view opcode_name(uint8_t op) {
  switch (static_cast<Opcode>(op)) {
    case Opcode::kHello:
      return "HELLO";
    case Opcode::kAuth:
      return "AUTH";
    case Opcode::kList:
      return "LIST";
    case Opcode::kOpen:
      return "OPEN";
    case Opcode::kClose:
      return "CLOSE";
    case Opcode::kRead:
      return "READ";
    case Opcode::kWrite:
      return "WRITE";
    case Opcode::kFlush:
      return "FLUSH";
    case Opcode::kDiscard:
      return "DISCARD";
    case Opcode::kWriteZeroes:
      return "WRITE_ZEROES";
    case Opcode::kKeepalive:
      return "KEEPALIVE";
    case Opcode::kFence:
      return "FENCE";
    case Opcode::kNotify:
      return "NOTIFY";
  }
  return "UNKNOWN";
}

bool is_io_opcode(uint8_t op) {
  return op >= static_cast<uint8_t>(Opcode::kRead) &&
         op <= static_cast<uint8_t>(Opcode::kWriteZeroes);
}

bool is_write_class(uint8_t op) {
  return op == static_cast<uint8_t>(Opcode::kWrite) ||
         op == static_cast<uint8_t>(Opcode::kDiscard) ||
         op == static_cast<uint8_t>(Opcode::kWriteZeroes);
}

bool is_known_request(uint8_t op) {
  switch (static_cast<Opcode>(op)) {
    case Opcode::kHello:
    case Opcode::kAuth:
    case Opcode::kList:
    case Opcode::kOpen:
    case Opcode::kClose:
    case Opcode::kRead:
    case Opcode::kWrite:
    case Opcode::kFlush:
    case Opcode::kDiscard:
    case Opcode::kWriteZeroes:
    case Opcode::kKeepalive:
    case Opcode::kFence:
      return true;
    case Opcode::kNotify:
      return false;
  }
  return false;
}

std::string_view status_name(uint32_t s) {
  switch (static_cast<StatusCode>(s)) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalid:
      return "INVALID";
    case StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case StatusCode::kReadOnly:
      return "READ_ONLY";
    case StatusCode::kBadHandle:
      return "BAD_HANDLE";
    case StatusCode::kIoError:
      return "IO_ERROR";
    case StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case StatusCode::kNotFound:
      return "NOT_FOUND";
    case StatusCode::kAuthFailed:
      return "AUTH_FAILED";
    case StatusCode::kVersion:
      return "VERSION";
    case StatusCode::kNoSession:
      return "NO_SESSION";
    case StatusCode::kRevoked:
      return "REVOKED";
    case StatusCode::kShuttingDown:
      return "SHUTTING_DOWN";
    case StatusCode::kBusy:
      return "BUSY";
  }
  return "UNKNOWN";
}

int status_errno(StatusCode s) {
  switch (s) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kOutOfRange:
      return ENOSPC;
    case StatusCode::kReadOnly:
      return EROFS;
    case StatusCode::kInvalid:
      return EINVAL;
    case StatusCode::kRevoked:
      return EACCES;
    default:
      return EIO;
  }
}

void encode(const RequestHeader& h, uint8_t* out) {
  out[0] = h.opcode;
  out[1] = h.flags;
  put16(out + 2, h.reserved);
  put32(out + 4, h.handle);
  put64(out + 8, h.tag);
  put64(out + 16, h.offset);
  put32(out + 24, h.length);
  put32(out + 28, h.payload_len);
}

void encode(const ReplyHeader& h, uint8_t* out) {
  out[0] = h.opcode;
  out[1] = h.flags;
  put16(out + 2, h.reserved);
  put32(out + 4, h.status);
  put64(out + 8, h.tag);
  put32(out + 16, h.payload_len);
  put32(out + 20, h.reserved2);
}

RequestHeader decode_request_header(const uint8_t* in) {
  RequestHeader h;
  h.opcode = in[0];
  h.flags = in[1];
  h.reserved = get16(in + 2);
  h.handle = get32(in + 4);
  h.tag = get64(in + 8);
  h.offset = get64(in + 16);
  h.length = get32(in + 24);
  h.payload_len = get32(in + 28);
  return h;
}

ReplyHeader decode_reply_header(const uint8_t* in) {
  ReplyHeader h;
  h.opcode = in[0];
  h.flags = in[1];
  h.reserved = get16(in + 2);
  h.status = get32(in + 4);
  h.tag = get64(in + 8);
  h.payload_len = get32(in + 16);
  h.reserved2 = get32(in + 20);
  return h;
}

uint32_t max_request_payload(uint8_t opcode, bool authenticated) {
  if (!authenticated) return kMaxHandshakePayload;
  if (opcode == static_cast<uint8_t>(Opcode::kWrite)) return kMaxIo;
  return kMaxControlPayload;
}

void Writer::u16(uint16_t v) {
  uint8_t b[2];
  put16(b, v);
  bytes(b, 2);
}
void Writer::u32(uint32_t v) {
  uint8_t b[4];
  put32(b, v);
  bytes(b, 4);
}
void Writer::u64(uint64_t v) {
  uint8_t b[8];
  put64(b, v);
  bytes(b, 8);
}
void Writer::bytes(const void* p, size_t n) {
  const auto* c = static_cast<const uint8_t*>(p);
  out_.insert(out_.end(), c, c + n);
}

bool Reader::take(size_t n) {
  if (!ok_ || in_.size() - pos_ < n) {
    ok_ = false;
    return false;
  }
  return true;
}
uint8_t Reader::u8() {
  if (!take(1)) return 0;
  return in_[pos_++];
}
uint16_t Reader::u16() {
  if (!take(2)) return 0;
  const uint16_t v = get16(in_.data() + pos_);
  pos_ += 2;
  return v;
}
uint32_t Reader::u32() {
  if (!take(4)) return 0;
  const uint32_t v = get32(in_.data() + pos_);
  pos_ += 4;
  return v;
}
uint64_t Reader::u64() {
  if (!take(8)) return 0;
  const uint64_t v = get64(in_.data() + pos_);
  pos_ += 8;
  return v;
}
std::span<const uint8_t> Reader::bytes(size_t n) {
  if (!take(n)) return {};
  auto s = in_.subspan(pos_, n);
  pos_ += n;
  return s;
}
std::string_view Reader::str(size_t n) {
  auto s = bytes(n);
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

namespace {

bool printable(std::string_view s) {
  for (char c : s)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

}  // namespace

void encode_payload(const Hello& m, std::vector<uint8_t>& out) {
  Writer w(out);
  w.u16(m.version_min);
  w.u16(m.version_max);
  w.u16(m.mode);
  w.u16(static_cast<uint16_t>(m.node_name.size()));
  w.bytes(m.client_nonce.data(), m.client_nonce.size());
  w.u64(m.session_id);
  w.u16(static_cast<uint16_t>(m.platform.size()));
  w.str(m.node_name);
  w.str(m.platform);
}

std::optional<Hello> decode_hello(std::span<const uint8_t> payload) {
  Reader r(payload);
  Hello m;
  m.version_min = r.u16();
  m.version_max = r.u16();
  m.mode = r.u16();
  const uint16_t name_len = r.u16();
  auto nonce = r.bytes(kNonceBytes);
  m.session_id = r.u64();
  const uint16_t platform_len = r.u16();
  if (!r.ok() || name_len == 0 || name_len > kNodeNameMax || platform_len > kPlatformMax ||
      m.mode > 1 || m.version_min > m.version_max)
    return std::nullopt;
  std::memcpy(m.client_nonce.data(), nonce.data(), kNonceBytes);
  m.node_name = std::string(r.str(name_len));
  m.platform = std::string(r.str(platform_len));
  if (!r.done() || !printable(m.node_name) || !printable(m.platform)) return std::nullopt;
  return m;
}

bool instance_known(const InstanceId& id) {
  for (uint8_t b : id)
    if (b != 0) return true;
  return false;
}

std::string instance_hex(const InstanceId& id) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * id.size());
  for (uint8_t b : id) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

std::optional<InstanceId> parse_instance_hex(std::string_view hex) {
  InstanceId id{};
  if (hex.size() != 2 * id.size()) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < id.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    id[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return id;
}

void encode_payload(const HelloReply& m, std::vector<uint8_t>& out) {
  Writer w(out);
  w.u16(m.version);
  w.u16(0);
  w.u32(0);
  w.bytes(m.server_nonce.data(), m.server_nonce.size());
  if (m.version >= kVersionInstance) w.bytes(m.instance.data(), m.instance.size());
}

std::optional<HelloReply> decode_hello_reply(std::span<const uint8_t> payload) {
  Reader r(payload);
  HelloReply m;
  m.version = r.u16();
  r.u16();
  r.u32();
  auto nonce = r.bytes(kNonceBytes);
  std::span<const uint8_t> instance;
  if (m.version >= kVersionInstance) instance = r.bytes(kInstanceBytes);
  if (!r.done() || m.version < kProtocolVersionMin) return std::nullopt;
  std::memcpy(m.server_nonce.data(), nonce.data(), kNonceBytes);
  if (!instance.empty()) std::memcpy(m.instance.data(), instance.data(), kInstanceBytes);
  return m;
}

void encode_payload(const AuthOk& m, std::vector<uint8_t>& out) {
  Writer w(out);
  w.bytes(m.server_proof.data(), m.server_proof.size());
  w.u64(m.session_id);
  w.u32(m.path_id);
  w.u32(m.max_io);
  w.u32(m.max_in_flight);
  w.u32(m.heartbeat_ms);
  w.u32(0);
}

std::optional<AuthOk> decode_auth_ok(std::span<const uint8_t> payload) {
  Reader r(payload);
  AuthOk m;
  auto proof = r.bytes(kProofBytes);
  m.session_id = r.u64();
  m.path_id = r.u32();
  m.max_io = r.u32();
  m.max_in_flight = r.u32();
  m.heartbeat_ms = r.u32();
  r.u32();
  if (!r.done() || m.max_io == 0 || m.max_in_flight == 0 || m.heartbeat_ms == 0)
    return std::nullopt;
  std::memcpy(m.server_proof.data(), proof.data(), kProofBytes);
  return m;
}

void encode_list(const std::vector<VolumeEntry>& vols, std::vector<uint8_t>& out) {
  Writer w(out);
  w.u32(static_cast<uint32_t>(vols.size()));
  for (const auto& v : vols) {
    w.u64(v.size_bytes);
    w.u32(v.block_size);
    w.u16(v.read_only ? 1 : 0);
    w.u16(static_cast<uint16_t>(v.name.size()));
    w.str(v.name);
  }
}

std::optional<std::vector<VolumeEntry>> decode_list(std::span<const uint8_t> payload) {
  Reader r(payload);
  const uint32_t count = r.u32();
  // Each entry takes at least 16 bytes: a count the payload cannot hold is rejected before
  // anything is reserved.
  if (!r.ok() || count > r.remaining() / 16) return std::nullopt;
  std::vector<VolumeEntry> vols;
  vols.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    VolumeEntry v;
    v.size_bytes = r.u64();
    v.block_size = r.u32();
    v.read_only = (r.u16() & 1) != 0;
    const uint16_t len = r.u16();
    v.name = std::string(r.str(len));
    if (!r.ok()) return std::nullopt;
    vols.push_back(std::move(v));
  }
  if (!r.done()) return std::nullopt;
  return vols;
}

void encode_payload(const OpenRequest& m, std::vector<uint8_t>& out) {
  Writer w(out);
  w.u16(m.read_only ? kOpenReadOnly : 0);
  w.u16(static_cast<uint16_t>(m.name.size()));
  w.str(m.name);
}

std::optional<OpenRequest> decode_open(std::span<const uint8_t> payload) {
  Reader r(payload);
  OpenRequest m;
  const uint16_t flags = r.u16();
  const uint16_t len = r.u16();
  m.name = std::string(r.str(len));
  if (!r.done() || (flags & ~kOpenReadOnly) != 0 || len == 0) return std::nullopt;
  m.read_only = (flags & kOpenReadOnly) != 0;
  return m;
}

void encode_payload(const OpenReply& m, std::vector<uint8_t>& out) {
  Writer w(out);
  w.u32(m.handle);
  w.u32(m.block_size);
  w.u64(m.size_bytes);
  w.u32(m.flags);
  w.u32(0);
}

std::optional<OpenReply> decode_open_reply(std::span<const uint8_t> payload) {
  Reader r(payload);
  OpenReply m;
  m.handle = r.u32();
  m.block_size = r.u32();
  m.size_bytes = r.u64();
  m.flags = r.u32();
  r.u32();
  if (!r.done() || m.block_size == 0 || (m.block_size & (m.block_size - 1)) != 0)
    return std::nullopt;
  return m;
}

void encode_notify_payload(const Notification& n, uint8_t* out) {
  put32(out, n.handle);
  put32(out + 4, 0);
  put64(out + 8, n.value);
}

std::optional<Notification> decode_notify(uint32_t event, std::span<const uint8_t> payload) {
  if (payload.size() != kNotifyPayloadBytes) return std::nullopt;
  Notification n;
  n.event = event;
  n.handle = get32(payload.data());
  n.value = get64(payload.data() + 8);
  return n;
}

StatusCode validate_io(const RequestHeader& h, uint64_t volume_size, uint32_t block_size,
                       bool read_only) {
  if (!is_io_opcode(h.opcode) || h.reserved != 0) return StatusCode::kInvalid;
  const bool fua_ok = h.opcode == static_cast<uint8_t>(Opcode::kWrite) ||
                      h.opcode == static_cast<uint8_t>(Opcode::kWriteZeroes);
  if ((h.flags & ~kFlagFua) != 0 || ((h.flags & kFlagFua) != 0 && !fua_ok))
    return StatusCode::kInvalid;
  if (read_only && is_write_class(h.opcode)) return StatusCode::kReadOnly;
  if (h.opcode == static_cast<uint8_t>(Opcode::kFlush)) {
    if (h.offset != 0 || h.length != 0 || h.payload_len != 0) return StatusCode::kInvalid;
    return StatusCode::kOk;
  }
  if (h.length == 0 || h.length > kMaxIo) return StatusCode::kInvalid;
  if (h.offset % block_size != 0 || h.length % block_size != 0) return StatusCode::kInvalid;
  if (h.offset > UINT64_MAX - h.length || h.offset + h.length > volume_size)
    return StatusCode::kOutOfRange;
  const uint32_t want_payload = h.opcode == static_cast<uint8_t>(Opcode::kWrite) ? h.length : 0;
  if (h.payload_len != want_payload) return StatusCode::kInvalid;
  return StatusCode::kOk;
}

}  // namespace rsio::wire
