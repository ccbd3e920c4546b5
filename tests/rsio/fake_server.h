// A fake RSIO server for the client library's tests: the network peer at the OS boundary,
// with a disk that has a volatile write cache and a reboot() that loses it.
//
// It speaks the real protocol (wire codec and handshake cryptography of rsio_wire) on a real
// loopback socket, one volume, synchronously: a request is executed when it is read. FLUSHes
// are deferred at random, so that a reboot can find one in flight. A reboot closes every
// connection, forgets every session, drops the cache (what was not flushed or written with
// FUA is gone) and draws a new instance identity, unless `lie_about_instance` keeps the old
// one: a server that does that hides its data loss, which the tests use as a negative control.
//
// Thread model: one server thread runs the poll loop; reboot(), durable() and the counters
// may be called from any thread (the disk is guarded by mu_, reboots are handed to the server
// thread through an eventfd and waited for).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "rsio/auth.h"
#include "rsio/wire.h"

namespace rsio::test {

class FakeServer {
 public:
  struct Options {
    std::string node = "tux", key = "tuxkey", volume = "vol";
    uint64_t size_bytes = 1 << 20;
    uint16_t version = wire::kProtocolVersion;  // 1: no instance identity
    bool lie_about_instance = false;
    uint32_t defer_flush_percent = 50;  // FLUSHes answered only at a later loop turn
    uint64_t seed = 1;
  };

  explicit FakeServer(Options o)
      : opt_(std::move(o)), current_(opt_.size_bytes), durable_(opt_.size_bytes), rng_(opt_.seed) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(lfd_, 64);
    socklen_t len = sizeof(a);
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    efd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    new_instance();
    thread_ = std::thread([this] { run(); });
  }

  ~FakeServer() {
    stop_ = true;
    wake();
    thread_.join();
    for (auto& [fd, c] : conns_) ::close(fd);
    ::close(lfd_);
    ::close(efd_);
  }

  uint16_t port() const { return port_; }

  // Power cut and restart: returns once the server runs again.
  void reboot() {
    std::unique_lock lock(reboot_mu_);
    const uint64_t want = ++reboots_asked_;
    wake();
    reboot_cv_.wait(lock, [&] { return reboots_done_ >= want; });
  }

  // The durable bytes of [offset, offset + length).
  std::vector<uint8_t> durable(uint64_t offset, uint32_t length) {
    std::lock_guard lock(mu_);
    return {durable_.begin() + offset, durable_.begin() + offset + length};
  }

  // Every write after this fails with IO_ERROR until allowed again.
  void fail_writes(bool on) { fail_writes_ = on; }

  uint64_t flushes() const { return flushes_; }
  uint64_t writes() const { return writes_; }

 private:
  struct Conn {
    std::vector<uint8_t> in;
    enum { kHello, kAuth, kReady } state = kHello;
    std::vector<uint8_t> hello_frame;
    auth::Digest transcript{};
    uint64_t session = 0;
    uint32_t path = 0;
  };
  struct Deferred {
    int fd;
    uint64_t tag;
  };

  void wake() {
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(efd_, &one, sizeof(one));
  }

  void new_instance() {
    if (wire::instance_known(instance_) && opt_.lie_about_instance) return;
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto& b : instance_) b = static_cast<uint8_t>(byte(rng_));
  }

  void run() {
    while (!stop_) {
      std::vector<pollfd> fds{{lfd_, POLLIN, 0}, {efd_, POLLIN, 0}};
      for (auto& [fd, c] : conns_) fds.push_back({fd, POLLIN, 0});
      ::poll(fds.data(), fds.size(), deferred_.empty() ? 100 : 1);
      if (fds[1].revents & POLLIN) {
        uint64_t v;
        [[maybe_unused]] auto n = ::read(efd_, &v, sizeof(v));
        std::lock_guard lock(reboot_mu_);
        if (reboots_done_ < reboots_asked_) {
          do_reboot();
          reboots_done_ = reboots_asked_;
          reboot_cv_.notify_all();
          continue;
        }
      }
      if (fds[0].revents & POLLIN) {
        const int fd = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          const int one = 1;
          ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          conns_[fd] = Conn{};
        }
      }
      for (size_t i = 2; i < fds.size(); ++i)
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_conn(fds[i].fd);
      run_deferred(false);
    }
  }

  void do_reboot() {
    for (auto& [fd, c] : conns_) ::close(fd);
    conns_.clear();
    sessions_.clear();
    deferred_.clear();
    {
      std::lock_guard lock(mu_);
      current_ = durable_;
    }
    new_instance();
  }

  void close_conn(int fd) {
    ::close(fd);
    conns_.erase(fd);
    std::erase_if(deferred_, [fd](const Deferred& d) { return d.fd == fd; });
  }

  void read_conn(int fd) {
    uint8_t buf[256 * 1024];
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) return close_conn(fd);
    Conn& c = conns_[fd];
    c.in.insert(c.in.end(), buf, buf + n);
    size_t pos = 0;
    while (c.in.size() - pos >= wire::kRequestHeaderBytes) {
      const auto h = wire::decode_request_header(c.in.data() + pos);
      const size_t need = wire::kRequestHeaderBytes + h.payload_len;
      if (c.in.size() - pos < need) break;
      std::span<const uint8_t> frame(c.in.data() + pos, need);
      pos += need;
      if (!request(fd, c, h, frame)) return close_conn(fd);
      if (conns_.count(fd) == 0) return;
    }
    c.in.erase(c.in.begin(), c.in.begin() + static_cast<long>(pos));
  }

  void reply(int fd, uint8_t opcode, uint64_t tag, wire::StatusCode s,
             std::span<const uint8_t> payload = {}) {
    std::vector<uint8_t> out(wire::kReplyHeaderBytes);
    wire::ReplyHeader rh;
    rh.opcode = opcode;
    rh.status = static_cast<uint32_t>(s);
    rh.tag = tag;
    rh.payload_len = static_cast<uint32_t>(payload.size());
    wire::encode(rh, out.data());
    out.insert(out.end(), payload.begin(), payload.end());
    send_all(fd, out);
  }

  static void send_all(int fd, std::span<const uint8_t> out) {
    size_t off = 0;
    while (off < out.size()) {
      const ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;  // the reader notices the broken connection
      off += static_cast<size_t>(n);
    }
  }

  bool request(int fd, Conn& c, const wire::RequestHeader& h, std::span<const uint8_t> frame) {
    using wire::Opcode;
    using wire::StatusCode;
    auto payload = frame.subspan(wire::kRequestHeaderBytes);
    const auto o = static_cast<Opcode>(h.opcode);
    if (c.state == Conn::kHello) return hello(fd, c, h, frame);
    if (c.state == Conn::kAuth) return authenticate(fd, c, h, payload);
    switch (o) {
      case Opcode::kOpen: {
        wire::OpenReply r;
        r.handle = 1;
        r.block_size = 512;
        r.size_bytes = opt_.size_bytes;
        r.flags = wire::kVolFlush | wire::kVolFua | wire::kVolWriteZeroes | wire::kVolDiscard;
        std::vector<uint8_t> out;
        encode_payload(r, out);
        reply(fd, h.opcode, h.tag, StatusCode::kOk, out);
        return true;
      }
      case Opcode::kKeepalive:
      case Opcode::kClose:
        reply(fd, h.opcode, h.tag, StatusCode::kOk);
        return true;
      case Opcode::kFence: {
        // Requests run when read: only deferred FLUSHes of the fenced path can be open.
        wire::Reader r(payload);
        const uint32_t path = r.u32();
        for (auto& [ofd, oc] : conns_)
          if (ofd != fd && oc.session == c.session && oc.path == path) ::shutdown(ofd, SHUT_RDWR);
        reply(fd, h.opcode, h.tag, StatusCode::kOk);
        return true;
      }
      case Opcode::kFlush:
        if (std::uniform_int_distribution<uint32_t>(0, 99)(rng_) < opt_.defer_flush_percent) {
          deferred_.push_back({fd, h.tag});
          return true;
        }
        flush();
        reply(fd, h.opcode, h.tag, StatusCode::kOk);
        return true;
      case Opcode::kRead: {
        if (h.offset + h.length > opt_.size_bytes) break;
        std::vector<uint8_t> data(h.length);
        {
          std::lock_guard lock(mu_);
          std::memcpy(data.data(), current_.data() + h.offset, h.length);
        }
        reply(fd, h.opcode, h.tag, StatusCode::kOk, data);
        return true;
      }
      case Opcode::kWrite:
      case Opcode::kWriteZeroes:
      case Opcode::kDiscard: {
        if (h.offset + h.length > opt_.size_bytes) break;
        if (fail_writes_) {
          reply(fd, h.opcode, h.tag, StatusCode::kIoError);
          return true;
        }
        ++writes_;
        std::lock_guard lock(mu_);
        if (o == Opcode::kWrite)
          std::memcpy(current_.data() + h.offset, payload.data(), h.length);
        else
          std::memset(current_.data() + h.offset, 0, h.length);
        if (h.flags & wire::kFlagFua)
          std::memcpy(durable_.data() + h.offset, current_.data() + h.offset, h.length);
        reply(fd, h.opcode, h.tag, StatusCode::kOk);
        return true;
      }
      default:
        break;
    }
    reply(fd, h.opcode, h.tag, StatusCode::kInvalid);
    return true;
  }

  void flush() {
    ++flushes_;
    std::lock_guard lock(mu_);
    durable_ = current_;
  }

  // Answers the deferred FLUSHes, each with an even chance per turn (all when `all`).
  void run_deferred(bool all) {
    std::vector<Deferred> keep;
    for (const Deferred& d : deferred_) {
      if (!all && std::uniform_int_distribution<int>(0, 1)(rng_) == 0) {
        keep.push_back(d);
        continue;
      }
      flush();
      reply(d.fd, static_cast<uint8_t>(wire::Opcode::kFlush), d.tag, wire::StatusCode::kOk);
    }
    deferred_.swap(keep);
  }

  bool hello(int fd, Conn& c, const wire::RequestHeader& h, std::span<const uint8_t> frame) {
    auto m = wire::decode_hello(frame.subspan(wire::kRequestHeaderBytes));
    if (h.opcode != static_cast<uint8_t>(wire::Opcode::kHello) || !m) return false;
    wire::HelloReply hr;
    hr.version = std::min(m->version_max, opt_.version);
    hr.instance = instance_;
    auth::random_bytes(hr.server_nonce);
    std::vector<uint8_t> payload;
    encode_payload(hr, payload);
    std::vector<uint8_t> out(wire::kReplyHeaderBytes);
    wire::ReplyHeader rh;
    rh.opcode = h.opcode;
    rh.tag = h.tag;
    rh.payload_len = static_cast<uint32_t>(payload.size());
    wire::encode(rh, out.data());
    out.insert(out.end(), payload.begin(), payload.end());
    auth::Transcript t;
    t.add(frame);
    t.add(out);
    c.transcript = t.finish();
    c.hello_frame.assign(frame.begin(), frame.end());
    c.state = Conn::kAuth;
    send_all(fd, out);
    return true;
  }

  bool authenticate(int fd, Conn& c, const wire::RequestHeader& h,
                    std::span<const uint8_t> payload) {
    const auth::Digest cp = auth::client_proof(opt_.key, c.transcript);
    if (payload.size() != cp.size() || !auth::equal(payload, cp)) {
      reply(fd, h.opcode, h.tag, wire::StatusCode::kAuthFailed);
      return false;
    }
    auto hello = wire::decode_hello(std::span<const uint8_t>(c.hello_frame).subspan(
        wire::kRequestHeaderBytes));
    if (hello->mode == 1) {
      if (sessions_.count(hello->session_id) == 0) {
        reply(fd, h.opcode, h.tag, wire::StatusCode::kNoSession);
        return false;
      }
      c.session = hello->session_id;
    } else {
      c.session = ++next_session_ + (uint64_t{reboots_done_} << 32);
      sessions_[c.session] = 0;
    }
    c.path = ++sessions_[c.session];
    c.state = Conn::kReady;
    wire::AuthOk ok;
    ok.server_proof = auth::server_proof(opt_.key, c.transcript, cp);
    ok.session_id = c.session;
    ok.path_id = c.path;
    std::vector<uint8_t> out;
    encode_payload(ok, out);
    reply(fd, h.opcode, h.tag, wire::StatusCode::kOk, out);
    return true;
  }

  Options opt_;
  int lfd_ = -1, efd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> fail_writes_{false};
  std::atomic<uint64_t> flushes_{0}, writes_{0};

  std::mutex mu_;
  std::vector<uint8_t> current_, durable_;  // GUARDED_BY(mu_)

  std::mutex reboot_mu_;
  std::condition_variable reboot_cv_;
  uint64_t reboots_asked_ = 0, reboots_done_ = 0;  // GUARDED_BY(reboot_mu_)

  // Server thread only.
  std::mt19937_64 rng_;
  wire::InstanceId instance_{};
  std::map<int, Conn> conns_;
  std::map<uint64_t, uint32_t> sessions_;  // session -> paths made
  std::vector<Deferred> deferred_;
  uint64_t next_session_ = 0;
};

}  // namespace rsio::test
