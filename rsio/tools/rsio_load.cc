// rsio-load: drives an RSIO volume through the client library with many requests in flight,
// optionally verifying every byte it reads, and reports IOPS, latency, errors and the longest
// stall. Used by the multi-path and restart tests and by the benchmark.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "rsio/client.h"

namespace {

using namespace rsio;
using Clock = std::chrono::steady_clock;

struct Args {
  std::vector<std::string> servers;
  std::string node, key, keyfile, volume;
  std::string mode = "randread";  // randread randwrite randrw verify read write
  uint32_t bs = 4096;
  uint32_t qd = 32;
  double seconds = 5;
  uint64_t span = 0;  // bytes of the volume used (0: all)
  bool list = false;
  bool json = false;
  bool flush_every = false;
  uint32_t hold_ms = 30000;
  std::string stop_file;  // the run ends when this file exists (instead of --time)
  bool final_check = true;
};

// The content of a block for (slot, generation): every 8 bytes hold slot, generation and the
// word's index, so a block read from the wrong place or an old write is detected.
void fill(uint8_t* buf, uint32_t bs, uint64_t slot, uint64_t gen) {
  for (uint32_t i = 0; i < bs; i += 8) {
    const uint64_t w = (slot << 40) ^ (gen << 16) ^ i ^ 0x5a5a000000000000ULL;
    std::memcpy(buf + i, &w, 8);
  }
}

bool check(const uint8_t* buf, uint32_t bs, uint64_t slot, uint64_t gen) {
  if (gen == 0) {
    // Never written by this run: anything but another slot's content is fine.
    return true;
  }
  for (uint32_t i = 0; i < bs; i += 8) {
    const uint64_t w = (slot << 40) ^ (gen << 16) ^ i ^ 0x5a5a000000000000ULL;
    if (std::memcmp(buf + i, &w, 8) != 0) return false;
  }
  return true;
}

struct Slot {
  uint64_t acked_gen = 0;  // last write the server acknowledged
  bool busy = false;
};

struct Req {
  client::Io io;
  std::vector<uint8_t, std::allocator<uint8_t>> storage;
  uint8_t* buf = nullptr;
  uint64_t slot = 0, gen = 0;
  Clock::time_point start;
  struct Runner* runner = nullptr;
};

struct Runner {
  Args a;
  client::Client* c = nullptr;
  client::VolumeInfo vol;
  uint64_t slots = 0;
  std::vector<Slot> slot_state;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Req*> done_list;
  uint64_t ios = 0, errors = 0, verify_errors = 0, bytes = 0;
  std::vector<double> lat_us;
  std::mt19937_64 rng{12345};

  static void on_done(client::Io* io, wire::StatusCode s) {
    auto* r = static_cast<Req*>(io->user);
    std::lock_guard lock(r->runner->mu);
    if (s != wire::StatusCode::kOk) {
      ++r->runner->errors;
      fmt::print(stderr, "rsio-load: {} at {} failed: {}\n",
                 wire::opcode_name(static_cast<uint8_t>(io->op)), io->offset,
                 wire::status_name(static_cast<uint32_t>(s)));
      r->gen = UINT64_MAX;  // marks failure
    }
    r->runner->done_list.push_back(r);
    r->runner->cv.notify_one();
  }

  bool choose_write() {
    if (a.mode == "randwrite" || a.mode == "write") return true;
    if (a.mode == "randread" || a.mode == "read") return false;
    return (rng() & 1) != 0;
  }

  uint64_t pick_slot(uint64_t& seq) {
    if (a.mode == "read" || a.mode == "write") {
      for (uint64_t n = 0; n < slots; ++n) {
        const uint64_t s = seq++ % slots;
        if (!slot_state[s].busy) return s;
      }
    }
    for (;;) {
      const uint64_t s = rng() % slots;
      if (!slot_state[s].busy) return s;
    }
  }

  void start(Req* r, uint64_t& seq) {
    const bool write = choose_write();
    r->slot = pick_slot(seq);
    slot_state[r->slot].busy = true;
    r->io = {};
    r->io.volume = vol.id;
    r->io.offset = r->slot * a.bs;
    r->io.length = a.bs;
    r->io.buf = r->buf;
    r->io.user = r;
    r->io.done = &Runner::on_done;
    if (write) {
      r->gen = slot_state[r->slot].acked_gen + 1;
      r->io.op = wire::Opcode::kWrite;
      if (a.mode == "verify" || a.mode == "randrw") fill(r->buf, a.bs, r->slot, r->gen);
    } else {
      r->gen = 0;
      r->io.op = wire::Opcode::kRead;
    }
    r->start = Clock::now();
    c->submit(&r->io);
  }

  void finish(Req* r) {
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - r->start).count();
    lat_us.push_back(us);
    ++ios;
    bytes += a.bs;
    Slot& s = slot_state[r->slot];
    s.busy = false;
    if (r->gen == UINT64_MAX) return;
    if (r->io.op == wire::Opcode::kWrite) {
      s.acked_gen = r->gen;
    } else if (a.mode == "verify" && !check(r->buf, a.bs, r->slot, s.acked_gen)) {
      ++verify_errors;
      fmt::print(stderr, "rsio-load: verification failed at offset {} (slot {}, generation {})\n",
                 r->io.offset, r->slot, s.acked_gen);
    }
  }

  // Reads every slot written by this run back and compares it.
  uint64_t final_verify() {
    uint64_t bad = 0;
    std::vector<Req> reqs(std::min<uint64_t>(a.qd, slots));
    for (auto& r : reqs) {
      r.storage.resize(a.bs + 4096);
      r.buf =
          r.storage.data() + (4096 - reinterpret_cast<uintptr_t>(r.storage.data()) % 4096) % 4096;
      r.runner = this;
    }
    uint64_t next = 0, in_flight = 0;
    std::vector<Req*> free_list;
    for (auto& r : reqs) free_list.push_back(&r);
    for (;;) {
      while (!free_list.empty() && next < slots) {
        if (slot_state[next].acked_gen == 0) {
          ++next;
          continue;
        }
        Req* r = free_list.back();
        free_list.pop_back();
        r->slot = next++;
        r->gen = 0;
        r->io = {};
        r->io.op = wire::Opcode::kRead;
        r->io.volume = vol.id;
        r->io.offset = r->slot * a.bs;
        r->io.length = a.bs;
        r->io.buf = r->buf;
        r->io.user = r;
        r->io.done = &Runner::on_done;
        ++in_flight;
        c->submit(&r->io);
      }
      if (in_flight == 0) break;
      std::vector<Req*> got;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return !done_list.empty(); });
        got.swap(done_list);
      }
      for (Req* r : got) {
        --in_flight;
        if (r->gen == UINT64_MAX || !check(r->buf, a.bs, r->slot, slot_state[r->slot].acked_gen)) {
          ++bad;
          if (bad < 10)
            fmt::print(stderr, "rsio-load: final check: slot {} does not hold generation {}\n",
                       r->slot, slot_state[r->slot].acked_gen);
        }
        free_list.push_back(r);
      }
    }
    return bad;
  }
};

int run(Args& a) {
  if (!a.keyfile.empty()) {
    std::ifstream f(a.keyfile);
    if (!f) {
      fmt::print(stderr, "rsio-load: cannot read key file {}\n", a.keyfile);
      return 2;
    }
    std::getline(f, a.key);
  }
  client::ClientOptions o;
  o.node_name = a.node;
  o.node_key = a.key;
  o.hold_ms = a.hold_ms;
  for (const auto& s : a.servers) {
    auto p = client::parse_path(s);
    if (!p) {
      fmt::print(stderr, "rsio-load: {}\n", p.error().message);
      return 2;
    }
    o.paths.push_back(*p);
  }
  auto c = client::Client::connect(o);
  if (!c) {
    fmt::print(stderr, "rsio-load: {}\n", c.error().message);
    return 1;
  }
  if (a.list) {
    auto vols = (*c)->list();
    if (!vols) {
      fmt::print(stderr, "rsio-load: {}\n", vols.error().message);
      return 1;
    }
    for (const auto& v : *vols)
      fmt::print("{} {} {} {}\n", v.name, v.size_bytes, v.block_size, v.read_only ? "ro" : "rw");
    return 0;
  }
  auto vol = (*c)->open(a.volume, a.mode == "randread" || a.mode == "read");
  if (!vol) {
    fmt::print(stderr, "rsio-load: {}\n", vol.error().message);
    return 1;
  }
  Runner r;
  r.a = a;
  r.c = c->get();
  r.vol = *vol;
  const uint64_t span = a.span > 0 ? std::min(a.span, vol->size_bytes) : vol->size_bytes;
  r.slots = span / a.bs;
  if (r.slots < a.qd) {
    fmt::print(stderr, "rsio-load: the volume is too small for {} requests of {} bytes\n", a.qd,
               a.bs);
    return 2;
  }
  r.slot_state.resize(r.slots);
  std::vector<Req> reqs(a.qd);
  for (auto& q : reqs) {
    q.storage.resize(a.bs + 4096);
    q.buf = q.storage.data() + (4096 - reinterpret_cast<uintptr_t>(q.storage.data()) % 4096) % 4096;
    q.runner = &r;
  }
  uint64_t seq = 0;
  const auto t0 = Clock::now();
  const auto until = t0 + std::chrono::duration<double>(a.seconds);
  for (auto& q : reqs) r.start(&q, seq);
  size_t in_flight = reqs.size();
  bool stopping = false;
  while (in_flight > 0) {
    std::vector<Req*> got;
    {
      std::unique_lock lock(r.mu);
      r.cv.wait(lock, [&] { return !r.done_list.empty(); });
      got.swap(r.done_list);
    }
    if (!stopping) {
      if (!a.stop_file.empty())
        stopping = ::access(a.stop_file.c_str(), F_OK) == 0;
      else
        stopping = Clock::now() >= until;
    }
    for (Req* q : got) {
      r.finish(q);
      if (stopping)
        --in_flight;
      else
        r.start(q, seq);
    }
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  uint64_t final_bad = 0;
  if (a.mode == "verify" && a.final_check) final_bad = r.final_verify();
  std::sort(r.lat_us.begin(), r.lat_us.end());
  auto pct = [&](double p) {
    return r.lat_us.empty() ? 0.0
                            : r.lat_us[std::min<size_t>(r.lat_us.size() - 1,
                                                        static_cast<size_t>(p * r.lat_us.size()))];
  };
  const auto st = (*c)->stats();
  const double iops = r.ios / secs;
  if (a.json) {
    fmt::print(
        "{{\"ios\": {}, \"seconds\": {:.3f}, \"iops\": {:.0f}, \"mib_s\": {:.1f}, \"lat_p50_us\": "
        "{:.1f}, \"lat_p99_us\": {:.1f}, \"lat_max_us\": {:.1f}, \"errors\": {}, "
        "\"verify_errors\": {}, \"final_check_errors\": {}, \"reissued\": {}, \"fences\": {}, "
        "\"path_failures\": {}, \"sessions\": {}, \"max_stall_ms\": {}, \"replays\": {}, "
        "\"replayed_writes\": {}, \"replay_failures\": {}, \"lost_flushes\": {}, "
        "\"limit_flushes\": {}}}\n",
        r.ios, secs, iops, r.bytes / secs / 1048576.0, pct(0.5), pct(0.99),
        r.lat_us.empty() ? 0.0 : r.lat_us.back(), r.errors, r.verify_errors, final_bad, st.reissued,
        st.fences, st.path_failures, st.sessions, st.max_stall_ms, st.replays, st.replayed_writes,
        st.replay_failures, st.lost_flushes, st.limit_flushes);
  } else {
    fmt::print("{} {} bs={} qd={}: {} I/Os in {:.2f} s = {:.0f} IOPS, {:.1f} MiB/s\n", a.mode,
               a.volume, a.bs, a.qd, r.ios, secs, iops, r.bytes / secs / 1048576.0);
    fmt::print("latency p50 {:.1f} us, p99 {:.1f} us, max {:.1f} us\n", pct(0.5), pct(0.99),
               r.lat_us.empty() ? 0.0 : r.lat_us.back());
    fmt::print("errors {}, verification errors {}, final check errors {}\n", r.errors,
               r.verify_errors, final_bad);
    fmt::print("re-issued {}, fences {}, path failures {}, sessions {}, max stall {} ms\n",
               st.reissued, st.fences, st.path_failures, st.sessions, st.max_stall_ms);
    fmt::print("replays {} ({} writes sent again), replay failures {}, lost flushes {}\n",
               st.replays, st.replayed_writes, st.replay_failures, st.lost_flushes);
  }
  return (r.errors || r.verify_errors || final_bad) ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{
      "rsio-load - drive an RSIO volume with the client library and report IOPS, "
      "latency and errors; verify mode checks every byte it reads."};
  app.add_option("-s,--server", a.servers,
                 "Server path HOST:PORT[@LOCAL_ADDRESS]; repeat for several paths")
      ->required();
  app.add_option("-n,--node", a.node, "Node name")->required();
  app.add_option("-k,--key", a.key, "Node key");
  app.add_option("--keyfile", a.keyfile, "File holding the node key");
  app.add_option("-V,--volume", a.volume, "Volume name");
  app.add_option("-m,--mode", a.mode, "randread, randwrite, randrw, read, write or verify")
      ->check(CLI::IsMember({"randread", "randwrite", "randrw", "read", "write", "verify"}))
      ->capture_default_str();
  app.add_option("-b,--bs", a.bs, "Request size in bytes")->capture_default_str();
  app.add_option("-q,--qd", a.qd, "Requests in flight")->capture_default_str();
  app.add_option("-t,--time", a.seconds, "Seconds to run")->capture_default_str();
  app.add_option("--span", a.span, "Use only the first SPAN bytes of the volume");
  app.add_option("--hold-ms", a.hold_ms, "I/O hold time while no path works")
      ->capture_default_str();
  app.add_option("--stop-file", a.stop_file, "Run until this file exists (instead of --time)");
  app.add_flag("--list", a.list, "List the volumes granted to the node and exit");
  app.add_flag("--json", a.json, "Print the result as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (a.key.empty() && a.keyfile.empty()) {
    fmt::print(stderr, "rsio-load: give the node key with --key or --keyfile\n");
    return 2;
  }
  if (!a.list && a.volume.empty()) {
    fmt::print(stderr, "rsio-load: give a volume with --volume (or --list)\n");
    return 2;
  }
  if (a.bs == 0 || a.bs % 512 != 0 || a.qd == 0) {
    fmt::print(stderr, "rsio-load: --bs must be a multiple of 512 and --qd at least 1\n");
    return 2;
  }
  return run(a);
}
