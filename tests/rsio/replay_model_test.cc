// The client library's durability across server instances (docs/wire-protocol.md §5.5,
// docs/client-library.md "Durability"), against a fake server whose disk has a volatile cache
// and which reboots at random points: random writes, FUA writes, write-zeroes, reads and
// flushes at a queue depth of up to 8 on two paths, checked against a naive model of what
// the caller was told. Seeded; the seed is printed and RSIO_TEST_SEED replays it.
//
// What must hold:
// - every read returns the last acknowledged write of its blocks, across reboots;
// - when a FLUSH completed, every block whose last write was acknowledged before the FLUSH
//   was submitted is on the server's durable medium with exactly that content.
// The same run against a server that keeps its instance identity across reboots (it hides its
// data loss) must break the second rule: the check has teeth.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <random>

#include "fake_server.h"
#include "test_client.h"
#include "rsio/client.h"
#include "rsio/replay_log.h"

namespace rsio::test {
namespace {

using wire::Opcode;
using wire::StatusCode;

constexpr uint32_t kBlock = 4096;
constexpr uint32_t kBlocks = 64;  // small, so that blocks are rewritten often
constexpr uint32_t kDepth = 8;

uint64_t seed_from_env(uint64_t fallback) {
  const char* s = std::getenv("RSIO_TEST_SEED");
  return s != nullptr ? std::strtoull(s, nullptr, 10) : fallback;
}

// Block contents are (block, generation) stamped into every 16 bytes; generation 0 is zeroes.
void fill(uint8_t* p, uint32_t block, uint64_t gen) {
  for (uint32_t i = 0; i < kBlock; i += 16) {
    const uint64_t a = gen == 0 ? 0 : block, b = gen;
    std::memcpy(p + i, &a, 8);
    std::memcpy(p + i + 8, &b, 8);
  }
}

struct Outcome {
  uint64_t ops = 0, reboots = 0, flush_checks = 0, read_checks = 0;
  uint64_t lost_blocks = 0, wrong_reads = 0, failed_ios = 0;
  client::ClientStats stats;
};

struct Op {
  client::Io io;
  std::vector<uint8_t> buf = std::vector<uint8_t>(kBlock);
  uint32_t block = 0;
  uint64_t gen = 0;
  uint64_t submit_clock = 0;  // acknowledgements before submission (FLUSH)
  StatusCode status = StatusCode::kOk;
};

class Harness {
 public:
  Harness(FakeServer& server, uint64_t seed) : server_(server), rng_(seed) {}

  Outcome run(uint64_t ops_total, uint32_t reboot_every) {
    client::ClientOptions o;
    o.node_name = "tux";
    o.node_key = "tuxkey";
    o.paths = {{"127.0.0.1", server_.port(), ""}, {"127.0.0.1", server_.port(), ""}};
    o.reconnect_min_ms = 1;
    o.reconnect_max_ms = 10;
    auto c = client::Client::connect(o);
    EXPECT_TRUE(c) << c.error().message;
    if (!c) return {};
    client_ = std::move(*c);
    auto v = client_->open("vol");
    EXPECT_TRUE(v) << v.error().message;
    if (!v) return {};
    vol_ = v->id;

    Outcome out;
    std::uniform_int_distribution<uint32_t> pct(0, 99), blk(0, kBlocks - 1);
    std::uniform_int_distribution<uint32_t> reboot_gap(1, 2 * reboot_every);
    uint64_t next_reboot = reboot_gap(rng_);
    while (out.ops < ops_total) {
      reap(out, in_flight_.size() >= kDepth);
      if (in_flight_.size() >= kDepth) continue;
      if (reboot_every > 0 && out.ops >= next_reboot) {
        server_.reboot();
        ++out.reboots;
        next_reboot = out.ops + reboot_gap(rng_);
      }
      if (pct(rng_) == 0) client_->break_path(rng_() % 2);
      const uint32_t p = pct(rng_);
      if (p < 10) {
        submit_flush();
      } else {
        const uint32_t b = blk(rng_);
        if (busy_[b]) continue;
        submit_block(b, p < 45 ? Opcode::kWrite : p < 55 ? Opcode::kWrite
                        : p < 62               ? Opcode::kWriteZeroes
                                               : Opcode::kRead,
                     p >= 45 && p < 55);
      }
      ++out.ops;
    }
    while (!in_flight_.empty()) reap(out, true);
    // A last FLUSH, checked like every other.
    submit_flush();
    while (!in_flight_.empty()) reap(out, true);
    out.stats = client_->stats();
    client_.reset();
    return out;
  }

 private:
  void submit_flush() {
    auto op = std::make_unique<Op>();
    op->io.op = Opcode::kFlush;
    op->submit_clock = ack_clock_;
    start(std::move(op));
  }

  void submit_block(uint32_t b, Opcode o, bool fua) {
    auto op = std::make_unique<Op>();
    op->io.op = o;
    op->io.fua = fua;
    op->io.offset = uint64_t{b} * kBlock;
    op->io.length = kBlock;
    op->block = b;
    if (o == Opcode::kWrite) {
      op->gen = ++gen_;
      fill(op->buf.data(), b, op->gen);
    }
    busy_[b] = true;
    start(std::move(op));
  }

  void start(std::unique_ptr<Op> op) {
    op->io.volume = vol_;
    op->io.buf = op->buf.data();
    op->io.user = this;
    op->io.done = [](client::Io* io, StatusCode s) {
      auto* h = static_cast<Harness*>(io->user);
      std::lock_guard lock(h->mu_);
      h->done_.push_back({io, s});
      h->cv_.notify_one();
    };
    client::Io* io = &op->io;
    in_flight_.emplace(io, std::move(op));
    client_->submit(io);
  }

  // Takes the completions that arrived (waits for one when `wait`) and checks them.
  void reap(Outcome& out, bool wait) {
    std::deque<std::pair<client::Io*, StatusCode>> done;
    {
      std::unique_lock lock(mu_);
      if (wait) {
        EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(60), [&] { return !done_.empty(); }))
            << "no completion within 60 s";
      }
      done.swap(done_);
    }
    for (auto [io, s] : done) {
      auto node = in_flight_.extract(io);
      Op& op = *node.mapped();
      if (s != StatusCode::kOk) {
        ++out.failed_ios;
        ADD_FAILURE() << wire::opcode_name(static_cast<uint8_t>(op.io.op)) << " failed: "
                      << wire::status_name(static_cast<uint32_t>(s));
        if (op.io.op != Opcode::kFlush) busy_[op.block] = false;
        continue;
      }
      switch (op.io.op) {
        case Opcode::kWrite:
        case Opcode::kWriteZeroes:
          model_[op.block] = op.gen;
          acked_at_[op.block] = ++ack_clock_;
          busy_[op.block] = false;
          break;
        case Opcode::kRead: {
          std::vector<uint8_t> want(kBlock);
          fill(want.data(), op.block, model_[op.block]);
          ++out.read_checks;
          if (want != op.buf) ++out.wrong_reads;
          busy_[op.block] = false;
          break;
        }
        case Opcode::kFlush:
          check_durable(op, out);
          break;
        default:
          break;
      }
    }
  }

  void check_durable(const Op& flush, Outcome& out) {
    ++out.flush_checks;
    for (uint32_t b = 0; b < kBlocks; ++b) {
      // Covered: acknowledged before the FLUSH was submitted and not written since.
      if (busy_[b] || acked_at_[b] == 0 || acked_at_[b] > flush.submit_clock) continue;
      std::vector<uint8_t> want(kBlock);
      fill(want.data(), b, model_[b]);
      if (server_.durable(uint64_t{b} * kBlock, kBlock) != want) ++out.lost_blocks;
    }
  }

  FakeServer& server_;
  std::mt19937_64 rng_;
  std::unique_ptr<client::Client> client_;
  uint32_t vol_ = 0;
  std::map<client::Io*, std::unique_ptr<Op>> in_flight_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<client::Io*, StatusCode>> done_;  // GUARDED_BY(mu_)
  uint64_t gen_ = 0, ack_clock_ = 0;
  std::array<uint64_t, kBlocks> model_{}, acked_at_{};
  std::array<bool, kBlocks> busy_{};
};

FakeServer::Options fake(uint64_t seed) {
  FakeServer::Options o;
  o.size_bytes = uint64_t{kBlocks} * kBlock;
  o.seed = seed;
  return o;
}

TEST(ClientDurability, RandomRebootsLoseNothingAcknowledgedAndFlushed) {
  const uint64_t seed = seed_from_env(std::random_device{}());
  std::cout << "seed " << seed << " (RSIO_TEST_SEED replays it)\n";
  FakeServer server(fake(seed));
  Harness h(server, seed);
  const Outcome out = h.run(100'000, 400);
  std::cout << "ops " << out.ops << " reboots " << out.reboots << " flush checks "
            << out.flush_checks << " read checks " << out.read_checks << " replays "
            << out.stats.replays << " replayed writes " << out.stats.replayed_writes << "\n";
  EXPECT_GE(out.ops, 100'000u);
  EXPECT_GE(out.reboots, 100u);
  EXPECT_EQ(out.lost_blocks, 0u) << "seed " << seed;
  EXPECT_EQ(out.wrong_reads, 0u) << "seed " << seed;
  EXPECT_EQ(out.failed_ios, 0u) << "seed " << seed;
  // Both paths of the model ran: replays happened and flushes were checked.
  EXPECT_GT(out.stats.replays, 0u);
  EXPECT_GT(out.stats.replayed_writes, 0u);
  EXPECT_GT(out.flush_checks, 1000u);
}

TEST(ClientDurability, VersionOneServerGetsEveryNewSessionReplayed) {
  const uint64_t seed = seed_from_env(std::random_device{}());
  std::cout << "seed " << seed << "\n";
  auto o = fake(seed);
  o.version = 1;  // no instance identity: every new session may be a new instance
  FakeServer server(o);
  Harness h(server, seed);
  const Outcome out = h.run(20'000, 400);
  EXPECT_EQ(out.lost_blocks, 0u) << "seed " << seed;
  EXPECT_EQ(out.wrong_reads, 0u) << "seed " << seed;
  EXPECT_GT(out.stats.replays, 0u);
}

// Negative control: a server that keeps its identity across power cuts hides the loss from
// the client, which then has nothing to replay: the model must see lost blocks.
TEST(ClientDurability, AServerHidingItsRebootsIsCaughtLosingData) {
  const uint64_t seed = seed_from_env(std::random_device{}());
  std::cout << "seed " << seed << "\n";
  auto o = fake(seed);
  o.lie_about_instance = true;
  FakeServer server(o);
  Harness h(server, seed);
  const Outcome out = h.run(20'000, 200);
  EXPECT_GT(out.lost_blocks + out.wrong_reads, 0u) << "the check found no loss: it has no teeth";
  EXPECT_EQ(out.stats.replays, 0u);
}

TEST(ClientDurability, AReplayThatFailsMakesTheNextFlushFail) {
  FakeServer server(fake(7));
  client::ClientOptions o;
  o.node_name = "tux";
  o.node_key = "tuxkey";
  o.paths = {{"127.0.0.1", server.port(), ""}};
  o.reconnect_min_ms = 1;
  auto c = client::Client::connect(o);
  ASSERT_TRUE(c) << c.error().message;
  auto v = (*c)->open("vol");
  ASSERT_TRUE(v);
  std::vector<uint8_t> buf(kBlock, 0xab);
  ASSERT_EQ(io_sync(**c, v->id, Opcode::kWrite, 0, kBlock, buf.data()), StatusCode::kOk);
  // The appliance loses power, and the new instance cannot take the write again.
  server.fail_writes(true);
  server.reboot();
  EXPECT_EQ(io_sync(**c, v->id, Opcode::kFlush, 0, 0, nullptr), StatusCode::kIoError);
  EXPECT_EQ((*c)->stats().replay_failures, 1u);
  EXPECT_EQ((*c)->stats().lost_flushes, 1u);
  // Reported once: the caller knows, and later flushes mean what they say again.
  server.fail_writes(false);
  ASSERT_EQ(io_sync(**c, v->id, Opcode::kWrite, 0, kBlock, buf.data()), StatusCode::kOk);
  EXPECT_EQ(io_sync(**c, v->id, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
  EXPECT_EQ(server.durable(0, kBlock), buf);
}

// A caller that outlived its own kept writes (rsclientd restarted under a ublk device) opens
// the volume with the instance that acknowledged them: the same instance still has them, a
// new one may not, and then the first FLUSH must not claim they are durable.
TEST(ClientDurability, WritesOfAnEarlierProcessAreInDoubtOnlyOnAnotherInstance) {
  FakeServer server(fake(11));
  auto connect = [&] {
    client::ClientOptions o;
    o.node_name = "tux";
    o.node_key = "tuxkey";
    o.paths = {{"127.0.0.1", server.port(), ""}};
    auto c = client::Client::connect(o);
    EXPECT_TRUE(c) << c.error().message;
    return c ? std::move(*c) : nullptr;
  };
  wire::InstanceId first{};
  {
    auto c = connect();
    ASSERT_TRUE(c);
    auto v = c->open("vol");
    ASSERT_TRUE(v);
    first = v->instance;
    EXPECT_TRUE(wire::instance_known(first));
  }
  client::OpenOptions oo;
  oo.unflushed_in = first;
  {
    auto c = connect();  // same instance: its caches still hold what it acknowledged
    ASSERT_TRUE(c);
    auto v = c->open("vol", oo);
    ASSERT_TRUE(v);
    EXPECT_EQ(io_sync(*c, v->id, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
  }
  server.reboot();
  {
    auto c = connect();  // another instance: the earlier process's writes may be gone
    ASSERT_TRUE(c);
    auto v = c->open("vol", oo);
    ASSERT_TRUE(v);
    EXPECT_NE(v->instance, first);
    EXPECT_EQ(io_sync(*c, v->id, Opcode::kFlush, 0, 0, nullptr), StatusCode::kIoError);
    EXPECT_EQ(io_sync(*c, v->id, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);  // once
  }
}

TEST(ClientDurability, KeptWritesStayWithinTheBoundAndTheLibraryFlushesAtIt) {
  FakeServer::Options fo;
  fo.size_bytes = 64ULL << 20;
  fo.defer_flush_percent = 0;
  FakeServer server(fo);
  client::ClientOptions o;
  o.node_name = "tux";
  o.node_key = "tuxkey";
  o.paths = {{"127.0.0.1", server.port(), ""}};
  o.replay_limit_bytes = 4ULL << 20;
  auto c = client::Client::connect(o);
  ASSERT_TRUE(c) << c.error().message;
  auto v = (*c)->open("vol");
  ASSERT_TRUE(v);
  // 32 MiB of 64 KiB writes, never flushed by the caller.
  std::vector<uint8_t> buf(64 * 1024);
  uint64_t most = 0;
  for (uint64_t off = 0; off < (32ULL << 20); off += buf.size()) {
    std::memset(buf.data(), static_cast<int>(off >> 16), buf.size());
    ASSERT_EQ(io_sync(**c, v->id, Opcode::kWrite, off, static_cast<uint32_t>(buf.size()),
                      buf.data()),
              StatusCode::kOk);
    most = std::max(most, (*c)->stats().retained_bytes);
  }
  EXPECT_LE(most, o.replay_limit_bytes);
  EXPECT_GT((*c)->stats().limit_flushes, 0u);
  // What the library flushed itself is durable; the rest is replayed after a power cut.
  server.reboot();
  std::vector<uint8_t> got(buf.size());
  for (uint64_t off = 0; off < (32ULL << 20); off += buf.size()) {
    ASSERT_EQ(io_sync(**c, v->id, Opcode::kRead, off, static_cast<uint32_t>(got.size()),
                      got.data()),
              StatusCode::kOk);
    ASSERT_EQ(got[0], static_cast<uint8_t>(off >> 16)) << "offset " << off;
    ASSERT_EQ(got.back(), static_cast<uint8_t>(off >> 16)) << "offset " << off;
  }
}

TEST(ReplayCursor, OverlappingEntriesWaitForTheOlderOne) {
  client::ReplayLog log;
  std::vector<uint8_t> d(8192);
  log.acked(Opcode::kWrite, false, 0, 4096, d.data());     // 0
  log.acked(Opcode::kWrite, false, 8192, 4096, d.data());  // 1
  log.acked(Opcode::kWrite, false, 2048, 4096, d.data());  // 2 overlaps 0
  log.acked(Opcode::kWrite, false, 16384, 4096, d.data()); // 3
  client::ReplayCursor cur(log.entries().size(), 8);
  EXPECT_EQ(cur.next(log.entries()), 0u);
  EXPECT_EQ(cur.next(log.entries()), 1u);
  EXPECT_EQ(cur.next(log.entries()), std::nullopt);  // 2 waits for 0, and 3 for 2 (order)
  cur.done(log.entries()[1]);
  EXPECT_EQ(cur.next(log.entries()), std::nullopt);
  cur.done(log.entries()[0]);
  EXPECT_EQ(cur.next(log.entries()), 2u);
  EXPECT_EQ(cur.next(log.entries()), 3u);
  EXPECT_FALSE(cur.finished());
  cur.done(log.entries()[2]);
  cur.done(log.entries()[3]);
  EXPECT_TRUE(cur.finished());
}

TEST(ReplayLog, FuaIsKeptOnlyBehindOlderEntriesAndAFlushDropsWhatItCovers) {
  client::ReplayLog log;
  std::vector<uint8_t> d(4096);
  log.acked(Opcode::kWrite, true, 0, 4096, d.data());
  EXPECT_TRUE(log.empty());  // durable by itself
  log.acked(Opcode::kWrite, false, 0, 4096, d.data());
  log.acked(Opcode::kWrite, true, 0, 4096, d.data());
  EXPECT_EQ(log.entries().size(), 2u);  // else the older write would be replayed over it
  const uint64_t mark = log.mark();
  log.acked(Opcode::kWriteZeroes, false, 0, 1 << 20, nullptr);
  log.flushed(mark);
  ASSERT_EQ(log.entries().size(), 1u);
  EXPECT_EQ(log.entries()[0].op, Opcode::kWriteZeroes);
  EXPECT_EQ(log.bytes(), client::ReplayLog::kEntryOverheadBytes);
}

}  // namespace
}  // namespace rsio::test
