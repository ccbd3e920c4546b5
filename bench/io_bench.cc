// io_bench: drives the volume I/O engine with 4 KiB random reads and writes at queue depth
// 32 and 1 MiB sequential reads on linear, 2-way striped and 2-way mirrored volumes whose
// devices are files (by default on /dev/shm), and fio directly on the same file in the same
// run, then prints medians and the ratios the engine is held to. See bench/README.md.
//
// Thread model: single-threaded; the engine's loop runs on the main thread.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "common/units.h"
#include "volmgr/io/volume_io.h"

namespace {

using namespace rsio;
using namespace rsio::volmgr;
using namespace rsio::volmgr::io;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kExtent = 4 << 20;
constexpr uint64_t kDataOffset = 1 << 20;

struct Options {
  std::string dir = "/dev/shm";
  std::string size = "512m";
  double seconds = 3;
  int reps = 3;
  std::string fio = "fio";
  bool no_fio = false;
  std::string json_out;
  std::string only;  // run only measurements whose name contains this
};

struct Workload {
  const char* name;
  Op op;
  uint64_t block;
  unsigned depth;
  bool sequential;
};

const Workload kRandRead{"randread 4k qd32", Op::kRead, 4096, 32, false};
const Workload kRandWrite{"randwrite 4k qd32", Op::kWrite, 4096, 32, false};
const Workload kSeqRead{"seqread 1m qd8", Op::kRead, 1 << 20, 8, true};

// Creates a file of `size` bytes filled with non-zero data (so reads are not served from
// holes).
void make_file(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) throw std::runtime_error(fmt::format("create {}: {}", path, std::strerror(errno)));
  std::vector<uint8_t> chunk(1 << 20);
  std::mt19937_64 rng(42);
  for (auto& b : chunk) b = static_cast<uint8_t>(rng() | 1);
  for (uint64_t off = 0; off < size; off += chunk.size()) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), size - off));
    if (::pwrite(fd, chunk.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n))
      throw std::runtime_error(fmt::format("write {}: {}", path, std::strerror(errno)));
  }
  ::close(fd);
}

struct Volume {
  std::unique_ptr<Loop> loop;
  std::vector<std::unique_ptr<Device>> devices;
  std::unique_ptr<VolumeIo> io;
};

// A volume of `extents` extents over `files` (each holding extents/areas extents).
Volume open_volume(const std::vector<std::string>& files, Layout layout, uint64_t extents) {
  Volume v;
  v.loop = std::move(*Loop::create(512));
  std::vector<PvInfo> pvs;
  VolumeInfo info;
  info.id = 1;
  info.spec.layout = layout;
  const uint32_t width = static_cast<uint32_t>(files.size());
  if (layout == Layout::kStriped) {
    info.spec.stripes = width;
    info.spec.stripe_size_bytes = 64 << 10;
  }
  if (layout == Layout::kMirrored) info.spec.mirrors = width;
  Segment seg;
  seg.start_extent = 0;
  seg.extent_count = extents;
  const uint64_t per_area = layout == Layout::kStriped ? extents / width : extents;
  for (uint32_t i = 0; i < width; ++i) {
    PvInfo pv;
    pv.id = i + 1;
    pv.data_offset_bytes = kDataOffset;
    pv.extent_count = per_area;
    pvs.push_back(pv);
    auto dev = open_uring_device(*v.loop, files[i], UringDeviceOptions{});
    if (!dev) throw std::runtime_error(dev.error().message);
    v.devices.push_back(std::move(*dev));
    seg.areas.push_back(Area{pv.id, 0, per_area});
  }
  info.segments.push_back(seg);
  info.size_bytes = extents * kExtent;
  auto io = VolumeIo::open(*v.loop, info, kExtent, pvs,
                           [&v](int64_t id) { return v.devices[id - 1].get(); }, {});
  if (!io) throw std::runtime_error(io.error().message);
  v.io = std::move(*io);
  return v;
}

// Closed loop: `w.depth` requests always in flight for `seconds`. Returns IOPS.
double run_engine(Volume& v, const Workload& w, double seconds) {
  struct Slot {
    IoRequest req;
    iovec iov{};
    void* buf = nullptr;
  };
  std::vector<Slot> slots(w.depth);
  std::mt19937_64 rng(7);
  const uint64_t blocks = v.io->size_bytes() / w.block;
  uint64_t next_seq = 0, completed = 0, errors = 0;
  bool stopping = false;
  struct Ctx {
    std::mt19937_64* rng;
    uint64_t blocks, block, *next_seq, *completed, *errors;
    bool sequential, *stopping;
    VolumeIo* io;
  } ctx{&rng, blocks, w.block, &next_seq, &completed, &errors, w.sequential, &stopping, v.io.get()};
  auto aim = [](Ctx& c, IoRequest& r) {
    const uint64_t b = c.sequential ? (*c.next_seq)++ % c.blocks : (*c.rng)() % c.blocks;
    r.offset_bytes = b * c.block;
  };
  for (Slot& s : slots) {
    if (::posix_memalign(&s.buf, 4096, w.block) != 0) throw std::bad_alloc();
    std::memset(s.buf, 0x5a, w.block);
    s.iov = {s.buf, w.block};
    s.req.op = w.op;
    s.req.length_bytes = w.block;
    s.req.iov = &s.iov;
    s.req.iov_count = 1;
    s.req.user = &ctx;
    s.req.done = [](IoRequest* r, IoStatus st) {
      auto* c = static_cast<Ctx*>(r->user);
      ++*c->completed;
      if (st != IoStatus::kOk) ++*c->errors;
      if (*c->stopping) return;
      const uint64_t b = c->sequential ? (*c->next_seq)++ % c->blocks : (*c->rng)() % c->blocks;
      r->offset_bytes = b * c->block;
      c->io->submit(r);
    };
    aim(ctx, s.req);
  }
  const auto start = Clock::now();
  for (Slot& s : slots) v.io->submit(&s.req);
  const auto end = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) v.loop->run_once(true);
  stopping = true;
  const uint64_t done_at_stop = completed;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  v.loop->run_until([&] { return v.io->in_flight() == 0; });
  for (Slot& s : slots) std::free(s.buf);
  if (errors > 0) throw std::runtime_error(fmt::format("{} requests failed", errors));
  return static_cast<double>(done_at_stop) / elapsed;
}

// fio on `file` with the same pattern. Returns IOPS, or a negative value when fio failed.
double run_fio(const Options& opt, const std::string& file, const Workload& w, const char* engine) {
  const std::string rw = w.sequential ? "read" : w.op == Op::kRead ? "randread" : "randwrite";
  const std::string cmd = fmt::format(
      "{} --name=peer --filename={} --rw={} --bs={} --ioengine={} --iodepth={} --direct=0 "
      "--invalidate=0 --time_based --runtime={} --ramp_time=0 --numjobs=1 --offset={} "
      "--output-format=json 2>/dev/null",
      opt.fio, file, rw, w.block, engine, std::string(engine) == "psync" ? 1 : w.depth,
      static_cast<int>(std::max(1.0, opt.seconds)), kDataOffset);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  if (::pclose(p) != 0) return -1;
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded()) return -1;
  const auto& job = j["jobs"][0];
  return job[w.op == Op::kWrite ? "write" : "read"]["iops"].get<double>();
}

// psync is synchronous: one request at a time, whatever the workload's queue depth.
std::string fio_name(const char* engine, const Workload& w) {
  std::string name = w.name;
  if (std::string(engine) == "psync") name = name.substr(0, name.rfind(" qd")) + " qd1";
  return fmt::format("fio {} {}", engine, name);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"io_bench - the volume I/O engine against fio on the same files"};
  app.add_option("--dir", opt.dir, "Directory for the device files (tmpfs recommended)")
      ->capture_default_str();
  app.add_option("--size", opt.size, "Capacity of each test volume")->capture_default_str();
  app.add_option("--seconds", opt.seconds, "Duration of each measurement")->capture_default_str();
  app.add_option("--reps", opt.reps, "Repetitions (medians are reported)")->capture_default_str();
  app.add_option("--fio", opt.fio, "fio binary")->capture_default_str();
  app.add_flag("--no-fio", opt.no_fio, "Skip the fio peer (no ratios against it)");
  app.add_option("--json", opt.json_out, "Write the results as JSON to this file");
  app.add_option("--only", opt.only,
                 "Run only the measurements whose name contains this text (for profiling)");
  CLI11_PARSE(app, argc, argv);

  auto size = parse_size(opt.size);
  if (!size) {
    fmt::print(stderr, "io_bench: --size: {}\n", size.error().message);
    return 2;
  }
  const uint64_t extents = std::max<uint64_t>(2, *size / kExtent / 2 * 2);
  char tmpl[256];
  std::snprintf(tmpl, sizeof(tmpl), "%s/rsio-io-bench-XXXXXX", opt.dir.c_str());
  if (::mkdtemp(tmpl) == nullptr) {
    fmt::print(stderr, "io_bench: cannot create a directory in {}: {}\n", opt.dir,
               std::strerror(errno));
    return 1;
  }
  const std::string dir = tmpl;
  struct Cleanup {
    std::string d;
    ~Cleanup() { std::filesystem::remove_all(d); }
  } cleanup{dir};

  try {
    const std::string a = dir + "/pv-a", b = dir + "/pv-b", c = dir + "/pv-c", d = dir + "/pv-d";
    fmt::print("preparing {} device files of {} in {}\n", 4,
               format_size(kDataOffset + extents * kExtent), dir);
    make_file(a, kDataOffset + extents * kExtent);      // linear, fio
    make_file(b, kDataOffset + extents / 2 * kExtent);  // stripe leg 1
    make_file(c, kDataOffset + extents / 2 * kExtent);  // stripe leg 2
    make_file(d, kDataOffset + extents * kExtent);      // second mirror leg

    std::map<std::string, std::vector<double>> results;
    auto wanted = [&](const std::string& name) {
      return opt.only.empty() || name.find(opt.only) != std::string::npos;
    };
    const bool have_fio =
        !opt.no_fio && std::system((opt.fio + " --version >/dev/null 2>&1").c_str()) == 0;
    if (!opt.no_fio && !have_fio) fmt::print("fio not found ({}): skipping the peer\n", opt.fio);
    for (int rep = 0; rep < opt.reps; ++rep) {
      fmt::print("repetition {}/{}\n", rep + 1, opt.reps);
      {
        Volume v = open_volume({a}, Layout::kLinear, extents);
        for (const Workload* w : {&kRandRead, &kRandWrite, &kSeqRead})
          if (wanted(fmt::format("engine linear {}", w->name)))
            results[fmt::format("engine linear {}", w->name)].push_back(
                run_engine(v, *w, opt.seconds));
      }
      {
        Volume v = open_volume({b, c}, Layout::kStriped, extents);
        for (const Workload* w : {&kRandRead, &kRandWrite})
          if (wanted(fmt::format("engine stripe2 {}", w->name)))
            results[fmt::format("engine stripe2 {}", w->name)].push_back(
                run_engine(v, *w, opt.seconds));
      }
      {
        Volume v = open_volume({a, d}, Layout::kMirrored, extents);
        for (const Workload* w : {&kRandRead, &kRandWrite})
          if (wanted(fmt::format("engine mirror2 {}", w->name)))
            results[fmt::format("engine mirror2 {}", w->name)].push_back(
                run_engine(v, *w, opt.seconds));
      }
      if (have_fio) {
        for (const char* engine : {"psync", "io_uring"})
          for (const Workload* w : {&kRandRead, &kRandWrite, &kSeqRead}) {
            const std::string name = fio_name(engine, *w);
            if (!wanted(name)) continue;
            const double iops = run_fio(opt, a, *w, engine);
            if (iops < 0) throw std::runtime_error(fmt::format("{} failed", name));
            results[name].push_back(iops);
          }
      }
    }

    nlohmann::json out;
    fmt::print("\n{:<40} {:>12} {:>12} {:>12}\n", "measurement (median of reps)", "IOPS", "MiB/s",
               "min..max");
    std::map<std::string, double> med;
    for (const auto& [name, v] : results) {
      med[name] = median(v);
      const double bs = name.find("1m") != std::string::npos ? 1 << 20 : 4096;
      fmt::print("{:<40} {:>12.0f} {:>12.1f} {:>5.0f}..{:.0f}\n", name, med[name],
                 med[name] * bs / (1 << 20), *std::min_element(v.begin(), v.end()),
                 *std::max_element(v.begin(), v.end()));
      out["iops"][name] = med[name];
    }
    struct Ratio {
      std::string what;
      double value;
      double target;
      bool at_least;
    };
    std::vector<Ratio> ratios;
    const std::string rr = kRandRead.name, rw = kRandWrite.name;
    if (have_fio) {
      const double best =
          std::max(med[fio_name("psync", kRandRead)], med[fio_name("io_uring", kRandRead)]);
      ratios.push_back(
          {"engine randread / best fio randread", med["engine linear " + rr] / best, 0.8, true});
      const double best_w =
          std::max(med[fio_name("psync", kRandWrite)], med[fio_name("io_uring", kRandWrite)]);
      ratios.push_back(
          {"engine randwrite / best fio randwrite", med["engine linear " + rw] / best_w, 0, true});
      const double best_s =
          std::max(med[fio_name("psync", kSeqRead)], med[fio_name("io_uring", kSeqRead)]);
      ratios.push_back({"engine seqread 1m / best fio seqread 1m",
                        med["engine linear seqread 1m qd8"] / best_s, 0, true});
    }
    ratios.push_back({"stripe2 randread / linear randread",
                      med["engine stripe2 " + rr] / med["engine linear " + rr], 0.9, true});
    ratios.push_back({"stripe2 randwrite / linear randwrite",
                      med["engine stripe2 " + rw] / med["engine linear " + rw], 0.9, true});
    ratios.push_back({"mirror2 randwrite / linear randwrite",
                      med["engine mirror2 " + rw] / med["engine linear " + rw], 0.45, true});
    ratios.push_back({"mirror2 randread / linear randread",
                      med["engine mirror2 " + rr] / med["engine linear " + rr], 0, true});
    fmt::print("\n{:<44} {:>7}  {}\n", "ratio", "value", "target");
    bool all_met = true;
    for (const Ratio& r : ratios) {
      const bool met = r.target == 0 || r.value >= r.target;
      all_met = all_met && met;
      fmt::print("{:<44} {:>7.2f}  {}\n", r.what, r.value,
                 r.target == 0 ? std::string("(reported)")
                               : fmt::format(">= {:.2f} {}", r.target, met ? "met" : "NOT MET"));
      out["ratios"][r.what] = {{"value", r.value}, {"target", r.target}, {"met", met}};
    }
    fmt::print("\n{}\n", all_met ? "all targets met" : "some targets not met (see above)");
    if (!opt.json_out.empty()) {
      FILE* f = std::fopen(opt.json_out.c_str(), "w");
      if (f) {
        std::fputs(out.dump(2).c_str(), f);
        std::fclose(f);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "io_bench: {}\n", e.what());
    return 1;
  }
}
