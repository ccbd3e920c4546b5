// Thread model: see server.h; everything here runs on the loop thread.
//
// A connection (Conn) reads into a receive buffer and decodes every complete frame in it; a
// WRITE's payload that is not yet in the buffer is received straight into the request's
// buffer. Replies queue on the connection and go out in one sendmsg per loop iteration. A
// connection is freed only when no receive or send is pending in the ring and none of its
// requests is still in the engine, so completions never see freed memory.
#include "rsio/server.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <deque>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "common/assert.h"
#include "common/ids.h"
#include "common/log.h"
#include "rsio/address.h"
#include "rsio/auth.h"

namespace rsio::server {

namespace io = block;
using wire::Opcode;
using wire::StatusCode;

namespace {

constexpr size_t kRecvBufferBytes = 256 * 1024;
constexpr size_t kMaxQueuedReplyBytes = 8U << 20;  // stop reading while more is unsent
constexpr size_t kMaxQueuedReplies = 1024;
constexpr size_t kNoPollBytes = 256 * 1024;  // unsent replies that make the loop sleep at once
constexpr size_t kMaxIovPerSend = 128;
constexpr uint32_t kShutdownGraceMs = 2000;

uint8_t op(Opcode o) { return static_cast<uint8_t>(o); }

// Request buffers by size class (4 KiB << i up to max_io), page-aligned for O_DIRECT.
class BufferPool {
 public:
  static constexpr int kClasses = 9;  // 4 KiB .. 1 MiB
  ~BufferPool() {
    for (auto& v : free_)
      for (uint8_t* p : v) std::free(p);
  }
  uint8_t* get(uint32_t len, int& cls) {
    cls = 0;
    while ((4096U << cls) < len) ++cls;
    RSIO_ASSERT(cls < kClasses);
    auto& v = free_[cls];
    if (!v.empty()) {
      uint8_t* p = v.back();
      v.pop_back();
      return p;
    }
    void* p = std::aligned_alloc(4096, 4096U << cls);
    RSIO_ASSERT(p != nullptr);
    return static_cast<uint8_t*>(p);
  }
  void put(uint8_t* p, int cls) {
    if (p == nullptr) return;
    if (free_[cls].size() < 64)
      free_[cls].push_back(p);
    else
      std::free(p);
  }

 private:
  std::array<std::vector<uint8_t*>, kClasses> free_;
};

std::string format_endpoint(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    return fmt::format("{}/{}", buf, ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return fmt::format("{}/{}", buf, ntohs(a->sin6_port));
  }
  return "?";
}

}  // namespace

Result<ListenAddress> parse_listen_address(std::string_view text) {
  RSIO_TRY(HostPort hp, split_host_port(text, "listen address"));
  ListenAddress a;
  a.host = hp.host.empty() ? "0.0.0.0" : hp.host;
  if (hp.port) a.port = *hp.port;  // 0: any free port
  sockaddr_in6 probe6{};
  in_addr probe4{};
  if (::inet_pton(AF_INET, a.host.c_str(), &probe4) != 1 &&
      ::inet_pton(AF_INET6, a.host.c_str(), &probe6.sin6_addr) != 1)
    return make_error(
        Errc::kInvalidArgument,
        fmt::format("listen address {}: {} is not a numeric IP address", text, a.host));
  return a;
}

struct Conn;
struct Session;

struct Req {
  io::IoRequest io;
  iovec iov{};
  Conn* conn = nullptr;
  wire::RequestHeader h;
  uint8_t* buf = nullptr;
  int cls = 0;
};

struct OutFrame {
  std::array<uint8_t, wire::kReplyHeaderBytes> hdr{};
  const uint8_t* data = nullptr;
  uint32_t len = 0;
  std::vector<uint8_t> owned;  // control payloads
  Req* req = nullptr;          // read data: released once sent
  size_t total() const { return hdr.size() + len; }
};

struct ConnCompletion {
  io::Completion c;
  Conn* conn = nullptr;
};

struct Handle {
  int64_t volume_id = 0;
  std::string volume;
  bool read_only = false;
  bool revoked = false;
  bool gone = false;  // the volume was deleted
};

struct Session {
  uint64_t id = 0;
  int64_t client_id = 0;
  std::string node_name, platform;
  std::string node_key;
  std::map<uint32_t, Conn*> paths;  // by path id
  uint32_t next_path = 0;
  std::map<uint32_t, Handle> handles;
  uint32_t next_handle = 0;
  std::unordered_set<uint64_t> tags;  // in flight
  uint64_t linger_generation = 0;
};

struct Conn {
  ExportServer::Impl* srv = nullptr;
  uint64_t id = 0;
  int fd = -1;
  ConnCompletion rc, sc;
  bool recv_pending = false, send_pending = false, flush_queued = false;
  bool closing = false, close_when_sent = false;
  bool eof = false;  // the peer closed the connection (not a network failure)
  bool reap_queued = false;
  enum class State { kHello, kLookup, kAuth, kReady } state = State::kHello;
  std::vector<uint8_t> rbuf;
  size_t rpos = 0, rlen = 0;
  Req* payload_req = nullptr;  // receiving a WRITE payload straight into its buffer
  size_t payload_got = 0;
  size_t skip = 0;  // payload bytes of a rejected request still to drop
  // Handshake.
  wire::Hello hello;
  std::vector<uint8_t> transcript_bytes;
  auth::Digest transcript{};
  std::optional<NodeInfo> node;
  // Authenticated.
  Session* session = nullptr;
  uint32_t path_id = 0;
  uint32_t in_flight = 0;
  uint64_t requests = 0;
  std::deque<OutFrame> out;
  size_t out_bytes = 0, out_offset = 0;
  std::vector<iovec> send_iov;
  msghdr msg{};
  int64_t accepted_ms = 0, last_rx_ms = 0;
  std::string local, remote;
  std::vector<std::pair<uint64_t, uint64_t>> fence_waiters;  // (conn id, tag)
};

struct Listener {
  int fd = -1;
  ListenAddress addr;
  io::Completion c;
  bool pending = false;
  ExportServer::Impl* impl = nullptr;
};

struct ExportServer::Impl {
  io::Loop& loop;
  ExportBackend& backend;
  ServerOptions opt;
  std::vector<std::unique_ptr<Listener>> listeners;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns;
  std::deque<uint64_t> unauth;  // accept order, may hold ids of conns already authenticated
  size_t unauth_count = 0;
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions;
  uint64_t next_conn_id = 0;
  std::vector<Conn*> to_flush;
  BufferPool pool;
  ServerStats stats;
  bool stopping = false;
  std::function<void()> shutdown_done;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  Impl(io::Loop& l, ExportBackend& b, ServerOptions o) : loop(l), backend(b), opt(std::move(o)) {}

  // --- listeners ---------------------------------------------------------------------------

  Status bind_all() {
    for (const auto& a : opt.listen) {
      sockaddr_storage ss{};
      socklen_t len = 0;
      int family = AF_INET;
      if (auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
          ::inet_pton(AF_INET, a.host.c_str(), &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(a.port);
        len = sizeof(sockaddr_in);
      } else {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        if (::inet_pton(AF_INET6, a.host.c_str(), &s6->sin6_addr) != 1)
          return make_error(Errc::kInvalidArgument, fmt::format("bad listen address {}", a.host));
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(a.port);
        family = AF_INET6;
        len = sizeof(sockaddr_in6);
      }
      int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return errno_error("socket", errno);
      const int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
      // After a crash the old process's ring may hold the listening socket for a moment
      // while the kernel tears it down: retry an address in use for a few seconds.
      int rc = -1;
      for (int attempt = 0; attempt < 100; ++attempt) {
        rc = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
        if (rc == 0 || errno != EADDRINUSE) break;
        if (attempt == 0) log::info("rsio: {}:{} is in use; waiting for it", a.host, a.port);
        ::usleep(50'000);
      }
      if (rc != 0 || ::listen(fd, 1024) != 0) {
        const int err = errno;
        ::close(fd);
        return make_error(
            err == EADDRINUSE ? Errc::kInUse : Errc::kIo,
            fmt::format("cannot listen on {}:{}: {}{}", a.host, a.port, std::strerror(err),
                        err == EADDRINUSE ? " (another rsiod or service uses it; "
                                            "choose one with --listen)"
                                          : ""));
      }
      auto l = std::make_unique<Listener>();
      l->fd = fd;
      l->addr = a;
      sockaddr_storage bound{};
      socklen_t blen = sizeof(bound);
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen) == 0)
        l->addr.port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
      l->impl = this;
      l->c.fn = [](io::Completion* c, int res) {
        auto* lst = reinterpret_cast<Listener*>(reinterpret_cast<char*>(c) - offsetof(Listener, c));
        lst->pending = false;
        lst->impl->on_accept(lst, res);
      };
      listeners.push_back(std::move(l));
    }
    for (auto& l : listeners) arm_accept(l.get());
    return {};
  }

  void arm_accept(Listener* l) {
    if (stopping || l->fd < 0) return;
    io_uring_sqe* s = loop.sqe();
    io_uring_prep_accept(s, l->fd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data(s, &l->c);
    l->pending = true;
  }

  void on_accept(Listener* l, int res) {
    if (stopping) {
      ::close(l->fd);
      l->fd = -1;
      if (res >= 0) ::close(res);
      maybe_finish_shutdown();
      return;
    }
    if (res < 0) {
      if (res != -EAGAIN && res != -EINTR && res != -ECONNABORTED)
        log::warn("rsio: accept on {}:{}: {}", l->addr.host, l->addr.port, std::strerror(-res));
      if (res == -EMFILE || res == -ENFILE) {
        loop.after(100'000'000ULL, [this, l, a = std::weak_ptr<bool>(alive)] {
          if (!a.expired()) arm_accept(l);
        });
        return;
      }
      arm_accept(l);
      return;
    }
    arm_accept(l);
    new_conn(res);
  }

  void new_conn(int fd) {
    ++stats.accepted;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const unsigned int uto = opt.tcp_user_timeout_ms;
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
    auto c = std::make_unique<Conn>();
    c->srv = this;
    c->id = ++next_conn_id;
    c->fd = fd;
    c->rc.conn = c.get();
    c->sc.conn = c.get();
    c->rc.c.fn = [](io::Completion* cc, int res) {
      Conn* conn = reinterpret_cast<ConnCompletion*>(cc)->conn;
      conn->recv_pending = false;
      conn->srv->on_recv(conn, res);
    };
    c->sc.c.fn = [](io::Completion* cc, int res) {
      Conn* conn = reinterpret_cast<ConnCompletion*>(cc)->conn;
      conn->send_pending = false;
      conn->srv->on_sent(conn, res);
    };
    c->rbuf.resize(kRecvBufferBytes);
    c->accepted_ms = c->last_rx_ms = now_ms();
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      c->local = format_endpoint(ss);
    len = sizeof(ss);
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      c->remote = format_endpoint(ss);
    Conn* conn = c.get();
    conns.emplace(conn->id, std::move(c));
    while (!unauth.empty()) {
      auto it = conns.find(unauth.front());
      if (it != conns.end() && it->second->session == nullptr && !it->second->closing) break;
      unauth.pop_front();
    }
    // Unauthenticated connections are capped; the oldest makes room for the newest, so a flood
    // cannot lock out a client that keeps trying.
    unauth.push_back(conn->id);
    ++unauth_count;
    while (unauth_count > opt.max_unauthenticated && !unauth.empty()) {
      const uint64_t oldest = unauth.front();
      unauth.pop_front();
      auto it = conns.find(oldest);
      if (it == conns.end() || it->second->state == Conn::State::kReady) continue;
      ++stats.unauth_evicted;
      --unauth_count;
      it->second->state = Conn::State::kReady;  // no longer counted as unauthenticated
      close_conn(it->second.get());
    }
    const uint64_t id = conn->id;
    loop.after(uint64_t{opt.handshake_deadline_ms} * 1'000'000ULL,
               [this, id, a = std::weak_ptr<bool>(alive)] {
                 if (a.expired()) return;
                 auto it = conns.find(id);
                 if (it != conns.end() && it->second->session == nullptr && !it->second->closing) {
                   log::info("rsio: {}: handshake deadline passed", it->second->remote);
                   close_conn(it->second.get());
                 }
               });
    arm_recv(conn);
  }

  // --- receiving ---------------------------------------------------------------------------

  bool recv_paused(const Conn* c) const {
    return c->in_flight >= wire::kMaxInFlightPerPath || c->out_bytes > kMaxQueuedReplyBytes ||
           c->out.size() > kMaxQueuedReplies || c->state == Conn::State::kLookup;
  }

  void arm_recv(Conn* c) {
    if (c->recv_pending || c->closing || c->close_when_sent) return;
    io_uring_sqe* s = nullptr;
    if (c->payload_req != nullptr) {
      s = loop.sqe();
      io_uring_prep_recv(s, c->fd, c->payload_req->buf + c->payload_got,
                         c->payload_req->h.length - c->payload_got, 0);
    } else {
      if (recv_paused(c)) return;
      if (c->rpos > 0) {
        std::memmove(c->rbuf.data(), c->rbuf.data() + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
      }
      if (c->rlen == c->rbuf.size()) return;  // full: a frame is waiting for the backend
      s = loop.sqe();
      io_uring_prep_recv(s, c->fd, c->rbuf.data() + c->rlen, c->rbuf.size() - c->rlen, 0);
    }
    io_uring_sqe_set_data(s, &c->rc.c);
    c->recv_pending = true;
  }

  void on_recv(Conn* c, int res) {
    if (c->closing) {
      maybe_destroy(c);
      return;
    }
    if (res <= 0) {
      c->eof = res == 0;
      if (res < 0 && res != -ECONNRESET && res != -EPIPE)
        log::info("rsio: {}: receive: {}", c->remote, std::strerror(-res));
      close_conn(c);
      return;
    }
    c->last_rx_ms = now_ms();
    if (c->payload_req != nullptr) {
      c->payload_got += static_cast<size_t>(res);
      if (c->payload_got == c->payload_req->h.length) {
        Req* r = c->payload_req;
        c->payload_req = nullptr;
        submit_after_payload(c, r);
      }
    } else {
      c->rlen += static_cast<size_t>(res);
    }
    parse(c);
    arm_recv(c);
  }

  void protocol_error(Conn* c, const std::string& why) {
    ++stats.protocol_errors;
    log::info("rsio: {} ({}): protocol error: {}; closing the connection", c->remote,
              c->session ? c->session->node_name : std::string("unauthenticated"), why);
    close_conn(c);
  }

  void parse(Conn* c) {
    while (!c->closing && !c->close_when_sent && c->payload_req == nullptr) {
      size_t avail = c->rlen - c->rpos;
      if (c->skip > 0) {
        const size_t n = std::min(avail, c->skip);
        c->rpos += n;
        c->skip -= n;
        if (c->skip > 0) return;
        avail = c->rlen - c->rpos;
      }
      if (c->state == Conn::State::kLookup) return;
      if (c->state == Conn::State::kReady && c->session != nullptr && recv_paused(c)) return;
      if (avail < wire::kRequestHeaderBytes) return;
      const uint8_t* p = c->rbuf.data() + c->rpos;
      const wire::RequestHeader h = wire::decode_request_header(p);
      const bool authed = c->session != nullptr;
      if (h.payload_len > wire::max_request_payload(h.opcode, authed)) {
        protocol_error(
            c, fmt::format("{} with a payload of {} bytes (limit {})", wire::opcode_name(h.opcode),
                           h.payload_len, wire::max_request_payload(h.opcode, authed)));
        return;
      }
      if (!authed) {
        if (avail < wire::kRequestHeaderBytes + h.payload_len) return;
        std::span<const uint8_t> frame(p, wire::kRequestHeaderBytes + h.payload_len);
        c->rpos += frame.size();
        handshake_frame(c, h, frame);
        continue;
      }
      ++c->requests;
      ++stats.requests;
      if (h.opcode == op(Opcode::kWrite) && h.payload_len > 0) {
        // The payload may be large: validate on the header, then take the payload.
        c->rpos += wire::kRequestHeaderBytes;
        if (!accept_tag(c, h)) return;
        Req* r = nullptr;
        const StatusCode st = check_io(c, h, r);
        if (st != StatusCode::kOk) {
          c->skip = h.payload_len;
          reply_status(c, h, st);
          continue;
        }
        const size_t have = std::min<size_t>(c->rlen - c->rpos, h.length);
        std::memcpy(r->buf, c->rbuf.data() + c->rpos, have);
        c->rpos += have;
        if (have < h.length) {
          c->payload_req = r;
          c->payload_got = have;
          return;
        }
        submit(c, r);
        continue;
      }
      if (avail < wire::kRequestHeaderBytes + h.payload_len) return;
      std::span<const uint8_t> payload(p + wire::kRequestHeaderBytes, h.payload_len);
      c->rpos += wire::kRequestHeaderBytes + h.payload_len;
      if (!accept_tag(c, h)) return;
      request(c, h, payload);
    }
  }

  bool accept_tag(Conn* c, const wire::RequestHeader& h) {
    if (!c->session->tags.insert(h.tag).second) {
      protocol_error(c, fmt::format("tag {} is already in flight", h.tag));
      return false;
    }
    return true;
  }

  // --- handshake ---------------------------------------------------------------------------

  void handshake_frame(Conn* c, const wire::RequestHeader& h, std::span<const uint8_t> frame) {
    auto payload = frame.subspan(wire::kRequestHeaderBytes);
    if (c->state == Conn::State::kHello && h.opcode == op(Opcode::kHello) && h.flags == 0 &&
        h.reserved == 0) {
      auto hello = wire::decode_hello(payload);
      if (!hello) return protocol_error(c, "malformed HELLO");
      if (hello->version_min > wire::kProtocolVersion ||
          hello->version_max < wire::kProtocolVersionMin) {
        reply_status(c, h, StatusCode::kVersion);
        c->close_when_sent = true;
        return;
      }
      c->hello = std::move(*hello);
      c->transcript_bytes.assign(frame.begin(), frame.end());
      c->state = Conn::State::kLookup;
      const uint64_t id = c->id;
      const uint64_t tag = h.tag;
      backend.lookup_node(c->hello.node_name, [this, id, tag, a = std::weak_ptr<bool>(alive)](
                                                  std::optional<NodeInfo> node) {
        if (a.expired()) return;
        auto it = conns.find(id);
        if (it == conns.end() || it->second->closing) return;
        hello_answer(it->second.get(), tag, std::move(node));
      });
      return;
    }
    if (c->state == Conn::State::kAuth && h.opcode == op(Opcode::kAuth) && h.flags == 0 &&
        h.reserved == 0) {
      auth_frame(c, h, payload);
      return;
    }
    protocol_error(c, fmt::format("{} before authentication", wire::opcode_name(h.opcode)));
  }

  void hello_answer(Conn* c, uint64_t tag, std::optional<NodeInfo> node) {
    c->node = std::move(node);
    wire::HelloReply hr;
    hr.version = std::min(c->hello.version_max, wire::kProtocolVersion);
    hr.instance = opt.instance;
    if (!auth::random_bytes(hr.server_nonce)) {
      protocol_error(c, "no randomness for the server nonce");
      return;
    }
    OutFrame f;
    encode_payload(hr, f.owned);
    wire::ReplyHeader rh;
    rh.opcode = op(Opcode::kHello);
    rh.tag = tag;
    rh.payload_len = static_cast<uint32_t>(f.owned.size());
    wire::encode(rh, f.hdr.data());
    auth::Transcript t;
    t.add(c->transcript_bytes);
    t.add(f.hdr);
    t.add(f.owned);
    c->transcript = t.finish();
    c->transcript_bytes.clear();
    c->state = Conn::State::kAuth;
    queue(c, std::move(f));
    parse(c);
    arm_recv(c);
  }

  void auth_frame(Conn* c, const wire::RequestHeader& h, std::span<const uint8_t> payload) {
    const bool ok = c->node.has_value() && payload.size() == wire::kProofBytes &&
                    auth::equal(payload, auth::client_proof(c->node->node_key, c->transcript));
    if (!ok) {
      ++stats.auth_failures;
      log::warn("rsio: {}: authentication of node {} failed", c->remote, c->hello.node_name);
      reply_status(c, h, StatusCode::kAuthFailed);
      c->close_when_sent = true;
      return;
    }
    Session* s = nullptr;
    if (c->hello.mode == 1) {
      auto it = sessions.find(c->hello.session_id);
      if (it == sessions.end() || it->second->client_id != c->node->client_id || stopping) {
        reply_status(c, h, stopping ? StatusCode::kShuttingDown : StatusCode::kNoSession);
        c->close_when_sent = true;
        return;
      }
      s = it->second.get();
    } else {
      if (stopping) {
        reply_status(c, h, StatusCode::kShuttingDown);
        c->close_when_sent = true;
        return;
      }
      auto ns = std::make_unique<Session>();
      do {
        auth::random_bytes(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&ns->id), sizeof(ns->id)));
      } while (ns->id == 0 || sessions.count(ns->id) > 0);
      ns->client_id = c->node->client_id;
      ns->node_name = c->hello.node_name;
      ns->platform = c->hello.platform;
      s = ns.get();
      sessions.emplace(ns->id, std::move(ns));
      log::info("rsio: session {:016x} of node {} from {}", s->id, s->node_name, c->remote);
    }
    s->node_key = c->node->node_key;
    ++s->linger_generation;
    c->session = s;
    c->path_id = ++s->next_path;
    s->paths[c->path_id] = c;
    c->state = Conn::State::kReady;
    --unauth_count;
    wire::AuthOk ok_msg;
    auto client_proof = auth::client_proof(c->node->node_key, c->transcript);
    ok_msg.server_proof = auth::server_proof(c->node->node_key, c->transcript, client_proof);
    ok_msg.session_id = s->id;
    ok_msg.path_id = c->path_id;
    ok_msg.heartbeat_ms = opt.heartbeat_ms;
    OutFrame f;
    encode_payload(ok_msg, f.owned);
    finish_reply(c, f, h, StatusCode::kOk);
    queue(c, std::move(f));
    log::info("rsio: node {} path {} connected: {}<->{}", s->node_name, c->path_id, c->local,
              c->remote);
  }

  // --- requests ----------------------------------------------------------------------------

  // Validates an I/O request of an authenticated connection; on success `r` holds a request
  // with a buffer for reads and writes.
  StatusCode check_io(Conn* c, const wire::RequestHeader& h, Req*& r) {
    if (!wire::is_io_opcode(h.opcode)) return StatusCode::kInvalid;
    Session* s = c->session;
    // Header-only checks first, with the session's handle after them (§4.2 order).
    if (h.reserved != 0 || (h.flags & ~wire::kFlagFua) != 0) return StatusCode::kInvalid;
    auto hit = s->handles.find(h.handle);
    if (hit == s->handles.end()) return StatusCode::kBadHandle;
    const Handle& hd = hit->second;
    if (hd.revoked) return StatusCode::kRevoked;
    if (hd.gone) return StatusCode::kUnavailable;
    block::BlockTarget* vio = backend.target(hd.volume_id);
    if (vio == nullptr) return StatusCode::kUnavailable;
    const StatusCode st =
        wire::validate_io(h, vio->size_bytes(), vio->block_size_bytes(), hd.read_only);
    if (st != StatusCode::kOk) return st;
    r = new Req();
    r->conn = c;
    r->h = h;
    if (h.opcode == op(Opcode::kRead) || h.opcode == op(Opcode::kWrite)) {
      r->buf = pool.get(h.length, r->cls);
      r->iov = {r->buf, h.length};
      r->io.iov = &r->iov;
      r->io.iov_count = 1;
    }
    r->io.user = vio;
    return StatusCode::kOk;
  }

  // A WRITE whose payload arrived over several receives: the handle may have been closed or
  // revoked, or the volume re-opened, meanwhile. check_io() ran when its header came.
  void submit_after_payload(Conn* c, Req* r) {
    Handle* hd = handle_of(c->session, r->h.handle);
    block::BlockTarget* now = hd ? backend.target(hd->volume_id) : nullptr;
    if (now == nullptr || now != r->io.user || hd->revoked) {
      const StatusCode st = hd == nullptr ? StatusCode::kBadHandle
                            : hd->revoked ? StatusCode::kRevoked
                                          : StatusCode::kUnavailable;
      const wire::RequestHeader h = r->h;
      release(r);
      reply_status(c, h, st);
      return;
    }
    submit(c, r);
  }

  // Starts a request check_io() accepted.
  void submit(Conn* c, Req* r) {
    auto* vio = static_cast<block::BlockTarget*>(r->io.user);
    switch (static_cast<Opcode>(r->h.opcode)) {
      case Opcode::kRead:
        r->io.op = io::Op::kRead;
        break;
      case Opcode::kWrite:
        r->io.op = io::Op::kWrite;
        break;
      case Opcode::kFlush:
        r->io.op = io::Op::kFlush;
        break;
      case Opcode::kDiscard:
        r->io.op = io::Op::kDiscard;
        break;
      default:
        r->io.op = io::Op::kWriteZeroes;
        break;
    }
    r->io.fua = (r->h.flags & wire::kFlagFua) != 0;
    r->io.offset_bytes = r->h.offset;
    r->io.length_bytes = r->h.length;
    r->io.done = [](io::IoRequest* ioreq, io::IoStatus status) {
      Req* rq = reinterpret_cast<Req*>(reinterpret_cast<char*>(ioreq) - offsetof(Req, io));
      rq->conn->srv->io_done(rq, status);
    };
    ++c->in_flight;
    vio->submit(&r->io);
  }

  // The OPEN reply's flags (§4.1) say what the target says it supports.
  static uint32_t open_flags(uint32_t caps) {
    return ((caps & block::kCapFlush) ? wire::kVolFlush : 0) |
           ((caps & block::kCapFua) ? wire::kVolFua : 0) |
           ((caps & block::kCapDiscard) ? wire::kVolDiscard : 0) |
           ((caps & block::kCapWriteZeroes) ? wire::kVolWriteZeroes : 0);
  }

  static StatusCode map_status(io::IoStatus s) {
    switch (s) {
      case io::IoStatus::kOk:
        return StatusCode::kOk;
      case io::IoStatus::kIoError:
        return StatusCode::kIoError;
      case io::IoStatus::kOutOfRange:
        return StatusCode::kOutOfRange;
      case io::IoStatus::kReadOnly:
        return StatusCode::kReadOnly;
      case io::IoStatus::kInvalid:
        return StatusCode::kInvalid;
      case io::IoStatus::kUnavailable:
        return StatusCode::kUnavailable;
    }
    return StatusCode::kIoError;
  }

  void io_done(Req* r, io::IoStatus status) {
    Conn* c = r->conn;
    --c->in_flight;
    if (c->closing) {
      c->session->tags.erase(r->h.tag);
      release(r);
      maybe_destroy(c);
      return;
    }
    const StatusCode st = map_status(status);
    if (st != StatusCode::kOk) ++stats.error_replies;
    OutFrame f;
    const bool data = st == StatusCode::kOk && r->h.opcode == op(Opcode::kRead);
    if (data) {
      f.data = r->buf;
      f.len = r->h.length;
      f.req = r;  // released once sent
    }
    finish_reply(c, f, r->h, st);
    if (!data) release(r);
    queue(c, std::move(f));
    if (c->payload_req == nullptr) {
      parse(c);
      arm_recv(c);
    }
  }

  void release(Req* r) {
    pool.put(r->buf, r->cls);
    delete r;
  }

  static Handle* handle_of(Session* s, uint32_t handle) {
    auto it = s->handles.find(handle);
    return it == s->handles.end() ? nullptr : &it->second;
  }

  // Control requests of an authenticated connection.
  void request(Conn* c, const wire::RequestHeader& h, std::span<const uint8_t> payload) {
    Session* s = c->session;
    if (wire::is_io_opcode(h.opcode)) {
      Req* r = nullptr;
      const StatusCode st = check_io(c, h, r);
      if (st != StatusCode::kOk) return reply_status(c, h, st);
      submit(c, r);
      return;
    }
    if (h.flags != 0 || h.reserved != 0 || !wire::is_known_request(h.opcode))
      return reply_status(c, h, StatusCode::kInvalid);
    switch (static_cast<Opcode>(h.opcode)) {
      case Opcode::kKeepalive:
        return reply_status(c, h, StatusCode::kOk);
      case Opcode::kList: {
        const uint64_t id = c->id, sid = s->id;
        backend.list_volumes(s->client_id, [this, id, sid, h, a = std::weak_ptr<bool>(alive)](
                                               std::vector<wire::VolumeEntry> vols) {
          if (a.expired()) return;
          Conn* conn = live_conn(id);
          if (conn == nullptr) return drop_tag(sid, h.tag);
          OutFrame f;
          wire::encode_list(vols, f.owned);
          finish_reply(conn, f, h, StatusCode::kOk);
          queue(conn, std::move(f));
        });
        return;
      }
      case Opcode::kOpen: {
        auto req = wire::decode_open(payload);
        if (!req) return reply_status(c, h, StatusCode::kInvalid);
        if (s->handles.size() >= 4096) return reply_status(c, h, StatusCode::kBusy);
        const uint64_t id = c->id, sid = s->id;
        backend.check_open(s->client_id, req->name, req->read_only,
                           [this, id, sid, h, a = std::weak_ptr<bool>(alive)](OpenAnswer ans) {
                             if (a.expired()) return;
                             Conn* conn = live_conn(id);
                             if (conn == nullptr) return drop_tag(sid, h.tag);
                             open_answer(conn, h, ans);
                           });
        return;
      }
      case Opcode::kClose: {
        if (s->handles.erase(h.handle) == 0) return reply_status(c, h, StatusCode::kBadHandle);
        return reply_status(c, h, StatusCode::kOk);
      }
      case Opcode::kFence: {
        wire::Reader rd(payload);
        const uint32_t path = rd.u32();
        if (!rd.done()) return reply_status(c, h, StatusCode::kInvalid);
        if (path == c->path_id) return reply_status(c, h, StatusCode::kInvalid);
        auto it = s->paths.find(path);
        if (it == s->paths.end()) return reply_status(c, h, StatusCode::kOk);
        Conn* fenced = it->second;
        fenced->fence_waiters.emplace_back(c->id, h.tag);
        log::info("rsio: node {}: path {} fenced on request of path {}", s->node_name, path,
                  c->path_id);
        close_conn(fenced);
        return;
      }
      default:
        return reply_status(c, h, StatusCode::kInvalid);
    }
  }

  // The tag of a request whose connection closed before its answer.
  void drop_tag(uint64_t session_id, uint64_t tag) {
    auto it = sessions.find(session_id);
    if (it != sessions.end()) it->second->tags.erase(tag);
  }

  Conn* live_conn(uint64_t id) {
    auto it = conns.find(id);
    if (it == conns.end()) return nullptr;
    Conn* c = it->second.get();
    if (c->closing) {
      return nullptr;
    }
    return c;
  }

  void open_answer(Conn* c, const wire::RequestHeader& h, const OpenAnswer& ans) {
    Session* s = c->session;
    if (ans.status != StatusCode::kOk) return reply_status(c, h, ans.status);
    block::BlockTarget* vio = backend.target(ans.volume_id);
    if (vio == nullptr) return reply_status(c, h, StatusCode::kUnavailable);
    uint32_t handle = 0;
    do {
      handle = ++s->next_handle;
    } while (handle == 0 || s->handles.count(handle) > 0);
    s->handles[handle] = Handle{ans.volume_id, ans.volume_name, ans.read_only, false, false};
    wire::OpenReply rep;
    rep.handle = handle;
    rep.block_size = vio->block_size_bytes();
    rep.size_bytes = vio->size_bytes();
    rep.flags = open_flags(vio->capabilities()) | (ans.read_only ? wire::kVolReadOnly : 0);
    OutFrame f;
    encode_payload(rep, f.owned);
    finish_reply(c, f, h, StatusCode::kOk);
    queue(c, std::move(f));
    log::info("rsio: node {} opened {} ({}) as handle {}", s->node_name, ans.volume_name,
              ans.read_only ? "ro" : "rw", handle);
  }

  // --- replies -----------------------------------------------------------------------------

  // Fills the frame's header for a reply to `h` carrying f.owned, or else f.data/f.len; ends
  // the tag's time in flight.
  void finish_reply(Conn* c, OutFrame& f, const wire::RequestHeader& h, StatusCode st) {
    wire::ReplyHeader rh;
    rh.opcode = h.opcode;
    rh.status = static_cast<uint32_t>(st);
    rh.tag = h.tag;
    if (!f.owned.empty()) {
      f.data = f.owned.data();
      f.len = static_cast<uint32_t>(f.owned.size());
    }
    rh.payload_len = f.len;  // read data or a control payload
    wire::encode(rh, f.hdr.data());
    if (c->session != nullptr) c->session->tags.erase(h.tag);
  }

  void reply_status(Conn* c, const wire::RequestHeader& h, StatusCode st) {
    if (st != StatusCode::kOk) ++stats.error_replies;
    OutFrame f;
    finish_reply(c, f, h, st);
    queue(c, std::move(f));
  }

  void queue(Conn* c, OutFrame&& f) {
    if (!f.owned.empty()) {
      f.data = f.owned.data();
      f.len = static_cast<uint32_t>(f.owned.size());
    }
    c->out_bytes += f.total();
    c->out.push_back(std::move(f));
    if (!c->flush_queued && !c->send_pending) {
      c->flush_queued = true;
      if (to_flush.empty())
        loop.defer([this, a = std::weak_ptr<bool>(alive)] {
          if (!a.expired()) flush_all();
        });
      to_flush.push_back(c);
    }
  }

  void flush_all() {
    std::vector<Conn*> list;
    list.swap(to_flush);
    for (Conn* c : list) {
      c->flush_queued = false;
      send_now(c);
    }
  }

  void send_now(Conn* c) {
    if (c->send_pending) return;
    if (c->closing || c->out.empty()) {
      if (c->closing)
        maybe_destroy(c);
      else if (c->close_when_sent)
        close_conn(c);
      return;
    }
    c->send_iov.clear();
    size_t skip = c->out_offset;
    // Large replies keep the socket busy for a while: no point busy-polling meanwhile.
    if (c->out_bytes >= kNoPollBytes) loop.skip_poll_once();
    for (const OutFrame& f : c->out) {
      if (c->send_iov.size() + 2 > kMaxIovPerSend) break;
      if (skip < f.hdr.size()) {
        c->send_iov.push_back({const_cast<uint8_t*>(f.hdr.data()) + skip, f.hdr.size() - skip});
        skip = 0;
      } else {
        skip -= f.hdr.size();
      }
      if (f.len > skip) c->send_iov.push_back({const_cast<uint8_t*>(f.data) + skip, f.len - skip});
      skip = 0;
    }
    c->msg = {};
    c->msg.msg_iov = c->send_iov.data();
    c->msg.msg_iovlen = c->send_iov.size();
    io_uring_sqe* s = loop.sqe();
    io_uring_prep_sendmsg(s, c->fd, &c->msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data(s, &c->sc.c);
    c->send_pending = true;
  }

  void on_sent(Conn* c, int res) {
    if (res < 0) {
      if (!c->closing) {
        if (res != -EPIPE && res != -ECONNRESET)
          log::info("rsio: {}: send: {}", c->remote, std::strerror(-res));
        close_conn(c);
      } else {
        maybe_destroy(c);
      }
      return;
    }
    size_t n = static_cast<size_t>(res) + c->out_offset;
    while (!c->out.empty() && n >= c->out.front().total()) {
      n -= c->out.front().total();
      c->out_bytes -= c->out.front().total();
      if (Req* r = c->out.front().req) release(r);
      c->out.pop_front();
    }
    c->out_offset = n;
    if (c->closing) {
      maybe_destroy(c);
      return;
    }
    if (!c->out.empty()) {
      send_now(c);
    } else if (c->close_when_sent) {
      close_conn(c);
      return;
    }
    if (c->payload_req == nullptr) {
      parse(c);
      arm_recv(c);
    }
  }

  // --- closing -----------------------------------------------------------------------------

  void close_conn(Conn* c) {
    if (c->closing) return;
    c->closing = true;
    if (c->session == nullptr && c->state != Conn::State::kReady) --unauth_count;
    ::shutdown(c->fd, SHUT_RDWR);  // completes a pending receive or send
    if (c->payload_req != nullptr) {
      c->session->tags.erase(c->payload_req->h.tag);
      release(c->payload_req);
      c->payload_req = nullptr;
    }
    maybe_destroy(c);
  }

  static bool destroyable(const Conn* c) {
    return c->closing && !c->recv_pending && !c->send_pending && !c->flush_queued &&
           c->in_flight == 0;
  }

  // Frees a closing connection once nothing refers to it any more. The freeing itself is
  // deferred: the caller may be in the middle of handling that connection.
  void maybe_destroy(Conn* c) {
    if (!destroyable(c) || c->reap_queued) return;
    c->reap_queued = true;
    loop.defer([this, id = c->id, a = std::weak_ptr<bool>(alive)] {
      if (a.expired()) return;
      auto it = conns.find(id);
      if (it == conns.end()) return;
      Conn* conn = it->second.get();
      conn->reap_queued = false;
      if (destroyable(conn)) destroy(conn);
    });
  }

  void destroy(Conn* c) {
    for (OutFrame& f : c->out)
      if (f.req != nullptr) release(f.req);
    c->out.clear();
    ::close(c->fd);
    auto waiters = std::move(c->fence_waiters);
    const bool eof = c->eof;
    Session* s = c->session;
    if (s != nullptr) {
      s->paths.erase(c->path_id);
      log::info("rsio: node {} path {} closed ({}<->{})", s->node_name, c->path_id, c->local,
                c->remote);
    }
    conns.erase(c->id);  // frees c
    if (s != nullptr) {
      for (auto [conn_id, tag] : waiters) {
        Conn* q = live_conn(conn_id);
        if (q == nullptr) {
          s->tags.erase(tag);
          continue;
        }
        wire::RequestHeader h;
        h.opcode = op(Opcode::kFence);
        h.tag = tag;
        reply_status(q, h, StatusCode::kOk);
      }
      if (s->paths.empty()) {
        // A session whose last path the client closed ends now; one that lost its paths to
        // the network waits for the client to join again.
        if (eof)
          end_session(s);
        else
          linger(s);
      }
    }
    maybe_finish_shutdown();
  }

  void end_session(Session* s) {
    log::info("rsio: session {:016x} of node {} ended", s->id, s->node_name);
    sessions.erase(s->id);
  }

  void linger(Session* s) {
    const uint64_t id = s->id, gen = ++s->linger_generation;
    if (stopping) {
      sessions.erase(id);
      return;
    }
    loop.after(uint64_t{opt.session_linger_ms} * 1'000'000ULL,
               [this, id, gen, a = std::weak_ptr<bool>(alive)] {
                 if (a.expired()) return;
                 auto it = sessions.find(id);
                 if (it == sessions.end() || it->second->linger_generation != gen ||
                     !it->second->paths.empty())
                   return;
                 log::info("rsio: session {:016x} of node {} ended (no path for {} ms)", id,
                           it->second->node_name, opt.session_linger_ms);
                 sessions.erase(it);
               });
  }

  // Closes paths that have been silent for three heartbeats. Runs every heartbeat.
  void heartbeat_tick() {
    const int64_t now = now_ms();
    std::vector<Conn*> dead;
    for (auto& [id, c] : conns)
      if (c->session != nullptr && !c->closing && c->in_flight == 0 &&
          now - c->last_rx_ms > 3 * int64_t{opt.heartbeat_ms})
        dead.push_back(c.get());
    for (Conn* c : dead) {
      log::info("rsio: node {} path {}: nothing received for {} ms; closing it",
                c->session->node_name, c->path_id, now - c->last_rx_ms);
      close_conn(c);
    }
    if (!stopping)
      loop.after(uint64_t{opt.heartbeat_ms} * 1'000'000ULL, [this, a = std::weak_ptr<bool>(alive)] {
        if (!a.expired()) heartbeat_tick();
      });
  }

  void notify_handle(Session* s, uint32_t handle, wire::Event ev, uint64_t value) {
    for (auto& [pid, c] : s->paths) {
      if (c->closing) continue;
      OutFrame f;
      f.owned.resize(wire::kNotifyPayloadBytes);
      wire::encode_notify_payload({static_cast<uint32_t>(ev), handle, value}, f.owned.data());
      wire::ReplyHeader rh;
      rh.opcode = op(Opcode::kNotify);
      rh.status = static_cast<uint32_t>(ev);
      rh.payload_len = wire::kNotifyPayloadBytes;
      wire::encode(rh, f.hdr.data());
      queue(c, std::move(f));
    }
  }

  void maybe_finish_shutdown() {
    if (!stopping || !shutdown_done) return;
    for (auto& l : listeners)
      if (l->pending) return;
    if (!conns.empty()) return;
    auto done = std::move(shutdown_done);
    shutdown_done = nullptr;
    done();
  }
};

ExportServer::ExportServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ExportServer::~ExportServer() {
  if (!impl_) return;
  *impl_->alive = false;
  impl_->alive.reset();
  for (auto& l : impl_->listeners)
    if (l->fd >= 0) ::close(l->fd);
  for (auto& [id, c] : impl_->conns) ::close(c->fd);
}

Result<std::unique_ptr<ExportServer>> ExportServer::start(io::Loop& loop, ExportBackend& backend,
                                                          ServerOptions options) {
  if (options.listen.empty())
    options.listen.push_back(ListenAddress{"0.0.0.0", wire::kDefaultPort});
  if (!wire::instance_known(options.instance) && !auth::random_bytes(options.instance))
    return make_error(Errc::kIo, "no randomness for the server instance identity");
  auto impl = std::make_unique<Impl>(loop, backend, std::move(options));
  RSIO_TRY_STATUS(impl->bind_all());
  log::info("rsio: server instance {}", wire::instance_hex(impl->opt.instance));
  impl->heartbeat_tick();
  return std::unique_ptr<ExportServer>(new ExportServer(std::move(impl)));
}

std::vector<ListenAddress> ExportServer::addresses() const {
  std::vector<ListenAddress> out;
  for (const auto& l : impl_->listeners) out.push_back(l->addr);
  return out;
}

const wire::InstanceId& ExportServer::instance() const { return impl_->opt.instance; }

void ExportServer::adopt(int fd) { impl_->new_conn(fd); }

void ExportServer::volume_resized(int64_t volume_id, uint64_t size_bytes) {
  for (auto& [id, s] : impl_->sessions)
    for (auto& [h, hd] : s->handles)
      if (hd.volume_id == volume_id)
        impl_->notify_handle(s.get(), h, wire::Event::kResized, size_bytes);
}

void ExportServer::grant_changed(int64_t volume_id, int64_t client_id, bool revoked,
                                 bool read_only) {
  for (auto& [id, s] : impl_->sessions) {
    if (s->client_id != client_id) continue;
    for (auto& [h, hd] : s->handles) {
      if (hd.volume_id != volume_id) continue;
      if (revoked && !hd.revoked) {
        hd.revoked = true;
        impl_->notify_handle(s.get(), h, wire::Event::kRevoked, 0);
      } else if (!revoked && read_only && !hd.read_only) {
        hd.read_only = true;
        impl_->notify_handle(s.get(), h, wire::Event::kReadOnly, 0);
      }
    }
  }
}

void ExportServer::volume_closed(int64_t volume_id) {
  for (auto& [id, s] : impl_->sessions)
    for (auto& [h, hd] : s->handles)
      if (hd.volume_id == volume_id) hd.gone = true;
}

void ExportServer::shutdown(std::function<void()> done) {
  Impl& m = *impl_;
  m.stopping = true;
  m.shutdown_done = std::move(done);
  for (auto& l : m.listeners)
    if (l->fd >= 0) ::shutdown(l->fd, SHUT_RDWR);  // ends the pending accept
  std::vector<Conn*> all;
  for (auto& [id, c] : m.conns) all.push_back(c.get());
  for (Conn* c : all) {
    if (c->session != nullptr && !c->closing) {
      OutFrame f;
      f.owned.resize(wire::kNotifyPayloadBytes);
      wire::encode_notify_payload({static_cast<uint32_t>(wire::Event::kShutdown), 0, 0},
                                  f.owned.data());
      wire::ReplyHeader rh;
      rh.opcode = op(Opcode::kNotify);
      rh.status = static_cast<uint32_t>(wire::Event::kShutdown);
      rh.payload_len = wire::kNotifyPayloadBytes;
      wire::encode(rh, f.hdr.data());
      m.queue(c, std::move(f));
      c->close_when_sent = true;
    } else {
      m.close_conn(c);
    }
  }
  // A peer that does not read its replies must not hold the shutdown up.
  m.loop.after(uint64_t{kShutdownGraceMs} * 1'000'000ULL, [&m, a = std::weak_ptr<bool>(m.alive)] {
    if (a.expired()) return;
    std::vector<Conn*> left;
    for (auto& [id, c] : m.conns) left.push_back(c.get());
    for (Conn* c : left) m.close_conn(c);
  });
  m.maybe_finish_shutdown();
}

std::vector<SessionInfo> ExportServer::sessions() const {
  std::vector<SessionInfo> out;
  for (const auto& [id, s] : impl_->sessions) {
    SessionInfo si;
    si.session_id = s->id;
    si.client_id = s->client_id;
    si.node_name = s->node_name;
    si.platform = s->platform;
    for (const auto& [pid, c] : s->paths)
      si.paths.push_back(
          PathInfo{pid, c->local, c->remote, !c->closing, c->requests, c->in_flight});
    for (const auto& [h, hd] : s->handles)
      si.handles.push_back(HandleInfo{h, hd.volume_id, hd.volume, hd.read_only, hd.revoked});
    out.push_back(std::move(si));
  }
  return out;
}

const ServerStats& ExportServer::stats() const { return impl_->stats; }

}  // namespace rsio::server
