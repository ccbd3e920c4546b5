// Thread model: see client.h. Everything in Impl runs on the library's I/O thread, except the
// `incoming` queue (guarded by in_mu) and the stats snapshot (guarded by stats_mu).
//
// Each path runs one coroutine: connect, authenticate (new or join session), read replies
// until the connection fails, back off, repeat. Writes are queued per path and sent with one
// gathered write at a time. A request in flight on a path that fails is parked in a fence
// group; once FENCE(path) is answered on another path of the same session it is re-issued
// (docs/wire-protocol.md §5.3). When the session itself is gone (server restart) the next
// path creates a new one, re-opens every volume, and the parked requests go out again.
//
// Durability across server instances (§5.5): every acknowledged write-class request is kept
// in its volume's ReplayLog until a FLUSH completed by the same instance covers it. A new
// session with a different instance (the `epoch` count moves on) first replays each volume's
// log, holding all other I/O of the volume, and only then lets the held requests (the FLUSH
// among them) go out. A replay that cannot complete makes the volume's next FLUSH fail.
#include "rsio/client.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/utsname.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <atomic>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/assert.h"
#include "common/ids.h"
#include "common/log.h"
#include "rsio/address.h"
#include "rsio/auth.h"
#include "rsio/replay_log.h"

namespace rsio::client {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using wire::Opcode;
using wire::StatusCode;

namespace {

uint8_t op(Opcode o) { return static_cast<uint8_t>(o); }

std::string default_platform() {
  utsname u{};
  if (::uname(&u) != 0) return "Linux";
  std::string rel = u.release;
  // "6.1.0-18-amd64" -> "6.1"
  const auto dot = rel.find('.');
  if (dot != std::string::npos) {
    const auto end = rel.find_first_not_of("0123456789", dot + 1);
    rel = rel.substr(0, end);
  }
  return fmt::format("{} {}  {}   little endian", u.sysname, rel,
                     sizeof(void*) == 8 ? "LP64" : "ILP32");
}

struct Frame {
  std::array<uint8_t, wire::kRequestHeaderBytes> hdr{};
  const uint8_t* data = nullptr;
  uint32_t len = 0;
  std::shared_ptr<std::vector<uint8_t>> owned;
};

using ControlDone = std::function<void(StatusCode, std::vector<uint8_t>)>;

// The completion of every coroutine the library spawns. They handle expected failures as
// values, so an exception that escapes one is a bug: say which coroutine, then abort.
auto checked(const char* what) {
  return [what](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      log::error("rsio client: {} ended with an exception: {}", what, x.what());
    } catch (...) {
      log::error("rsio client: {} ended with an unknown exception", what);
    }
    RSIO_ASSERT_MSG(false, "exception escaped a client coroutine");
  };
}

// Something coroutines wait for (a ready path, the end of a session's creation): a waiter
// parks its timer here until notify_all() cancels it or its deadline passes, then checks its
// condition again. Timers as events: no polling.
class Event {
 public:
  // Waits until notified or `deadline`, whichever comes first.
  asio::awaitable<void> wait(asio::steady_timer& t,
                             std::chrono::steady_clock::time_point deadline) {
    t.expires_at(deadline);
    waiters_.push_back(&t);
    error_code ec;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    std::erase(waiters_, &t);
  }
  void notify_all() {
    for (asio::steady_timer* t : waiters_) t->cancel();
  }

 private:
  std::vector<asio::steady_timer*> waiters_;
};

}  // namespace

Result<PathSpec> parse_path(std::string_view text) {
  PathSpec p;
  if (const auto at = text.find('@'); at != std::string_view::npos) {
    p.bind = std::string(text.substr(at + 1));
    text = text.substr(0, at);
  }
  RSIO_TRY(HostPort hp, split_host_port(text, "server"));
  if (hp.host.empty()) return make_error(Errc::kInvalidArgument, "server address is empty");
  if (hp.port && *hp.port == 0)
    return make_error(Errc::kInvalidArgument, fmt::format("server {}: bad port 0", text));
  p.host = std::move(hp.host);
  if (hp.port) p.port = *hp.port;
  return p;
}

struct Path {
  size_t index = 0;
  PathSpec spec;
  std::unique_ptr<tcp::socket> sock;
  bool ready = false;
  uint64_t conn_gen = 0;
  uint32_t path_id = 0;
  uint64_t session_id = 0;
  std::unordered_map<uint64_t, Io*> ios;
  std::unordered_map<uint64_t, ControlDone> controls;
  std::vector<Frame> wq, writing;
  bool write_active = false;
  std::vector<uint8_t> rbuf = std::vector<uint8_t>(256 * 1024);
  size_t rpos = 0, rlen = 0;
  int64_t last_rx_ms = 0;
  bool keepalive_out = false;
  std::string endpoint, last_error;
  uint64_t requests = 0;
  uint32_t attempt = 0;
  bool ever_ready = false;
  bool auth_refused = false;
  std::unique_ptr<asio::steady_timer> timer;
};

struct Client::Impl : std::enable_shared_from_this<Impl> {
  ClientOptions opt;
  asio::io_context ctx{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  bool stopping = false;
  std::vector<std::unique_ptr<Path>> paths;
  uint32_t rr = 0;

  // Session.
  uint64_t session_id = 0;
  bool creating = false;
  Event session_settled;  // `creating` ended (a session was made, or the attempt failed)
  Event path_ready;       // a path became ready, or the client stops
  struct Vol {
    std::string name;
    bool ro = false;
    uint32_t handle = 0;
    uint64_t session = 0;  // session the handle belongs to
    bool opening = false;
    bool closed = false;
    StatusCode failed = StatusCode::kOk;  // re-open refused
    uint32_t flags = 0;
    uint32_t block_size = 512;
    // Durability (see the top of the file).
    ReplayLog log;
    uint64_t log_epoch = 0;  // the instance (epoch) that acknowledged the log's entries
    std::optional<ReplayCursor> replay;  // a replay to the current instance runs
    uint64_t replay_round = 0;
    bool lost = false;               // writes may be lost: the next FLUSH fails
    uint64_t lost_fail_below = 0;    // FLUSHes submitted before this seq fail too
    uint64_t unacked_bytes = 0;      // counted write-class requests not yet answered
    bool limit_flush_out = false;    // the library's own FLUSH at the bound is out
    int64_t limit_flush_retry_ms = 0;
  };
  std::map<uint32_t, Vol> vols;
  uint32_t next_vol = 0;
  std::deque<Io*> pending;
  struct FenceGroup {
    uint64_t session_id = 0;
    uint32_t path_id = 0;
    std::vector<Io*> ios;
    bool sent = false;
  };
  std::deque<FenceGroup> fences;
  uint64_t next_tag = 0;
  uint64_t next_seq = 0;          // submission order of requests
  wire::InstanceId instance{};    // the current session's server instance
  uint64_t epoch = 0;             // moves on with every new (or unknown) instance
  // Sum of the volumes' ReplayLog::bytes(); written on the I/O thread, read by stats().
  std::atomic<uint64_t> retained_bytes{0};

  // A request the library sends on its own: a replayed write or a FLUSH at the bound.
  struct OwnIo {
    Io io;
    Impl* impl = nullptr;
    uint64_t round = 0;  // replays: Vol::replay_round when sent
    size_t index = 0;    // replays: the entry of the log
  };

  std::mutex in_mu;
  std::vector<Io*> incoming;  // GUARDED_BY(in_mu)
  bool drain_posted = false;  // GUARDED_BY(in_mu)

  // Volume sizes for readers on any thread (frontends ask on every request): no hop to the
  // I/O thread. Written on the I/O thread (open, re-open, RESIZED) and by close_volume().
  mutable std::mutex sizes_mu;
  std::unordered_map<uint32_t, uint64_t> sizes;  // GUARDED_BY(sizes_mu)
  // Returns whether the size changed.
  bool set_size(uint32_t volume, uint64_t size_bytes) {
    std::lock_guard lock(sizes_mu);
    uint64_t& size = sizes[volume];
    if (size == size_bytes) return false;
    size = size_bytes;
    return true;
  }

  // Counters of every request: atomics, no lock on the I/O path. The rare ones (re-issues,
  // fences, sessions, replays) are in `st` under stats_mu.
  std::atomic<uint64_t> submitted{0}, completed{0}, errors{0};
  mutable std::mutex stats_mu;
  ClientStats st;  // GUARDED_BY(stats_mu) for readers on other threads

  // connect(): the first path's outcome.
  std::promise<Status> first;
  bool first_set = false;

  explicit Impl(ClientOptions o) : opt(std::move(o)) {}

  void set_first(Status s) {
    if (first_set) return;
    first_set = true;
    first.set_value(std::move(s));
  }

  // --- paths -------------------------------------------------------------------------------

  asio::awaitable<void> run_path(Path* p) {
    while (!stopping) {
      const bool ok = co_await connect_and_auth(p);
      if (stopping) break;
      if (ok) {
        co_await read_loop(p);
        path_down(p);
      } else if (p->sock) {
        error_code ec;
        p->sock->close(ec);
      }
      if (stopping) break;
      if (!p->ever_ready && p->auth_refused) {
        // Every path refused: the key is wrong. connect() reports it; no retry storm.
        bool all_refused = true;
        for (auto& q : paths) all_refused = all_refused && !q->ever_ready && q->auth_refused;
        if (all_refused)
          set_first(make_error(Errc::kPermissionDenied,
                               fmt::format("the server refused node {}: wrong node name or key "
                                           "(check rsadmin -qv on the server)",
                                           opt.node_name)));
      }
      const uint32_t shift = std::min<uint32_t>(p->attempt, 10);
      const uint64_t wait =
          std::min<uint64_t>(uint64_t{opt.reconnect_min_ms} << shift, opt.reconnect_max_ms);
      ++p->attempt;
      p->timer->expires_after(std::chrono::milliseconds(wait));
      error_code ec;
      co_await p->timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  // Reads exactly n bytes into out with the path's deadline already armed.
  asio::awaitable<bool> read_frame(Path* p, std::vector<uint8_t>& hdr_and_payload) {
    error_code ec;
    hdr_and_payload.resize(wire::kReplyHeaderBytes);
    co_await asio::async_read(*p->sock, asio::buffer(hdr_and_payload),
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;
    const auto h = wire::decode_reply_header(hdr_and_payload.data());
    if (h.payload_len > wire::kMaxHandshakePayload) co_return false;
    hdr_and_payload.resize(wire::kReplyHeaderBytes + h.payload_len);
    co_await asio::async_read(
        *p->sock, asio::buffer(hdr_and_payload.data() + wire::kReplyHeaderBytes, h.payload_len),
        asio::redirect_error(asio::use_awaitable, ec));
    co_return !ec;
  }

  asio::awaitable<bool> connect_and_auth(Path* p) {
    ++p->conn_gen;
    p->sock = std::make_unique<tcp::socket>(ctx);
    p->rpos = p->rlen = 0;
    p->auth_refused = false;
    error_code ec;
    // Who creates the session: the first path that finds none; the others wait and join.
    while (session_id == 0 && creating && !stopping)
      co_await session_settled.wait(*p->timer, std::chrono::steady_clock::now() +
                                                   std::chrono::milliseconds(opt.connect_timeout_ms));
    if (stopping) co_return false;
    const uint64_t join = session_id;
    if (join == 0) creating = true;
    struct CreatingGuard {
      Impl* impl;
      bool active;
      ~CreatingGuard() {
        if (!active) return;
        impl->creating = false;
        impl->session_settled.notify_all();
      }
    } guard_creating{this, join == 0};

    tcp::resolver resolver(ctx);
    auto results = co_await resolver.async_resolve(p->spec.host, std::to_string(p->spec.port),
                                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      p->last_error = fmt::format("resolve {}: {}", p->spec.host, ec.message());
      co_return false;
    }
    // One deadline for connect and handshake: the socket is closed when it passes.
    const uint64_t gen = p->conn_gen;
    asio::steady_timer deadline(ctx);
    deadline.expires_after(std::chrono::milliseconds(opt.connect_timeout_ms));
    deadline.async_wait([p, gen](error_code e) {
      if (!e && p->conn_gen == gen && p->sock && !p->ready) {
        error_code ignored;
        p->sock->close(ignored);
      }
    });
    tcp::endpoint remote = *results.begin();
    p->sock->open(remote.protocol(), ec);
    if (!ec && !p->spec.bind.empty()) {
      auto local = asio::ip::make_address(p->spec.bind, ec);
      if (!ec) p->sock->bind(tcp::endpoint(local, 0), ec);
      if (ec) {
        p->last_error = fmt::format("bind {}: {}", p->spec.bind, ec.message());
        co_return false;
      }
    }
    if (ec) {
      p->last_error = ec.message();
      co_return false;
    }
    co_await p->sock->async_connect(remote, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      p->last_error = fmt::format("connect {}:{}: {}", p->spec.host, p->spec.port, ec.message());
      co_return false;
    }
    p->sock->set_option(tcp::no_delay(true), ec);
    const unsigned int uto = 3 * opt.heartbeat_ms + 7000;
    ::setsockopt(p->sock->native_handle(), IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
    {
      auto le = p->sock->local_endpoint(ec);
      p->endpoint = fmt::format("{}/{}<->{}/{}", le.address().to_string(), le.port(),
                                remote.address().to_string(), remote.port());
    }

    // HELLO.
    wire::Hello hello;
    hello.mode = join != 0 ? 1 : 0;
    hello.session_id = join;
    hello.node_name = opt.node_name;
    hello.platform = opt.platform;
    if (!auth::random_bytes(hello.client_nonce)) {
      p->last_error = "no randomness for the client nonce";
      co_return false;
    }
    std::vector<uint8_t> payload;
    encode_payload(hello, payload);
    std::vector<uint8_t> frame(wire::kRequestHeaderBytes);
    wire::RequestHeader h;
    h.opcode = op(Opcode::kHello);
    h.tag = 1;
    h.payload_len = static_cast<uint32_t>(payload.size());
    wire::encode(h, frame.data());
    frame.insert(frame.end(), payload.begin(), payload.end());
    co_await asio::async_write(*p->sock, asio::buffer(frame),
                               asio::redirect_error(asio::use_awaitable, ec));
    std::vector<uint8_t> reply;
    if (ec || !co_await read_frame(p, reply)) {
      p->last_error = "connection lost during the handshake";
      co_return false;
    }
    auto rh = wire::decode_reply_header(reply.data());
    if (rh.status != 0) {
      p->last_error = fmt::format("server answered HELLO with {}", wire::status_name(rh.status));
      co_return false;
    }
    auto hr = wire::decode_hello_reply(std::span(reply).subspan(wire::kReplyHeaderBytes));
    if (!hr) {
      p->last_error = "malformed HELLO reply";
      co_return false;
    }
    auth::Transcript t;
    t.add(frame);
    t.add(reply);
    const auth::Digest transcript = t.finish();
    const auth::Digest proof = auth::client_proof(opt.node_key, transcript);
    // AUTH.
    std::vector<uint8_t> af(wire::kRequestHeaderBytes);
    h = {};
    h.opcode = op(Opcode::kAuth);
    h.tag = 2;
    h.payload_len = wire::kProofBytes;
    wire::encode(h, af.data());
    af.insert(af.end(), proof.begin(), proof.end());
    co_await asio::async_write(*p->sock, asio::buffer(af),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !co_await read_frame(p, reply)) {
      p->last_error = "connection lost during authentication";
      co_return false;
    }
    rh = wire::decode_reply_header(reply.data());
    if (rh.status == static_cast<uint32_t>(StatusCode::kAuthFailed)) {
      p->last_error = "authentication failed (wrong node name or key)";
      p->auth_refused = true;
      co_return false;
    }
    if (rh.status == static_cast<uint32_t>(StatusCode::kNoSession)) {
      // The server lost the session (restart, or linger time passed): the next attempt
      // creates a new one at once.
      if (session_id == join) session_id = 0;
      p->last_error = "session gone; creating a new one";
      p->attempt = 0;
      co_return false;
    }
    if (rh.status != 0) {
      p->last_error = fmt::format("server answered AUTH with {}", wire::status_name(rh.status));
      co_return false;
    }
    auto okm = wire::decode_auth_ok(std::span(reply).subspan(wire::kReplyHeaderBytes));
    if (!okm) {
      p->last_error = "malformed AUTH reply";
      co_return false;
    }
    const auth::Digest expect = auth::server_proof(opt.node_key, transcript, proof);
    if (!auth::equal(okm->server_proof, expect)) {
      p->last_error = "the server could not prove it knows the node key; not using it";
      p->auth_refused = true;
      co_return false;
    }
    deadline.cancel();
    if (join == 0) {
      session_id = okm->session_id;
      guard_creating.active = false;
      creating = false;
      session_settled.notify_all();
      {
        std::lock_guard lock(stats_mu);
        ++st.sessions;
      }
      // Another instance (or one that cannot say, a version 1 server) may have lost what the
      // last one acknowledged: the volumes' kept writes are replayed when they re-open.
      if (!wire::instance_known(hr->instance) || hr->instance != instance) {
        if (epoch != 0)
          log::info("rsio client: server instance {} (was {}); unflushed writes are replayed",
                    wire::instance_hex(hr->instance), wire::instance_hex(instance));
        instance = hr->instance;
        ++epoch;
      }
      // The old session is gone on the server with all its paths drained: what waited for a
      // fence there can go out again without one.
      for (auto& g : fences)
        for (Io* io : g.ios) {
          ++io->reissued;
          pending.push_back(io);
        }
      fences.clear();
    } else if (okm->session_id != join) {
      p->last_error = "server joined a different session";
      co_return false;
    }
    p->session_id = session_id;
    p->path_id = okm->path_id;
    p->ready = true;
    p->ever_ready = true;
    p->attempt = 0;
    p->last_rx_ms = now_ms();
    p->keepalive_out = false;
    p->last_error.clear();
    {
      std::lock_guard lock(stats_mu);
      ++st.reconnects;
      ++st.paths_ready;
    }
    asio::co_spawn(ctx, heartbeat(p, p->conn_gen), checked("heartbeat"));
    reopen_volumes(p);
    try_fences();
    dispatch();
    path_ready.notify_all();
    co_return true;
  }

  asio::awaitable<void> heartbeat(Path* p, uint64_t gen) {
    asio::steady_timer t(ctx);
    while (!stopping && p->conn_gen == gen && p->ready) {
      t.expires_after(std::chrono::milliseconds(opt.heartbeat_ms / 2));
      error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping || p->conn_gen != gen || !p->ready) co_return;
      const int64_t silent = now_ms() - p->last_rx_ms;
      if (silent > 3 * int64_t{opt.heartbeat_ms}) {
        p->last_error = fmt::format("nothing received for {} ms", silent);
        log::info("rsio client: path {} ({}) dead: {}", p->index, p->endpoint, p->last_error);
        error_code ignored;
        p->sock->close(ignored);
        co_return;
      }
      if (silent >= int64_t{opt.heartbeat_ms} && !p->keepalive_out) {
        p->keepalive_out = true;
        send_control(p, Opcode::kKeepalive, 0, {}, [p, gen](StatusCode, std::vector<uint8_t>) {
          if (p->conn_gen == gen) p->keepalive_out = false;
        });
      }
    }
  }

  asio::awaitable<void> read_loop(Path* p) {
    error_code ec;
    for (;;) {
      // Decode every complete frame in the buffer.
      for (;;) {
        size_t avail = p->rlen - p->rpos;
        if (avail < wire::kReplyHeaderBytes) break;
        const auto h = wire::decode_reply_header(p->rbuf.data() + p->rpos);
        if (h.payload_len > wire::kMaxReplyPayload) {
          p->last_error = fmt::format("reply payload of {} bytes", h.payload_len);
          co_return;
        }
        auto io_it =
            h.opcode == op(Opcode::kRead) && h.status == 0 ? p->ios.find(h.tag) : p->ios.end();
        if (io_it != p->ios.end()) {
          Io* io = io_it->second;
          if (h.payload_len != io->length) {
            p->last_error = "READ reply of the wrong length";
            co_return;
          }
          p->rpos += wire::kReplyHeaderBytes;
          const size_t have = std::min<size_t>(p->rlen - p->rpos, io->length);
          std::memcpy(io->buf, p->rbuf.data() + p->rpos, have);
          p->rpos += have;
          if (have < io->length) {
            co_await asio::async_read(
                *p->sock, asio::buffer(static_cast<uint8_t*>(io->buf) + have, io->length - have),
                asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
              p->last_error = ec.message();
              co_return;
            }
          }
          p->ios.erase(io_it);
          complete(io, StatusCode::kOk);
          continue;
        }
        const size_t need = wire::kReplyHeaderBytes + h.payload_len;
        if (avail < need) {
          if (p->rbuf.size() < need) {
            std::memmove(p->rbuf.data(), p->rbuf.data() + p->rpos, avail);
            p->rlen = avail;
            p->rpos = 0;
            p->rbuf.resize(need);
          }
          break;
        }
        std::span<const uint8_t> payload(p->rbuf.data() + p->rpos + wire::kReplyHeaderBytes,
                                         h.payload_len);
        p->rpos += need;
        on_reply(p, h, payload);
      }
      if (p->rpos > 0) {
        std::memmove(p->rbuf.data(), p->rbuf.data() + p->rpos, p->rlen - p->rpos);
        p->rlen -= p->rpos;
        p->rpos = 0;
      }
      const size_t n = co_await p->sock->async_read_some(
          asio::buffer(p->rbuf.data() + p->rlen, p->rbuf.size() - p->rlen),
          asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (p->last_error.empty()) p->last_error = ec.message();
        co_return;
      }
      p->rlen += n;
      p->last_rx_ms = now_ms();
    }
  }

  void on_reply(Path* p, const wire::ReplyHeader& h, std::span<const uint8_t> payload) {
    if (h.opcode == op(Opcode::kNotify)) {
      auto n = wire::decode_notify(h.status, payload);
      if (!n) return;
      for (auto& [id, v] : vols) {
        if (v.session != p->session_id || v.handle != n->handle) continue;
        // The same notification arrives on every path: act once.
        if (n->event == static_cast<uint32_t>(wire::Event::kResized) && set_size(id, n->value)) {
          if (opt.on_resized) opt.on_resized(id, n->value);
        }
        if (n->event == static_cast<uint32_t>(wire::Event::kReadOnly))
          v.flags |= wire::kVolReadOnly;
      }
      if (n->event == static_cast<uint32_t>(wire::Event::kShutdown))
        log::info("rsio client: the server is shutting down; holding I/O until it is back");
      return;
    }
    if (auto it = p->ios.find(h.tag); it != p->ios.end()) {
      Io* io = it->second;
      p->ios.erase(it);
      const auto s = static_cast<StatusCode>(h.status);
      if (s == StatusCode::kShuttingDown) {
        hold(io);
        return;
      }
      complete(io, s);
      return;
    }
    if (auto it = p->controls.find(h.tag); it != p->controls.end()) {
      ControlDone done = std::move(it->second);
      p->controls.erase(it);
      done(static_cast<StatusCode>(h.status), std::vector<uint8_t>(payload.begin(), payload.end()));
    }
  }

  void path_down(Path* p) {
    if (p->ready) {
      std::lock_guard lock(stats_mu);
      --st.paths_ready;
      ++st.path_failures;
    }
    const bool was_ready = p->ready;
    p->ready = false;
    ++p->conn_gen;
    error_code ec;
    if (p->sock) p->sock->close(ec);
    if (was_ready)
      log::info("rsio client: path {} ({}) down: {}", p->index, p->endpoint, p->last_error);
    // Its requests wait for a fence on another path of the same session.
    if (!p->ios.empty()) {
      FenceGroup g;
      g.session_id = p->session_id;
      g.path_id = p->path_id;
      for (auto& [tag, io] : p->ios) g.ios.push_back(io);
      p->ios.clear();
      fences.push_back(std::move(g));
    }
    auto controls = std::move(p->controls);
    p->controls.clear();
    for (auto& [tag, done] : controls) done(StatusCode::kUnavailable, {});
    p->wq.clear();
    try_fences();
  }

  // --- sending -----------------------------------------------------------------------------

  void enqueue(Path* p, Frame&& f) {
    p->wq.push_back(std::move(f));
    kick_write(p);
  }

  void kick_write(Path* p) {
    if (p->write_active || p->wq.empty() || !p->ready) return;

    p->writing.swap(p->wq);
    p->wq.clear();
    std::vector<asio::const_buffer> bufs;
    bufs.reserve(p->writing.size() * 2);
    for (const Frame& f : p->writing) {
      bufs.emplace_back(f.hdr.data(), f.hdr.size());
      if (f.len > 0) bufs.emplace_back(f.data, f.len);
    }
    p->write_active = true;
    const uint64_t gen = p->conn_gen;
    asio::async_write(*p->sock, bufs, [this, p, gen](error_code ec, size_t) {
      p->write_active = false;
      p->writing.clear();
      if (p->conn_gen != gen) return;
      if (ec) {
        p->last_error = fmt::format("send: {}", ec.message());
        error_code ignored;
        p->sock->close(ignored);
        return;
      }
      kick_write(p);
    });
  }

  void send_control(Path* p, Opcode o, uint32_t handle, std::vector<uint8_t> payload,
                    ControlDone done) {
    Frame f;
    wire::RequestHeader h;
    h.opcode = op(o);
    h.handle = handle;
    h.tag = ++next_tag;
    h.payload_len = static_cast<uint32_t>(payload.size());
    wire::encode(h, f.hdr.data());
    if (!payload.empty()) {
      f.owned = std::make_shared<std::vector<uint8_t>>(std::move(payload));
      f.data = f.owned->data();
      f.len = static_cast<uint32_t>(f.owned->size());
    }
    p->controls[h.tag] = std::move(done);
    enqueue(p, std::move(f));
  }

  Path* pick_path() {
    Path* best = nullptr;
    const size_t n = paths.size();
    for (size_t i = 0; i < n; ++i) {
      Path* p = paths[(rr + i) % n].get();
      if (!p->ready || p->session_id != session_id) continue;
      if (opt.policy == Policy::kRoundRobin) {
        rr = static_cast<uint32_t>((rr + i + 1) % n);
        return p;
      }
      if (best == nullptr || p->ios.size() < best->ios.size()) best = p;
    }
    if (best != nullptr) rr = static_cast<uint32_t>((rr + 1) % n);
    return best;
  }

  void send_io(Path* p, Io* io, const Vol& v) {
    if (io->tag == 0) io->tag = ++next_tag;
    io->path = static_cast<uint32_t>(p->index);
    io->epoch = epoch;
    if (io->op == Opcode::kFlush) io->flush_mark = v.log.mark();
    Frame f;
    wire::RequestHeader h;
    h.opcode = op(io->op);
    h.flags = io->fua ? wire::kFlagFua : 0;
    h.handle = v.handle;
    h.tag = io->tag;
    h.offset = io->offset;
    h.length = io->length;
    if (io->op == Opcode::kWrite) {
      h.payload_len = io->length;
      f.data = static_cast<const uint8_t*>(io->buf);
      f.len = io->length;
    }
    wire::encode(h, f.hdr.data());
    p->ios[io->tag] = io;
    ++p->requests;
    enqueue(p, std::move(f));
  }

  void hold(Io* io) { pending.push_back(io); }

  // Sends what waits, on the least loaded ready path.
  void dispatch() {
    if (pending.empty()) return;
    std::deque<Io*> keep;
    const int64_t now = now_ms();
    while (!pending.empty()) {
      Io* io = pending.front();
      auto vit = vols.find(io->volume);
      if (vit == vols.end() || vit->second.closed) {
        pending.pop_front();
        complete(io, StatusCode::kBadHandle);
        continue;
      }
      Vol& v = vit->second;
      if (v.failed != StatusCode::kOk) {
        pending.pop_front();
        complete(io, v.failed);
        continue;
      }
      if (v.session != session_id || session_id == 0) {
        if (session_id != 0 && !v.opening)
          if (Path* p = pick_path()) reopen_volumes(p);
        keep.push_back(io);
        pending.pop_front();
        continue;
      }
      if (io->done == &replay_done) {
        if (!current_replay(v, io)) {  // of a replay that was started again or given up
          pending.pop_front();
          delete own(io);
          continue;
        }
      } else if (v.replay || !within_limit(vit->first, v, io)) {
        keep.push_back(io);  // after the replay; or until the library's FLUSH freed room
        pending.pop_front();
        continue;
      }
      Path* p = pick_path();
      if (p == nullptr) break;
      pending.pop_front();
      const int64_t waited = now - (io->deadline_ms - opt.hold_ms);
      if (io->reissued > 0 || waited > 100) {
        std::lock_guard lock(stats_mu);
        st.max_stall_ms = std::max<uint64_t>(st.max_stall_ms, static_cast<uint64_t>(waited));
        if (io->reissued > 0) ++st.reissued;
      }
      send_io(p, io, v);
    }
    for (auto it = keep.rbegin(); it != keep.rend(); ++it) pending.push_front(*it);
  }

  // --- durability across server instances (§5.5) ------------------------------------------

  static OwnIo* own(Io* io) { return static_cast<OwnIo*>(io->user); }

  OwnIo* new_own(uint32_t vid, Opcode o, void (*done)(Io*, StatusCode)) {
    auto* r = new OwnIo;
    r->impl = this;
    r->io.op = o;
    r->io.volume = vid;
    r->io.done = done;
    r->io.user = r;
    r->io.seq = ++next_seq;
    r->io.deadline_ms = now_ms() + opt.hold_ms;
    return r;
  }

  bool current_replay(const Vol& v, Io* io) const {
    return v.replay.has_value() && own(io)->round == v.replay_round;
  }

  // Counts a write-class request against the bound, or says it must wait: then the library
  // sends a FLUSH of its own so that the kept writes can be dropped.
  bool within_limit(uint32_t vid, Vol& v, Io* io) {
    if (io->counted || !wire::is_write_class(op(io->op))) return true;
    const uint64_t used = v.log.bytes() + v.unacked_bytes;
    const uint64_t need = (io->op == Opcode::kWrite ? io->length : 0) +
                          ReplayLog::kEntryOverheadBytes;
    if (used > 0 && used + need > opt.replay_limit_bytes) {
      if (!v.limit_flush_out && now_ms() >= v.limit_flush_retry_ms) {
        v.limit_flush_out = true;
        {
          std::lock_guard lock(stats_mu);
          ++st.limit_flushes;
        }
        // Sent at the next dispatch: it must not join the queue being walked now.
        OwnIo* f = new_own(vid, Opcode::kFlush, &limit_flush_done);
        asio::post(ctx, [this, f] {
          if (stopping) return delete f;
          pending.push_front(&f->io);
          dispatch();
        });
      }
      return false;
    }
    io->counted = true;
    v.unacked_bytes += need;
    return true;
  }

  static void limit_flush_done(Io* io, StatusCode s) {
    std::unique_ptr<OwnIo> r(own(io));
    Impl* self = r->impl;
    auto it = self->vols.find(io->volume);
    if (it == self->vols.end() || self->stopping) return;
    it->second.limit_flush_out = false;
    // A failing device: try again a little later rather than in a tight loop.
    if (s != StatusCode::kOk) it->second.limit_flush_retry_ms = now_ms() + 100;
    self->dispatch();
  }

  // The volume re-opened in a session with another instance than the one that acknowledged
  // its kept writes: send them again before anything else of the volume.
  void start_replay(uint32_t vid, Vol& v) {
    if (v.log.empty()) return replay_finished(vid, v);
    v.replay.emplace(v.log.entries().size(), wire::kMaxInFlightPerPath / 2);
    ++v.replay_round;
    {
      std::lock_guard lock(stats_mu);
      ++st.replays;
    }
    log::info("rsio client: replaying {} unflushed writes ({} bytes) of {} to instance {}",
              v.log.entries().size(), v.log.bytes(), v.name, wire::instance_hex(instance));
    replay_pump(vid, v);
  }

  void replay_pump(uint32_t vid, Vol& v) {
    const auto& entries = v.log.entries();
    while (auto index = v.replay->next(entries)) {
      const ReplayLog::Entry& e = entries[*index];
      OwnIo* r = new_own(vid, e.op, &replay_done);
      r->round = v.replay_round;
      r->index = *index;
      r->io.fua = e.fua;
      r->io.offset = e.offset_bytes;
      r->io.length = e.length_bytes;
      r->io.buf = const_cast<uint8_t*>(e.data.data());  // sent, never written to
      pending.push_front(&r->io);
    }
  }

  static void replay_done(Io* io, StatusCode s) {
    std::unique_ptr<OwnIo> r(own(io));
    Impl* self = r->impl;
    auto it = self->vols.find(io->volume);
    if (it == self->vols.end() || self->stopping) return;
    Vol& v = it->second;
    if (!self->current_replay(v, io)) return;
    if (s != StatusCode::kOk) {
      // The instance refuses what it must take (I/O error, revoked grant, a shrunk volume)
      // or never answered: those writes are lost, and the next FLUSH says so.
      log::error("rsio client: replaying a write of {} at offset_bytes={} failed ({}): "
                 "acknowledged writes may be lost; the next FLUSH fails",
                 v.name, io->offset, wire::status_name(static_cast<uint32_t>(s)));
      {
        std::lock_guard lock(self->stats_mu);
        ++self->st.replay_failures;
      }
      v.lost = true;
      self->set_log_cleared(v);
      return self->replay_finished(io->volume, v);
    }
    {
      std::lock_guard lock(self->stats_mu);
      ++self->st.replayed_writes;
    }
    v.replay->done(v.log.entries()[r->index]);
    if (v.replay->finished()) return self->replay_finished(io->volume, v);
    self->replay_pump(io->volume, v);
    self->dispatch();
  }

  void set_log_cleared(Vol& v) {
    retained_bytes -= v.log.bytes();
    v.log.clear();
  }

  // The kept writes are now the current instance's: a FLUSH sent from now on covers them.
  void replay_finished(uint32_t vid, Vol& v) {
    v.replay.reset();
    v.log_epoch = epoch;
    if (opt.on_instance) opt.on_instance(vid, instance);
    dispatch();
  }

  // Bookkeeping of a completed request of a volume; may turn a FLUSH's OK into IO_ERROR.
  StatusCode account(Io* io, StatusCode s) {
    auto it = vols.find(io->volume);
    if (it == vols.end()) return s;
    Vol& v = it->second;
    if (io->counted) {
      io->counted = false;
      v.unacked_bytes -= (io->op == Opcode::kWrite ? io->length : 0) +
                         ReplayLog::kEntryOverheadBytes;
      if (s == StatusCode::kOk) {
        const uint64_t before = v.log.bytes();
        v.log.acked(io->op, io->fua, io->offset, io->length, io->buf);
        retained_bytes += v.log.bytes() - before;
      }
      // Writes held at the bound may fit now.
      if (!pending.empty()) asio::post(ctx, [this] { dispatch(); });
      return s;
    }
    if (io->op != Opcode::kFlush) return s;
    if (s == StatusCode::kOk && io->epoch == v.log_epoch) {
      const uint64_t before = v.log.bytes();
      v.log.flushed(io->flush_mark);
      retained_bytes -= before - v.log.bytes();
    }
    if (io->done == &limit_flush_done) return s;  // a loss is the caller's FLUSH to report
    if (v.lost) {
      v.lost = false;
      v.lost_fail_below = next_seq + 1;  // every FLUSH submitted until now fails too
    }
    if (io->seq < v.lost_fail_below) {
      std::lock_guard lock(stats_mu);
      ++st.lost_flushes;
      return StatusCode::kIoError;
    }
    return s;
  }

  void try_fences() {
    for (auto& g : fences) {
      if (g.sent) continue;
      if (g.session_id != session_id) continue;  // handled when the new session starts
      Path* q = pick_path();
      if (q == nullptr) return;
      g.sent = true;
      {
        std::lock_guard lock(stats_mu);
        ++st.fences;
      }
      const uint64_t sid = g.session_id;
      const uint32_t pid = g.path_id;
      std::vector<uint8_t> payload;
      wire::Writer(payload).u32(pid);
      send_control(q, Opcode::kFence, 0, std::move(payload),
                   [this, sid, pid](StatusCode s, std::vector<uint8_t>) {
                     for (auto it = fences.begin(); it != fences.end(); ++it) {
                       if (it->session_id != sid || it->path_id != pid) continue;
                       if (s != StatusCode::kOk) {
                         it->sent = false;  // the fencing path failed too: try another
                         break;
                       }
                       for (Io* io : it->ios) {
                         ++io->reissued;
                         pending.push_back(io);
                       }
                       fences.erase(it);
                       break;
                     }
                     try_fences();
                     dispatch();
                   });
    }
  }

  void reopen_volumes(Path* p) {
    for (auto& [id, v] : vols) {
      if (v.closed || v.session == session_id || v.opening || v.failed != StatusCode::kOk) continue;
      v.opening = true;
      std::vector<uint8_t> payload;
      encode_payload(wire::OpenRequest{v.ro, v.name}, payload);
      const uint32_t vid = id;
      const uint64_t sid = session_id;
      send_control(p, Opcode::kOpen, 0, std::move(payload),
                   [this, vid, sid](StatusCode s, std::vector<uint8_t> reply) {
                     auto it = vols.find(vid);
                     if (it == vols.end()) return;
                     Vol& vol = it->second;
                     vol.opening = false;
                     if (s == StatusCode::kUnavailable || sid != session_id) return;  // retried
                     auto rep = wire::decode_open_reply(reply);
                     if (s != StatusCode::kOk || !rep) {
                       log::warn("rsio client: re-opening {} failed: {}", vol.name,
                                 wire::status_name(static_cast<uint32_t>(s)));
                       vol.failed = s == StatusCode::kOk ? StatusCode::kInvalid : s;
                     } else {
                       vol.handle = rep->handle;
                       vol.session = sid;
                       set_size(vid, rep->size_bytes);
                       vol.flags = rep->flags;
                       if (vol.log_epoch != epoch) start_replay(vid, vol);
                     }
                     dispatch();
                   });
    }
  }

  void complete(Io* io, StatusCode s) {
    if (io->done == &replay_done) return io->done(io, s);
    if (io->op != Opcode::kRead) s = account(io, s);
    if (io->done == &limit_flush_done) return io->done(io, s);
    completed.fetch_add(1, std::memory_order_relaxed);
    if (s != StatusCode::kOk) errors.fetch_add(1, std::memory_order_relaxed);
    io->done(io, s);
  }

  // --- entry points from other threads -----------------------------------------------------

  // Caller-driven mode: the calling thread is the I/O thread.
  bool inline_mode() const { return opt.caller_driven; }

  // Runs what is ready; with nothing ready waits up to `ms` for one handler, then runs what
  // became ready with it.
  size_t run_inline(std::chrono::milliseconds ms) {
    size_t n = ctx.poll();
    if (n == 0 && ms.count() > 0) n = ctx.run_one_for(ms);
    return n + ctx.poll();
  }

  // Waits for `fut`, running the context on this thread in caller-driven mode.
  template <class F>
  void await_future(F& fut) {
    if (!inline_mode()) return fut.wait();
    while (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
      run_inline(std::chrono::milliseconds(10));
  }

  void submit(Io* const* ios, size_t n) {
    if (inline_mode()) {
      {
        std::lock_guard lock(in_mu);
        incoming.insert(incoming.end(), ios, ios + n);
      }
      drain();
      return;
    }
    bool post = false;
    {
      std::lock_guard lock(in_mu);
      incoming.insert(incoming.end(), ios, ios + n);
      if (!drain_posted) {
        drain_posted = true;
        post = true;
      }
    }
    if (post) asio::post(ctx, [self = shared_from_this()] { self->drain(); });
  }

  void drain() {
    std::vector<Io*> batch;
    {
      std::lock_guard lock(in_mu);
      batch.swap(incoming);
      drain_posted = false;
    }
    const int64_t now = now_ms();
    submitted.fetch_add(batch.size(), std::memory_order_relaxed);
    for (Io* io : batch) {
      io->tag = 0;
      io->reissued = 0;
      io->seq = ++next_seq;
      io->counted = false;
      io->deadline_ms = now + opt.hold_ms;
      pending.push_back(io);
    }
    dispatch();
  }

  // Fails requests that waited longer than the hold time. Runs every 100 ms.
  asio::awaitable<void> hold_ticker() {
    asio::steady_timer t(ctx);
    while (!stopping) {
      t.expires_after(std::chrono::milliseconds(100));
      error_code ec;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping) co_return;
      const int64_t now = now_ms();
      std::deque<Io*> keep;
      for (Io* io : pending) {
        if (io->deadline_ms <= now)
          complete(io, StatusCode::kUnavailable);
        else
          keep.push_back(io);
      }
      pending.swap(keep);
      for (auto it = fences.begin(); it != fences.end();) {
        std::vector<Io*> left;
        for (Io* io : it->ios)
          if (io->deadline_ms <= now)
            complete(io, StatusCode::kUnavailable);
          else
            left.push_back(io);
        it->ios.swap(left);
        it = it->ios.empty() && !it->sent ? fences.erase(it) : it + 1;
      }
      if (!pending.empty()) dispatch();  // writes waiting for room retry a failed FLUSH
    }
  }

  // Runs `fn(done)` on the I/O thread with a ready path; `fn` calls done(status, payload).
  // Waits up to the hold time for a path. Any thread but the I/O thread.
  std::pair<StatusCode, std::vector<uint8_t>> call(Opcode o, uint32_t handle,
                                                   std::vector<uint8_t> payload) {
    auto promise = std::make_shared<std::promise<std::pair<StatusCode, std::vector<uint8_t>>>>();
    auto fut = promise->get_future();
    const int64_t deadline = now_ms() + opt.hold_ms;
    asio::co_spawn(
        ctx,
        [this, o, handle, payload = std::move(payload), promise,
         deadline]() mutable -> asio::awaitable<void> {
          asio::steady_timer t(ctx);
          for (;;) {
            Path* p = pick_path();
            if (p != nullptr) {
              send_control(p, o, handle, payload,
                           [promise](StatusCode s, std::vector<uint8_t> reply) {
                             promise->set_value({s, std::move(reply)});
                           });
              co_return;
            }
            if (stopping || now_ms() >= deadline) {
              promise->set_value({StatusCode::kUnavailable, {}});
              co_return;
            }
            co_await path_ready.wait(t, std::chrono::steady_clock::now() +
                                            std::chrono::milliseconds(deadline - now_ms()));
          }
        },
        checked("control call"));
    await_future(fut);
    return fut.get();
  }

  template <class Fn>
  auto on_thread(Fn fn) -> decltype(fn()) {
    if (inline_mode()) return fn();
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto fut = task.get_future();
    asio::post(ctx, [&task] { task(); });
    return fut.get();
  }
};

Result<std::unique_ptr<Client>> Client::connect(ClientOptions options) {
  if (options.paths.empty()) return make_error(Errc::kInvalidArgument, "no server address given");
  if (options.node_name.empty() || options.node_name.size() > wire::kNodeNameMax)
    return make_error(Errc::kInvalidArgument, "the node name must have 1 to 64 characters");
  if (options.node_key.empty()) return make_error(Errc::kInvalidArgument, "the node key is empty");
  if (options.platform.empty()) options.platform = default_platform();
  if (options.platform.size() > wire::kPlatformMax) options.platform.resize(wire::kPlatformMax);
  if (options.heartbeat_ms < 100) options.heartbeat_ms = 100;
  options.replay_limit_bytes = std::max<uint64_t>(options.replay_limit_bytes, 4ULL << 20);
  auto impl = std::make_shared<Impl>(std::move(options));
  for (size_t i = 0; i < impl->opt.paths.size(); ++i) {
    auto p = std::make_unique<Path>();
    p->index = i;
    p->spec = impl->opt.paths[i];
    p->timer = std::make_unique<asio::steady_timer>(impl->ctx);
    impl->paths.push_back(std::move(p));
  }
  auto first = impl->first.get_future();
  impl->guard.emplace(impl->ctx.get_executor());
  Impl* raw = impl.get();
  asio::post(impl->ctx, [raw] {
    for (auto& p : raw->paths) {
      Path* path = p.get();
      asio::co_spawn(
          raw->ctx, [raw, path] { return raw->run_path(path); }, checked("path"));
    }
    asio::co_spawn(
        raw->ctx, [raw] { return raw->hold_ticker(); }, checked("hold ticker"));
  });
  if (!raw->inline_mode()) impl->thread = std::thread([raw] { raw->ctx.run(); });
  // The outcome: the first ready path, all paths refusing the key, or the connect timeout.
  auto client = std::unique_ptr<Client>(new Client(impl));
  const auto wait = std::chrono::milliseconds(raw->opt.connect_timeout_ms + 500);
  for (auto until = std::chrono::steady_clock::now() + wait;;) {
    if (raw->inline_mode()) raw->run_inline(std::chrono::milliseconds(10));
    if (first.wait_for(std::chrono::milliseconds(raw->inline_mode() ? 0 : 10)) ==
        std::future_status::ready) {
      Status s = first.get();
      if (!s) return s.error();
      return client;
    }
    const bool any_ready = raw->on_thread([raw] {
      for (auto& p : raw->paths)
        if (p->ready) return true;
      return false;
    });
    if (any_ready) return client;
    if (std::chrono::steady_clock::now() >= until) {
      std::string why = raw->on_thread([raw] {
        std::string s;
        for (auto& p : raw->paths)
          s += fmt::format("{}{}:{}: {}", s.empty() ? "" : "; ", p->spec.host, p->spec.port,
                           p->last_error.empty() ? "no answer" : p->last_error);
        return s;
      });
      return make_error(Errc::kUnavailable, fmt::format("cannot reach the RSIO server ({}); is "
                                                        "rsiod running and listening there?",
                                                        why));
    }
  }
}

Client::Client(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Client::~Client() {
  Impl* raw = impl_.get();
  asio::post(raw->ctx, [raw] {
    raw->stopping = true;
    raw->session_settled.notify_all();
    raw->path_ready.notify_all();
    for (auto& p : raw->paths) {
      error_code ec;
      if (p->sock) p->sock->close(ec);
      p->timer->cancel();
      p->ready = false;
      for (auto& [tag, io] : p->ios) raw->pending.push_back(io);
      p->ios.clear();
    }
    for (auto& g : raw->fences)
      for (Io* io : g.ios) raw->pending.push_back(io);
    raw->fences.clear();
    auto left = std::move(raw->pending);
    raw->pending.clear();
    for (Io* io : left) raw->complete(io, StatusCode::kUnavailable);
    raw->guard.reset();
  });
  if (raw->inline_mode())
    raw->ctx.run();  // until every coroutine has seen `stopping` and ended
  else
    raw->thread.join();
}

size_t Client::poll(int timeout_ms) {
  Impl* raw = impl_.get();
  if (!raw->inline_mode()) return 0;
  return raw->run_inline(std::chrono::milliseconds(timeout_ms < 0 ? 3'600'000 : timeout_ms));
}

Result<std::vector<wire::VolumeEntry>> Client::list() {
  auto [s, payload] = impl_->call(Opcode::kList, 0, {});
  if (s != StatusCode::kOk)
    return make_error(Errc::kUnavailable, fmt::format("listing volumes failed: {}",
                                                      wire::status_name(static_cast<uint32_t>(s))));
  auto vols = wire::decode_list(payload);
  if (!vols) return make_error(Errc::kCorrupt, "malformed LIST reply from the server");
  return *vols;
}

Result<VolumeInfo> Client::open(const std::string& name, bool read_only) {
  OpenOptions o;
  o.read_only = read_only;
  return open(name, o);
}

Result<VolumeInfo> Client::open(const std::string& name, const OpenOptions& options) {
  const bool read_only = options.read_only;
  std::vector<uint8_t> payload;
  encode_payload(wire::OpenRequest{read_only, name}, payload);
  // The session must be known to bind the handle to it: read it on the I/O thread after the
  // reply, which runs there too.
  auto [s, reply] = impl_->call(Opcode::kOpen, 0, std::move(payload));
  if (s == StatusCode::kNotFound)
    return make_error(Errc::kNotFound,
                      fmt::format("volume {} does not exist or is not granted to node {} "
                                  "(rsadmin -g {} {} on the server)",
                                  name, impl_->opt.node_name, name, impl_->opt.node_name));
  if (s != StatusCode::kOk)
    return make_error(Errc::kUnavailable, fmt::format("opening {} failed: {}", name,
                                                      wire::status_name(static_cast<uint32_t>(s))));
  auto rep = wire::decode_open_reply(reply);
  if (!rep) return make_error(Errc::kCorrupt, "malformed OPEN reply from the server");
  Impl* raw = impl_.get();
  return raw->on_thread([raw, &name, read_only, &rep, &options]() {
    Impl::Vol v;
    v.name = name;
    v.ro = read_only;
    v.handle = rep->handle;
    v.session = raw->session_id;  // a new session in between makes dispatch() re-open it
    v.flags = rep->flags;
    v.block_size = rep->block_size;
    v.log_epoch = raw->epoch;
    if (options.unflushed_in &&
        (!wire::instance_known(raw->instance) || *options.unflushed_in != raw->instance)) {
      log::warn("rsio client: {} had unflushed writes on server instance {}, now instance {}: "
                "they may be lost; its next FLUSH fails",
                name, wire::instance_hex(*options.unflushed_in), wire::instance_hex(raw->instance));
      v.lost = true;
    }
    const uint32_t id = ++raw->next_vol;
    raw->vols[id] = std::move(v);
    raw->set_size(id, rep->size_bytes);
    VolumeInfo info{id, name, rep->size_bytes, rep->block_size, rep->flags, raw->instance};
    return info;
  });
}

Status Client::close_volume(uint32_t volume) {
  Impl* raw = impl_.get();
  auto handle = raw->on_thread([raw, volume]() -> std::optional<uint32_t> {
    auto it = raw->vols.find(volume);
    if (it == raw->vols.end()) return std::nullopt;
    it->second.closed = true;
    raw->set_log_cleared(it->second);  // kept writes go with the volume: flush before closing
    const bool current = it->second.session == raw->session_id;
    const uint32_t h = it->second.handle;
    raw->vols.erase(it);
    {
      std::lock_guard lock(raw->sizes_mu);
      raw->sizes.erase(volume);
    }
    if (!current) return 0U;
    return h;
  });
  if (!handle) return make_error(Errc::kNotFound, "no such open volume");
  if (*handle == 0) return {};
  auto [s, reply] = impl_->call(Opcode::kClose, *handle, {});
  (void)reply;
  if (s != StatusCode::kOk && s != StatusCode::kBadHandle)
    return make_error(Errc::kUnavailable, fmt::format("closing failed: {}",
                                                      wire::status_name(static_cast<uint32_t>(s))));
  return {};
}

uint64_t Client::volume_size(uint32_t volume) const {
  std::lock_guard lock(impl_->sizes_mu);
  auto it = impl_->sizes.find(volume);
  return it == impl_->sizes.end() ? 0 : it->second;
}

void Client::submit(Io* io) { impl_->submit(&io, 1); }
void Client::submit(Io* const* ios, size_t count) { impl_->submit(ios, count); }

ClientStats Client::stats() const {
  ClientStats out;
  {
    std::lock_guard lock(impl_->stats_mu);
    out = impl_->st;
  }
  out.submitted = impl_->submitted.load(std::memory_order_relaxed);
  out.completed = impl_->completed.load(std::memory_order_relaxed);
  out.errors = impl_->errors.load(std::memory_order_relaxed);
  out.retained_bytes = impl_->retained_bytes.load(std::memory_order_relaxed);
  return out;
}

std::vector<PathState> Client::paths() const {
  Impl* raw = impl_.get();
  return raw->on_thread([raw] {
    std::vector<PathState> out;
    for (auto& p : raw->paths)
      out.push_back({p->endpoint, p->ready, static_cast<uint32_t>(p->ios.size()), p->requests,
                     p->last_error});
    return out;
  });
}

void Client::break_path(size_t index) {
  Impl* raw = impl_.get();
  raw->on_thread([raw, index] {
    if (index < raw->paths.size() && raw->paths[index]->sock) {
      raw->paths[index]->last_error = "broken by request";
      error_code ec;
      raw->paths[index]->sock->close(ec);
    }
    return 0;
  });
}

}  // namespace rsio::client
