// A blocking RSIO connection for conformance tests: sends exactly the frames a test builds
// (well-formed or not) and reads replies one by one, so every rule of docs/wire-protocol.md
// can be exercised without the client library's own checks in the way.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "rsio/auth.h"
#include "rsio/wire.h"

namespace rsio::test {

class RawConn {
 public:
  RawConn() = default;
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;
  RawConn(RawConn&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }

  bool connect(uint16_t port, const char* host = "127.0.0.1") {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, host, &a.sin_addr);
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }

  bool send_all(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    while (n > 0) {
      const ssize_t k = ::send(fd_, c, n, MSG_NOSIGNAL);
      if (k <= 0) return false;
      c += k;
      n -= static_cast<size_t>(k);
    }
    return true;
  }

  bool send_request(const wire::RequestHeader& h, const std::vector<uint8_t>& payload = {}) {
    std::vector<uint8_t> f(wire::kRequestHeaderBytes);
    wire::encode(h, f.data());
    f.insert(f.end(), payload.begin(), payload.end());
    return send_all(f.data(), f.size());
  }

  // Reads exactly n bytes; false on EOF, error or timeout.
  bool recv_all(void* p, size_t n, int timeout_ms = 10000) {
    auto* c = static_cast<uint8_t*>(p);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (n > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            until - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return false;
      pollfd pf{fd_, POLLIN, 0};
      if (::poll(&pf, 1, static_cast<int>(left)) <= 0) return false;
      const ssize_t k = ::recv(fd_, c, n, 0);
      if (k <= 0) return false;
      c += k;
      n -= static_cast<size_t>(k);
    }
    return true;
  }

  struct Reply {
    wire::ReplyHeader h;
    std::vector<uint8_t> payload;
    std::vector<uint8_t> frame;  // header and payload as received
  };
  // The next reply that is not a notification; nullopt when the connection closed.
  std::optional<Reply> recv_reply(int timeout_ms = 10000) {
    for (;;) {
      Reply r;
      r.frame.resize(wire::kReplyHeaderBytes);
      if (!recv_all(r.frame.data(), r.frame.size(), timeout_ms)) return std::nullopt;
      r.h = wire::decode_reply_header(r.frame.data());
      r.payload.resize(r.h.payload_len);
      if (r.h.payload_len > 0 && !recv_all(r.payload.data(), r.payload.size(), timeout_ms))
        return std::nullopt;
      r.frame.insert(r.frame.end(), r.payload.begin(), r.payload.end());
      if (r.h.opcode == static_cast<uint8_t>(wire::Opcode::kNotify)) {
        notifications.push_back(r.h.status);
        continue;
      }
      return r;
    }
  }

  // True when the server closed the connection (EOF or reset) within the timeout.
  bool closed_by_server(int timeout_ms = 10000) {
    uint8_t buf[4096];
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            until - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return false;
      pollfd pf{fd_, POLLIN, 0};
      if (::poll(&pf, 1, static_cast<int>(left)) <= 0) return false;
      const ssize_t k = ::recv(fd_, buf, sizeof(buf), 0);
      if (k <= 0) return true;
    }
  }

  struct Handshake {
    std::vector<uint8_t> hello_frame, hello_reply, auth_frame;
    auth::Digest transcript{};
    std::optional<wire::AuthOk> ok;
    uint32_t status = 0;
  };
  // Runs the handshake with `key`; `ok` is set when the server accepted it.
  Handshake handshake(const std::string& node, const std::string& key, uint64_t join = 0,
                      uint16_t version_max = wire::kProtocolVersion) {
    Handshake hs;
    wire::Hello hello;
    hello.version_max = version_max;
    hello.node_name = node;
    hello.platform = "test";
    hello.mode = join != 0 ? 1 : 0;
    hello.session_id = join;
    auth::random_bytes(hello.client_nonce);
    std::vector<uint8_t> payload;
    encode_payload(hello, payload);
    wire::RequestHeader h;
    h.opcode = static_cast<uint8_t>(wire::Opcode::kHello);
    h.tag = 1;
    h.payload_len = static_cast<uint32_t>(payload.size());
    hs.hello_frame.resize(wire::kRequestHeaderBytes);
    wire::encode(h, hs.hello_frame.data());
    hs.hello_frame.insert(hs.hello_frame.end(), payload.begin(), payload.end());
    if (!send_all(hs.hello_frame.data(), hs.hello_frame.size())) return hs;
    auto r = recv_reply();
    if (!r) return hs;
    hs.hello_reply = r->frame;
    auth::Transcript t;
    t.add(hs.hello_frame);
    t.add(hs.hello_reply);
    hs.transcript = t.finish();
    const auth::Digest proof = auth::client_proof(key, hs.transcript);
    h = {};
    h.opcode = static_cast<uint8_t>(wire::Opcode::kAuth);
    h.tag = 2;
    h.payload_len = wire::kProofBytes;
    hs.auth_frame.resize(wire::kRequestHeaderBytes);
    wire::encode(h, hs.auth_frame.data());
    hs.auth_frame.insert(hs.auth_frame.end(), proof.begin(), proof.end());
    if (!send_all(hs.auth_frame.data(), hs.auth_frame.size())) return hs;
    r = recv_reply();
    if (!r) return hs;
    hs.status = r->h.status;
    if (r->h.status == 0) hs.ok = wire::decode_auth_ok(r->payload);
    return hs;
  }

  // OPEN on an authenticated connection; returns the reply.
  std::optional<Reply> open(const std::string& volume, bool read_only, uint64_t tag) {
    std::vector<uint8_t> payload;
    encode_payload(wire::OpenRequest{read_only, volume}, payload);
    wire::RequestHeader h;
    h.opcode = static_cast<uint8_t>(wire::Opcode::kOpen);
    h.tag = tag;
    h.payload_len = static_cast<uint32_t>(payload.size());
    if (!send_request(h, payload)) return std::nullopt;
    return recv_reply();
  }

  int fd() const { return fd_; }
  std::vector<uint32_t> notifications;

 private:
  int fd_ = -1;
};

}  // namespace rsio::test
