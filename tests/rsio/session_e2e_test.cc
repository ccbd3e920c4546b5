// End-to-end tests of the RSIO protocol against a real rsiod on loopback: the client library
// (list, open, I/O, read-only grants, revocation, wrong keys), the conformance table of
// docs/wire-protocol.md (one case per rule, through raw frames), authentication attacks,
// access control, connection floods, and kill -9 restarts under a verifying load.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "../e2e/process.h"
#include "raw_conn.h"
#include "rsio/client.h"
#include "test_client.h"

namespace rsio::test {
namespace {

using wire::Opcode;
using wire::StatusCode;

const std::string kLoad = kBin + "/rsio/rsio-load";

constexpr uint64_t kVolBytes = 64ULL << 20;

uint8_t op(Opcode o) { return static_cast<uint8_t>(o); }

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

class RsioSession : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rsio-proto-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    daemon_ = std::make_unique<Daemon>(kRsiod, dir_ + "/state", dir_ + "/rsiod.sock");
  }
  void TearDown() override {
    daemon_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start(std::vector<std::string> extra = {}) {
    extra.insert(extra.begin(), {"--init-pool-size", "1g"});
    ASSERT_TRUE(daemon_->start(extra)) << daemon_->log();
    port_ = daemon_->rsio_port();
    ASSERT_NE(port_, 0) << daemon_->log();
  }

  // The standard set-up: tux has vol1 (rw) and vol3 (ro); bob has vol2.
  void populate() {
    cli("smgr -c vol1 -S 64m");
    cli("smgr -c vol2 -S 64m");
    cli("smgr -c vol3 -S 64m");
    cli("rsadmin -c tux -k tuxkey");
    cli("rsadmin -c bob -k bobkey");
    cli("rsadmin -g vol1 tux");
    cli("rsadmin -g vol2 bob");
    cli("rsadmin -g vol3 tux --read-only");
  }

  void cli(const std::string& line) {
    auto words = split_words(line);
    words[0] = words[0] == "smgr" ? kSmgr : kRsadmin;
    RunOptions opt;
    opt.env.push_back("RSIO_SOCKET=" + daemon_->socket());
    auto r = run(words, opt);
    ASSERT_EQ(r.exit_code, 0) << line << "\n" << r.err;
  }

  std::unique_ptr<client::Client> connect(const std::string& node, const std::string& key,
                                          uint32_t paths = 1) {
    client::ClientOptions o;
    o.node_name = node;
    o.node_key = key;
    for (uint32_t i = 0; i < paths; ++i) o.paths.push_back({"127.0.0.1", port_, ""});
    auto c = client::Client::connect(o);
    EXPECT_TRUE(c) << c.error().message;
    return c ? std::move(*c) : nullptr;
  }

  // An authenticated raw connection of tux with vol1 open; returns the handle.
  uint32_t raw_tux(RawConn& rc) {
    EXPECT_TRUE(rc.connect(port_));
    auto hs = rc.handshake("tux", "tuxkey");
    EXPECT_TRUE(hs.ok.has_value());
    auto r = rc.open("vol1", false, 10);
    EXPECT_TRUE(r && r->h.status == 0);
    auto rep = wire::decode_open_reply(r->payload);
    EXPECT_TRUE(rep.has_value());
    return rep ? rep->handle : 0;
  }

  std::string dir_;
  std::unique_ptr<Daemon> daemon_;
  uint16_t port_ = 0;
};

TEST_F(RsioSession, ListOpenAndEveryOpcodeByteExact) {
  start();
  populate();
  auto c = connect("tux", "tuxkey");
  ASSERT_TRUE(c);
  auto vols = c->list();
  ASSERT_TRUE(vols);
  ASSERT_EQ(vols->size(), 2u);
  EXPECT_EQ((*vols)[0].name, "vol1");
  EXPECT_EQ((*vols)[0].size_bytes, kVolBytes);
  EXPECT_FALSE((*vols)[0].read_only);
  EXPECT_EQ((*vols)[1].name, "vol3");
  EXPECT_TRUE((*vols)[1].read_only);

  auto v = c->open("vol1");
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->size_bytes, kVolBytes);
  EXPECT_EQ(v->block_size, 512u);
  EXPECT_FALSE(v->read_only());

  std::vector<uint8_t> data(1 << 20), back(1 << 20);
  std::mt19937 rng(7);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  const uint64_t off = 5ULL << 20;
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kWrite, off, 1 << 20, data.data()), StatusCode::kOk);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kRead, off, 1 << 20, back.data()), StatusCode::kOk);
  EXPECT_EQ(data, back);
  // FUA write of the last block of the volume.
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kWrite, kVolBytes - 4096, 4096, data.data(), true),
            StatusCode::kOk);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kRead, kVolBytes - 4096, 4096, back.data()),
            StatusCode::kOk);
  EXPECT_EQ(0, std::memcmp(data.data(), back.data(), 4096));
  // Discard and write-zeroes read back as zeroes; the bytes around them stay.
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kDiscard, off, 65536, nullptr), StatusCode::kOk);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kWriteZeroes, off + 131072, 8192, nullptr), StatusCode::kOk);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kRead, off, 1 << 20, back.data()), StatusCode::kOk);
  std::vector<uint8_t> expect = data;
  std::fill(expect.begin(), expect.begin() + 65536, 0);
  std::fill(expect.begin() + 131072, expect.begin() + 131072 + 8192, 0);
  EXPECT_EQ(expect, back);

  // rsadmin sees the session, its path and the open volume.
  RunOptions ro;
  ro.env.push_back("RSIO_SOCKET=" + daemon_->socket());
  auto l = run({kRsadmin, "-lvvv"}, ro);
  EXPECT_NE(l.out.find("tux"), std::string::npos) << l.out;
  EXPECT_NE(l.out.find("IP(TCP) 127.0.0.1/" + std::to_string(port_) + "<->127.0.0.1/"),
            std::string::npos)
      << l.out;
  EXPECT_NE(l.out.find("connected  tx: ok rx: ok"), std::string::npos) << l.out;
  auto qa = run({kRsadmin, "-qA"}, ro);
  EXPECT_NE(qa.out.find("vol1                  1 tux"), std::string::npos) << qa.out;
  EXPECT_NE(qa.out.find("RW"), std::string::npos) << qa.out;
}

// Without an I/O thread the caller drives the library with poll(): completions run there.
TEST_F(RsioSession, CallerDrivenClientCompletesInsidePoll) {
  start();
  populate();
  client::ClientOptions o;
  o.node_name = "tux";
  o.node_key = "tuxkey";
  o.caller_driven = true;
  o.paths.push_back({"127.0.0.1", port_, ""});
  auto c = client::Client::connect(o);
  ASSERT_TRUE(c) << c.error().message;
  auto v = (*c)->open("vol1");
  ASSERT_TRUE(v) << v.error().message;
  const auto me = std::this_thread::get_id();
  struct Done {
    int count = 0;
    bool other_thread = false;
    std::thread::id me;
  } d{0, false, me};
  std::vector<std::vector<uint8_t>> bufs(16, std::vector<uint8_t>(4096));
  std::vector<client::Io> ios(16);
  for (size_t i = 0; i < ios.size(); ++i) {
    std::fill(bufs[i].begin(), bufs[i].end(), static_cast<uint8_t>(i + 1));
    ios[i].op = Opcode::kWrite;
    ios[i].volume = v->id;
    ios[i].offset = i * 4096;
    ios[i].length = 4096;
    ios[i].buf = bufs[i].data();
    ios[i].user = &d;
    ios[i].done = [](client::Io* io, StatusCode s) {
      auto* dd = static_cast<Done*>(io->user);
      EXPECT_EQ(s, StatusCode::kOk);
      dd->other_thread = dd->other_thread || std::this_thread::get_id() != dd->me;
      ++dd->count;
    };
    (*c)->submit(&ios[i]);
  }
  EXPECT_EQ(d.count, 0) << "nothing completes before poll()";
  for (int i = 0; i < 1000 && d.count < 16; ++i) (*c)->poll(100);
  EXPECT_EQ(d.count, 16);
  EXPECT_FALSE(d.other_thread);
  // Read back one block through the same mode.
  std::vector<uint8_t> back(4096);
  client::Io rd;
  rd.op = Opcode::kRead;
  rd.volume = v->id;
  rd.offset = 5 * 4096;
  rd.length = 4096;
  rd.buf = back.data();
  bool got = false;
  rd.user = &got;
  rd.done = [](client::Io* io, StatusCode s) {
    EXPECT_EQ(s, StatusCode::kOk);
    *static_cast<bool*>(io->user) = true;
  };
  (*c)->submit(&rd);
  for (int i = 0; i < 1000 && !got; ++i) (*c)->poll(100);
  ASSERT_TRUE(got);
  EXPECT_EQ(back, bufs[5]);
}

TEST_F(RsioSession, ReadOnlyGrantRefusesWritesAndRevokeStopsIoAtOnce) {
  start();
  populate();
  auto c = connect("tux", "tuxkey");
  ASSERT_TRUE(c);
  // Asked read-write, the read-only grant opens read-only.
  auto v3 = c->open("vol3");
  ASSERT_TRUE(v3);
  EXPECT_TRUE(v3->read_only());
  std::vector<uint8_t> buf(4096, 0xab);
  EXPECT_EQ(io_sync(*c, v3->id, Opcode::kRead, 0, 4096, buf.data()), StatusCode::kOk);
  for (Opcode o : {Opcode::kWrite, Opcode::kDiscard, Opcode::kWriteZeroes})
    EXPECT_EQ(io_sync(*c, v3->id, o, 0, 4096, buf.data()), StatusCode::kReadOnly);

  auto v1 = c->open("vol1");
  ASSERT_TRUE(v1);
  EXPECT_EQ(io_sync(*c, v1->id, Opcode::kWrite, 0, 4096, buf.data()), StatusCode::kOk);
  cli("rsadmin -r vol1 tux");
  // The revocation is applied before rsadmin returns: the very next request fails.
  EXPECT_EQ(io_sync(*c, v1->id, Opcode::kRead, 0, 4096, buf.data()), StatusCode::kRevoked);
  EXPECT_EQ(io_sync(*c, v1->id, Opcode::kWrite, 0, 4096, buf.data()), StatusCode::kRevoked);
  // And a new open is refused like any volume that is not granted.
  auto again = c->open("vol1");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::kNotFound);
}

// A grown volume's new size reaches open handles; a SIGTERM restart of rsiod (SHUTDOWN
// notification, new session, volumes re-opened) is invisible to I/O within the hold time.
TEST_F(RsioSession, ResizeIsNotifiedAndAGracefulRestartIsInvisible) {
  const uint16_t port = free_port();
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  start({"--listen", listen});
  populate();
  auto c = connect("tux", "tuxkey");
  ASSERT_TRUE(c);
  auto v = c->open("vol1");
  ASSERT_TRUE(v);
  EXPECT_EQ(c->volume_size(v->id), kVolBytes);
  cli("smgr -r vol1 -S 128m");
  // The notification is asynchronous: poll the library's view for up to 10 s.
  for (int i = 0; i < 500 && c->volume_size(v->id) != 2 * kVolBytes; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(c->volume_size(v->id), 2 * kVolBytes);
  std::vector<uint8_t> buf(4096, 0x42), back(4096);
  // The new end of the volume is writable.
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kWrite, 2 * kVolBytes - 4096, 4096, buf.data()),
            StatusCode::kOk);
  EXPECT_EQ(daemon_->stop(), 0);
  // A write submitted while rsiod is down waits, then completes once it is back.
  Waiter w;
  client::Io io;
  io.op = Opcode::kWrite;
  io.volume = v->id;
  io.offset = 8192;
  io.length = 4096;
  io.buf = buf.data();
  io.user = &w;
  io.done = [](client::Io* i, StatusCode s) {
    auto* wt = static_cast<Waiter*>(i->user);
    std::lock_guard lock(wt->mu);
    wt->status = s;
    wt->done = true;
    wt->cv.notify_one();
  };
  c->submit(&io);
  ASSERT_TRUE(daemon_->start({"--listen", listen})) << daemon_->log();
  {
    std::unique_lock lock(w.mu);
    ASSERT_TRUE(w.cv.wait_for(lock, std::chrono::seconds(30), [&] { return w.done; }));
    EXPECT_EQ(w.status, StatusCode::kOk);
  }
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kRead, 8192, 4096, back.data()), StatusCode::kOk);
  EXPECT_EQ(buf, back);
  EXPECT_GE(c->stats().sessions, 2u);
}

TEST_F(RsioSession, WrongKeyOrUnknownNodeIsRefused) {
  start();
  populate();
  client::ClientOptions o;
  o.node_name = "tux";
  o.node_key = "not-the-key";
  o.paths.push_back({"127.0.0.1", port_, ""});
  auto c = client::Client::connect(o);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Errc::kPermissionDenied) << c.error().message;
  o.node_name = "nobody";
  c = client::Client::connect(o);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, Errc::kPermissionDenied) << c.error().message;
}

// docs/wire-protocol.md §2.3 and §4.2, one case per rule.
TEST_F(RsioSession, ConformanceTableEachRuleGetsItsErrorOrDisconnect) {
  start();
  populate();
  // A bystander session that must keep working through all of it.
  auto bystander = connect("tux", "tuxkey");
  ASSERT_TRUE(bystander);
  auto bv = bystander->open("vol1");
  ASSERT_TRUE(bv);
  std::vector<uint8_t> buf(8192);
  auto bystander_ok = [&] {
    EXPECT_EQ(io_sync(*bystander, bv->id, Opcode::kRead, 0, 4096, buf.data()), StatusCode::kOk);
  };

  RawConn rc;
  const uint32_t handle = raw_tux(rc);
  ASSERT_NE(handle, 0u);
  struct Case {
    const char* name;
    wire::RequestHeader h;
    StatusCode expect;
  };
  auto hdr = [&](Opcode o, uint64_t offset, uint32_t length, uint8_t flags = 0) {
    wire::RequestHeader h;
    h.opcode = op(o);
    h.flags = flags;
    h.handle = handle;
    h.offset = offset;
    h.length = length;
    return h;
  };
  wire::RequestHeader unknown = hdr(Opcode::kRead, 0, 4096);
  unknown.opcode = 0x77;
  wire::RequestHeader other_handle = hdr(Opcode::kRead, 0, 4096);
  other_handle.handle = handle + 100;
  wire::RequestHeader reserved = hdr(Opcode::kRead, 0, 4096);
  reserved.reserved = 1;
  const std::vector<Case> cases = {
      {"zero length", hdr(Opcode::kRead, 0, 0), StatusCode::kInvalid},
      {"beyond end", hdr(Opcode::kRead, kVolBytes, 4096), StatusCode::kOutOfRange},
      {"straddles end", hdr(Opcode::kRead, kVolBytes - 512, 1024), StatusCode::kOutOfRange},
      {"offset+length wraps", hdr(Opcode::kRead, UINT64_MAX - 511, 1024), StatusCode::kOutOfRange},
      {"misaligned offset", hdr(Opcode::kRead, 100, 512), StatusCode::kInvalid},
      {"misaligned length", hdr(Opcode::kRead, 0, 100), StatusCode::kInvalid},
      {"max payload", hdr(Opcode::kRead, 0, wire::kMaxIo), StatusCode::kOk},
      {"max payload + 1 block", hdr(Opcode::kRead, 0, wire::kMaxIo + 512), StatusCode::kInvalid},
      {"unknown opcode", unknown, StatusCode::kInvalid},
      {"unknown flag", hdr(Opcode::kRead, 0, 4096, 0x80), StatusCode::kInvalid},
      {"FUA on a read", hdr(Opcode::kRead, 0, 4096, wire::kFlagFua), StatusCode::kInvalid},
      {"reserved field set", reserved, StatusCode::kInvalid},
      {"flush with a range", hdr(Opcode::kFlush, 0, 4096), StatusCode::kInvalid},
      {"handle not open in this session", other_handle, StatusCode::kBadHandle},
      {"discard beyond end", hdr(Opcode::kDiscard, kVolBytes - 4096, 8192),
       StatusCode::kOutOfRange},
  };
  uint64_t tag = 100;
  for (const Case& c : cases) {
    wire::RequestHeader h = c.h;
    h.tag = ++tag;
    ASSERT_TRUE(rc.send_request(h)) << c.name;
    auto r = rc.recv_reply();
    ASSERT_TRUE(r) << c.name << ": connection closed";
    EXPECT_EQ(r->h.tag, h.tag) << c.name;
    EXPECT_EQ(r->h.status, static_cast<uint32_t>(c.expect))
        << c.name << ": got " << wire::status_name(r->h.status);
    const uint32_t want_payload =
        c.expect == StatusCode::kOk && h.opcode == op(Opcode::kRead) ? h.length : 0;
    EXPECT_EQ(r->h.payload_len, want_payload) << c.name;
  }
  // A write whose header is invalid has its payload skipped; the stream stays in step.
  {
    wire::RequestHeader h = hdr(Opcode::kWrite, kVolBytes, 4096);
    h.tag = ++tag;
    h.payload_len = 4096;
    ASSERT_TRUE(rc.send_request(h, std::vector<uint8_t>(4096, 1)));
    auto r = rc.recv_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->h.status, static_cast<uint32_t>(StatusCode::kOutOfRange));
    h = hdr(Opcode::kRead, 0, 512);
    h.tag = ++tag;
    ASSERT_TRUE(rc.send_request(h));
    r = rc.recv_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->h.status, 0u);
    EXPECT_EQ(r->h.tag, h.tag);
  }
  bystander_ok();

  // Rules that cost the connection.
  {
    SCOPED_TRACE("write payload max + 1");
    RawConn c2;
    const uint32_t h2 = raw_tux(c2);
    wire::RequestHeader h = hdr(Opcode::kWrite, 0, wire::kMaxIo + 512);
    h.handle = h2;
    h.tag = 1000;
    h.payload_len = wire::kMaxIo + 512;
    ASSERT_TRUE(c2.send_request(h));
    EXPECT_TRUE(c2.closed_by_server());
  }
  bystander_ok();
  {
    SCOPED_TRACE("duplicate tag in flight");
    RawConn c2;
    const uint32_t h2 = raw_tux(c2);
    wire::RequestHeader h = hdr(Opcode::kRead, 0, 4096);
    h.handle = h2;
    h.tag = 77;
    std::vector<uint8_t> two(2 * wire::kRequestHeaderBytes);
    wire::encode(h, two.data());
    wire::encode(h, two.data() + wire::kRequestHeaderBytes);
    ASSERT_TRUE(c2.send_all(two.data(), two.size()));
    EXPECT_TRUE(c2.closed_by_server());
  }
  bystander_ok();
  {
    SCOPED_TRACE("request before authentication");
    RawConn c2;
    ASSERT_TRUE(c2.connect(port_));
    wire::RequestHeader h = hdr(Opcode::kRead, 0, 4096);
    h.tag = 1;
    ASSERT_TRUE(c2.send_request(h));
    EXPECT_TRUE(c2.closed_by_server());
  }
  {
    SCOPED_TRACE("LIST before authentication");
    RawConn c2;
    ASSERT_TRUE(c2.connect(port_));
    wire::RequestHeader h;
    h.opcode = op(Opcode::kList);
    h.tag = 1;
    ASSERT_TRUE(c2.send_request(h));
    EXPECT_TRUE(c2.closed_by_server());
  }
  {
    SCOPED_TRACE("oversized handshake");
    RawConn c2;
    ASSERT_TRUE(c2.connect(port_));
    wire::RequestHeader h;
    h.opcode = op(Opcode::kHello);
    h.tag = 1;
    h.payload_len = wire::kMaxHandshakePayload + 1;
    ASSERT_TRUE(c2.send_request(h, std::vector<uint8_t>(h.payload_len, 'a')));
    EXPECT_TRUE(c2.closed_by_server());
  }
  {
    SCOPED_TRACE("malformed HELLO");
    RawConn c2;
    ASSERT_TRUE(c2.connect(port_));
    wire::RequestHeader h;
    h.opcode = op(Opcode::kHello);
    h.tag = 1;
    h.payload_len = 20;
    ASSERT_TRUE(c2.send_request(h, std::vector<uint8_t>(20, 0)));
    EXPECT_TRUE(c2.closed_by_server());
  }
  {
    SCOPED_TRACE("a control payload over 4 KiB after authentication");
    RawConn c2;
    raw_tux(c2);
    wire::RequestHeader h;
    h.opcode = op(Opcode::kOpen);
    h.tag = 5;
    h.payload_len = wire::kMaxControlPayload + 1;
    ASSERT_TRUE(c2.send_request(h, std::vector<uint8_t>(h.payload_len, 'a')));
    EXPECT_TRUE(c2.closed_by_server());
  }
  bystander_ok();
}

TEST_F(RsioSession, MemoryStaysFlatOverAMillionMalformedRequests) {
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer keeps freed memory in quarantine, so RSS grows by design.
  GTEST_SKIP() << "RSS is not meaningful under AddressSanitizer (rsiod is built with it too)";
#endif
  start();
  populate();
  RawConn rc;
  const uint32_t handle = raw_tux(rc);
  ASSERT_NE(handle, 0u);
  constexpr size_t kTotal = 1'000'000, kBatch = 2000;
  // Replies are drained by a second thread so neither side blocks on a full socket.
  std::atomic<size_t> replies{0};
  std::atomic<bool> bad{false};
  std::thread reader([&] {
    std::vector<uint8_t> buf(1 << 16);
    size_t have = 0;
    while (replies < kTotal + 1) {
      const ssize_t n = ::recv(rc.fd(), buf.data() + have, buf.size() - have, 0);
      if (n <= 0) {
        bad = true;
        return;
      }
      have += static_cast<size_t>(n);
      size_t pos = 0;
      while (have - pos >= wire::kReplyHeaderBytes) {
        auto h = wire::decode_reply_header(buf.data() + pos);
        const bool last = replies == kTotal && h.tag == 1 && h.status == 0;
        if (h.payload_len != 0 ||
            (!last && h.status != static_cast<uint32_t>(StatusCode::kInvalid) &&
             h.status != static_cast<uint32_t>(StatusCode::kOutOfRange) &&
             h.status != static_cast<uint32_t>(StatusCode::kBadHandle))) {
          bad = true;
          return;
        }
        pos += wire::kReplyHeaderBytes;
        ++replies;
      }
      std::memmove(buf.data(), buf.data() + pos, have - pos);
      have -= pos;
    }
  });
  long rss_warm = 0;
  std::vector<uint8_t> batch(kBatch * wire::kRequestHeaderBytes);
  for (size_t sent = 0; sent < kTotal; sent += kBatch) {
    for (size_t i = 0; i < kBatch; ++i) {
      wire::RequestHeader h;
      const size_t n = sent + i;
      h.tag = n + 1000;
      h.handle = handle;
      switch (n % 4) {
        case 0:
          h.opcode = op(Opcode::kRead);
          break;  // zero length
        case 1:
          h.opcode = op(Opcode::kRead);
          h.offset = UINT64_MAX - 511;
          h.length = 1024;
          break;
        case 2:
          h.opcode = 0x99;
          break;
        default:
          h.opcode = op(Opcode::kWrite);
          h.handle = handle + 1;
          h.length = 0;
          break;
      }
      wire::encode(h, batch.data() + i * wire::kRequestHeaderBytes);
    }
    ASSERT_TRUE(rc.send_all(batch.data(), batch.size()));
    if (sent == 100'000) rss_warm = rss_kib(daemon_->pid());
  }
  // A last valid request shows the connection is still in step.
  wire::RequestHeader last;
  last.opcode = op(Opcode::kKeepalive);
  last.tag = 1;
  ASSERT_TRUE(rc.send_request(last));
  reader.join();
  EXPECT_FALSE(bad.load());
  EXPECT_EQ(replies.load(), kTotal + 1);
  const long rss_end = rss_kib(daemon_->pid());
  RecordProperty("rss_warm_kib", std::to_string(rss_warm));
  RecordProperty("rss_end_kib", std::to_string(rss_end));
  std::printf("rsiod RSS after 10^5 malformed requests: %ld KiB, after 10^6: %ld KiB\n", rss_warm,
              rss_end);
  EXPECT_LT(rss_end - rss_warm, 8 * 1024) << "rsiod grew by " << rss_end - rss_warm << " KiB";
}

TEST_F(RsioSession, ReplayedOrReflectedHandshakesFail) {
  start();
  populate();
  // A legitimate handshake, recorded.
  RawConn good;
  ASSERT_TRUE(good.connect(port_));
  auto hs = good.handshake("tux", "tuxkey");
  ASSERT_TRUE(hs.ok.has_value());
  // Replay: the same HELLO and AUTH frames on a new connection. The server's nonce is new,
  // so the recorded proof does not match.
  {
    RawConn replay;
    ASSERT_TRUE(replay.connect(port_));
    ASSERT_TRUE(replay.send_all(hs.hello_frame.data(), hs.hello_frame.size()));
    auto r = replay.recv_reply();
    ASSERT_TRUE(r);
    EXPECT_NE(r->frame, hs.hello_reply) << "the server reused its nonce";
    ASSERT_TRUE(replay.send_all(hs.auth_frame.data(), hs.auth_frame.size()));
    r = replay.recv_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->h.status, static_cast<uint32_t>(StatusCode::kAuthFailed));
    EXPECT_TRUE(replay.closed_by_server());
  }
  // Reflection: the server's own proof (from the good session) offered back as a client
  // proof, and a proof over the transcript with the server's label, both fail.
  {
    RawConn refl;
    ASSERT_TRUE(refl.connect(port_));
    ASSERT_TRUE(refl.send_all(hs.hello_frame.data(), hs.hello_frame.size()));
    auto r = refl.recv_reply();
    ASSERT_TRUE(r);
    auth::Transcript t;
    t.add(hs.hello_frame);
    t.add(r->frame);
    const auto transcript = t.finish();
    // Without the key an attacker cannot compute any proof; with it, the server-direction
    // proof must still not be accepted as the client's.
    const auth::Digest wrong_direction = auth::server_proof("tuxkey", transcript, auth::Digest{});
    wire::RequestHeader h;
    h.opcode = op(Opcode::kAuth);
    h.tag = 2;
    h.payload_len = wire::kProofBytes;
    ASSERT_TRUE(
        refl.send_request(h, std::vector<uint8_t>(wrong_direction.begin(), wrong_direction.end())));
    r = refl.recv_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->h.status, static_cast<uint32_t>(StatusCode::kAuthFailed));
  }
  {
    RawConn refl;
    ASSERT_TRUE(refl.connect(port_));
    ASSERT_TRUE(refl.send_all(hs.hello_frame.data(), hs.hello_frame.size()));
    ASSERT_TRUE(refl.recv_reply());
    wire::RequestHeader h;
    h.opcode = op(Opcode::kAuth);
    h.tag = 2;
    h.payload_len = wire::kProofBytes;
    ASSERT_TRUE(refl.send_request(
        h, std::vector<uint8_t>(hs.ok->server_proof.begin(), hs.ok->server_proof.end())));
    auto r = refl.recv_reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->h.status, static_cast<uint32_t>(StatusCode::kAuthFailed));
  }
  // Joining tux's session with bob's valid credentials is refused.
  {
    RawConn join;
    ASSERT_TRUE(join.connect(port_));
    auto j = join.handshake("bob", "bobkey", hs.ok->session_id);
    EXPECT_FALSE(j.ok.has_value());
    EXPECT_EQ(j.status, static_cast<uint32_t>(StatusCode::kNoSession));
  }
}

TEST_F(RsioSession, ANodeReachesNoByteOfAVolumeGrantedToAnother) {
  start();
  populate();
  // tux writes a pattern into vol1.
  auto tux = connect("tux", "tuxkey");
  ASSERT_TRUE(tux);
  auto v1 = tux->open("vol1");
  ASSERT_TRUE(v1);
  std::vector<uint8_t> pattern(65536, 0x5c), back(65536);
  ASSERT_EQ(io_sync(*tux, v1->id, Opcode::kWrite, 0, 65536, pattern.data()), StatusCode::kOk);

  // bob: OPEN of vol1 is NOT_FOUND like a volume that does not exist.
  RawConn bob;
  ASSERT_TRUE(bob.connect(port_));
  ASSERT_TRUE(bob.handshake("bob", "bobkey").ok.has_value());
  for (bool ro : {false, true}) {
    auto r = bob.open("vol1", ro, 50 + ro);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->h.status, static_cast<uint32_t>(StatusCode::kNotFound));
  }
  // Every opcode with tux's handle number (and a range around it) is BAD_HANDLE.
  uint64_t tag = 100;
  for (uint32_t handle = 0; handle < 8; ++handle)
    for (Opcode o : {Opcode::kRead, Opcode::kWrite, Opcode::kFlush, Opcode::kDiscard,
                     Opcode::kWriteZeroes, Opcode::kClose}) {
      wire::RequestHeader h;
      h.opcode = op(o);
      h.handle = handle;
      h.tag = ++tag;
      h.length = o == Opcode::kFlush || o == Opcode::kClose ? 0 : 4096;
      std::vector<uint8_t> payload;
      if (o == Opcode::kWrite) {
        h.payload_len = 4096;
        payload.assign(4096, 0xee);
      }
      ASSERT_TRUE(bob.send_request(h, payload));
      auto r = bob.recv_reply();
      ASSERT_TRUE(r);
      EXPECT_EQ(r->h.status, static_cast<uint32_t>(StatusCode::kBadHandle))
          << wire::opcode_name(h.opcode) << " handle " << handle;
      EXPECT_EQ(r->h.payload_len, 0u);
    }
  ASSERT_EQ(io_sync(*tux, v1->id, Opcode::kRead, 0, 65536, back.data()), StatusCode::kOk);
  EXPECT_EQ(pattern, back);
}

TEST_F(RsioSession, AThousandUnauthenticatedConnectionsDoNotStopAClient) {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max < 2600)
    GTEST_SKIP() << "needs 2600 file descriptors, hard limit is " << rl.rlim_max;
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);  // rsiod inherits it
  start();
  populate();
  auto c = connect("tux", "tuxkey");
  ASSERT_TRUE(c);
  auto v = c->open("vol1");
  ASSERT_TRUE(v);
  std::vector<RawConn> flood(1000);
  for (auto& f : flood) ASSERT_TRUE(f.connect(port_));
  // Half of them send a partial HELLO header and stall.
  for (size_t i = 0; i < flood.size(); i += 2) flood[i].send_all("\x01\x00\x00", 3);
  std::vector<uint8_t> buf(4096);
  for (int i = 0; i < 200; ++i)
    ASSERT_EQ(io_sync(*c, v->id, Opcode::kRead, static_cast<uint64_t>(i) * 4096, 4096, buf.data()),
              StatusCode::kOk);
  // A new client still gets in: the oldest unauthenticated connections make room.
  auto late = connect("bob", "bobkey");
  ASSERT_TRUE(late);
  auto v2 = late->open("vol2");
  ASSERT_TRUE(v2);
  EXPECT_EQ(io_sync(*late, v2->id, Opcode::kRead, 0, 4096, buf.data()), StatusCode::kOk);
}

// kill -9 of rsiod under a verifying write load, restarted on the same port within the hold
// time, 20 times: the caller sees no error and every acknowledged write reads back.
// The block size comes from the volume: a volume created with --block-size 4096 is listed and
// opened as 4096, and I/O that is not a multiple of it is INVALID (§4.2).
TEST_F(RsioSession, FourKibVolumesAreExportedWithTheirBlockSize) {
  start();
  cli("smgr -c big -S 64m --block-size 4096");
  cli("smgr -c small -S 64m");
  cli("rsadmin -c tux -k tuxkey");
  cli("rsadmin -g big tux");
  cli("rsadmin -g small tux");
  auto c = connect("tux", "tuxkey");
  ASSERT_TRUE(c);
  auto vols = c->list();
  ASSERT_TRUE(vols);
  std::map<std::string, uint32_t> listed;
  for (const auto& v : *vols) listed[v.name] = v.block_size;
  EXPECT_EQ(listed["big"], 4096u);
  EXPECT_EQ(listed["small"], 512u);
  auto v = c->open("big");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->block_size, 4096u);
  std::vector<uint8_t> buf(8192, 0x5a);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kWrite, 512, 512, buf.data()), StatusCode::kInvalid);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kRead, 4096, 512, buf.data()), StatusCode::kInvalid);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kRead, 512, 4096, buf.data()), StatusCode::kInvalid);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kWrite, 4096, 4096, buf.data()), StatusCode::kOk);
  EXPECT_EQ(io_sync(*c, v->id, Opcode::kRead, 4096, 4096, buf.data() + 4096), StatusCode::kOk);
  auto s = c->open("small");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->block_size, 512u);
  EXPECT_EQ(io_sync(*c, s->id, Opcode::kWrite, 512, 512, buf.data()), StatusCode::kOk);
}

// §3, §5.5 [rule] instance: one identity per run of rsiod, sent on every connection of
// version 2, a new one after a restart; version 1 clients get the version 1 reply.
TEST_F(RsioSession, InstanceIdentityIsOnePerRunAndNewAfterARestart) {
  const uint16_t port = free_port();
  start({"--listen", "127.0.0.1:" + std::to_string(port)});
  populate();
  auto instance_of = [&](uint16_t version_max) -> std::optional<wire::HelloReply> {
    RawConn rc;
    EXPECT_TRUE(rc.connect(port_));
    auto hs = rc.handshake("tux", "tuxkey", 0, version_max);
    EXPECT_TRUE(hs.ok.has_value());
    if (hs.hello_reply.size() < wire::kReplyHeaderBytes) return std::nullopt;
    return wire::decode_hello_reply(
        std::span(hs.hello_reply).subspan(wire::kReplyHeaderBytes));
  };
  auto a = instance_of(2), b = instance_of(2);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->version, 2);
  EXPECT_TRUE(wire::instance_known(a->instance));
  EXPECT_EQ(a->instance, b->instance);
  auto v1 = instance_of(1);
  ASSERT_TRUE(v1);
  EXPECT_EQ(v1->version, 1);
  EXPECT_FALSE(wire::instance_known(v1->instance));
  EXPECT_NE(daemon_->log().find("server instance " + wire::instance_hex(a->instance)),
            std::string::npos);
  daemon_->kill9();
  start({"--listen", "127.0.0.1:" + std::to_string(port)});
  auto c = instance_of(2);
  ASSERT_TRUE(c);
  EXPECT_TRUE(wire::instance_known(c->instance));
  EXPECT_NE(c->instance, a->instance);
}

TEST_F(RsioSession, KillNineRestartsAreInvisibleToTheCaller) {
  const uint16_t port = free_port();
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  start({"--listen", listen});
  populate();
  const std::string stop_file = dir_ + "/stop";
  const std::string out_file = dir_ + "/load.json";
  pid_t load = ::fork();
  if (load == 0) {
    int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(kLoad.c_str(), kLoad.c_str(), "-s", listen.c_str(), "-n", "tux", "-k", "tuxkey", "-V",
            "vol1", "-m", "verify", "-q", "16", "--span", "16777216", "--stop-file",
            stop_file.c_str(), "--json", nullptr);
    ::_exit(127);
  }
  // The load has its session when rsiod logs the open of vol1; the log is appended across
  // restarts, so each new session adds a line.
  auto opens = [&] {
    const std::string log = daemon_->log();
    size_t n = 0;
    for (size_t at = log.find("opened vol1"); at != std::string::npos;
         at = log.find("opened vol1", at + 1))
      ++n;
    return n;
  };
  auto wait_for_opens = [&](size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (opens() < n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return opens() >= n;
  };
  ASSERT_TRUE(wait_for_opens(1)) << daemon_->log();
  for (int round = 0; round < 20; ++round) {
    // Let the load run with requests in flight, then kill the daemon under it.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const size_t before = opens();
    daemon_->kill9();
    ASSERT_TRUE(daemon_->start({"--listen", listen})) << daemon_->log();
    // The next kill only after the client is back, so every restart costs it a session.
    ASSERT_TRUE(wait_for_opens(before + 1)) << "round " << round << ": the load did not "
                                            << "reconnect within 30 s\n"
                                            << daemon_->log();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  { std::ofstream(stop_file) << "stop\n"; }
  int status = 0;
  ::waitpid(load, &status, 0);
  std::ifstream in(out_file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::printf("rsio-load: %s", text.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 0) << text;
  auto j = nlohmann::json::parse(text.substr(text.find('{')), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << text;
  EXPECT_EQ(j["errors"], 0);
  EXPECT_EQ(j["verify_errors"], 0);
  EXPECT_EQ(j["final_check_errors"], 0);
  EXPECT_GE(j["sessions"].get<int>(), 21) << "every restart needs a new session";
  EXPECT_GT(j["ios"].get<int>(), 1000);
}

}  // namespace
}  // namespace rsio::test
