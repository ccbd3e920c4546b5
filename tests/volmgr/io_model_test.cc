// Model-based test of the I/O engine: random reads, writes, discards, write-zeroes and
// flushes of random size and alignment, many in flight with completions in random order,
// checked byte for byte against an in-memory copy of the volume.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <list>

#include "io_test_util.h"

namespace rsio::volmgr::io::test {
namespace {

struct Range {
  uint64_t off, len;
  bool overlaps(uint64_t o, uint64_t l) const { return o < off + len && off < o + l; }
};

// Runs `ops` random requests with up to `depth` in flight against `vol`, checking every
// completion against `model` (the expected volume content, updated as writes are issued:
// no request overlaps one in flight, so issue order is completion order for every byte).
void run_random_ops(Loop& loop, VolumeIo& vol, std::vector<uint8_t>& model, std::mt19937_64& rng,
                    int ops, int depth, const std::string& label) {
  const uint64_t size = vol.size_bytes();
  std::list<InFlight> flights;
  std::vector<Range> busy;
  int issued = 0, completed = 0, failures = 0;
  uint64_t next_id = 1;
  auto pick = [&](uint64_t max_len) -> Range {
    // Mostly small, sometimes large; any alignment.
    uint64_t len = rng() % 4 == 0 ? 1 + rng() % max_len : 1 + rng() % 9000;
    len = std::min(len, size);
    const uint64_t off = rng() % (size - len + 1);
    return {off, len};
  };
  while (completed < ops) {
    while (issued < ops && static_cast<int>(flights.size()) < depth) {
      const int kind = static_cast<int>(rng() % 100);
      Range r = pick(size / 3);
      bool clash = false;
      for (const Range& b : busy) clash = clash || b.overlaps(r.off, r.len);
      if (clash) break;  // wait for a completion
      flights.emplace_back();
      InFlight& f = flights.back();
      f.id = next_id++;
      f.req.user = &f;
      f.req.done = on_done;
      f.req.offset_bytes = r.off;
      f.req.length_bytes = r.len;
      if (kind < 45) {
        f.req.op = Op::kRead;
        f.buf.assign(r.len, 0xEE);
        scatter(f, rng);
      } else if (kind < 85) {
        f.req.op = Op::kWrite;
        f.req.fua = rng() % 8 == 0;
        f.buf.resize(r.len);
        for (auto& b : f.buf) b = static_cast<uint8_t>(rng());
        scatter(f, rng);
        std::memcpy(model.data() + r.off, f.buf.data(), r.len);
      } else if (kind < 92) {
        f.req.op = rng() % 2 ? Op::kDiscard : Op::kWriteZeroes;
        std::memset(model.data() + r.off, 0, r.len);
      } else {
        f.req.op = Op::kFlush;
        r = {0, 0};
      }
      busy.push_back(r);
      const Range mine = r;
      const uint64_t id = f.id;
      auto it = std::prev(flights.end());
      f.check = [&, mine, id, it](InFlight& done, IoStatus status) {
        ++completed;
        if (status != IoStatus::kOk) {
          ++failures;
          ADD_FAILURE() << label << ": request " << id << " " << op_name(done.req.op)
                        << " offset=" << mine.off << " length=" << mine.len
                        << " failed: " << io_status_name(status);
        } else if (done.req.op == Op::kRead &&
                   std::memcmp(done.buf.data(), model.data() + mine.off, mine.len) != 0) {
          ++failures;
          ADD_FAILURE() << label << ": read " << id << " offset=" << mine.off
                        << " length=" << mine.len << " returned wrong data";
        }
        for (size_t i = 0; i < busy.size(); ++i)
          if (busy[i].off == mine.off && busy[i].len == mine.len) {
            busy.erase(busy.begin() + static_cast<long>(i));
            break;
          }
        flights.erase(it);
      };
      ++issued;
      vol.submit(&f.req);
    }
    loop.run_once(true);
    ASSERT_LT(failures, 5) << "stopping after repeated failures";
  }
  EXPECT_EQ(vol.in_flight(), 0u);
}

TEST(IoEngineModel, RandomOpsOnEveryLayoutMatchTheModel) {
  const uint64_t seed = test_seed();
  std::cout << "seed " << seed << " (set RSIO_TEST_SEED to replay)\n";
  std::mt19937_64 rng(seed);
  auto loop = std::move(*Loop::create());
  int total = 0;
  for (const LayoutCase& c : layout_cases()) {
    auto tv = make_volume(*loop, c, seed);
    ASSERT_EQ(tv->info.logical_extents(), c.logical_extents) << c.name;
    for (auto& d : tv->devices) d->set_faults(FaultConfig{.max_delay_turns = 4});
    auto vol = VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, tv->lookup_fn(), {});
    ASSERT_TRUE(vol) << vol.error().message;
    std::vector<uint8_t> model((*vol)->size_bytes(), 0);
    const int ops = 3500;
    run_random_ops(*loop, **vol, model, rng, ops, 32, c.name);
    total += ops;
    // Every mirror leg holds the same data as the model.
    if (c.spec.layout == Layout::kMirrored) {
      for (uint32_t leg = 0; leg < c.spec.mirrors; ++leg) {
        uint64_t checked = 0;
        for (const Segment& s : tv->info.segments) {
          const Area& a = s.areas[leg];
          const PvInfo& pv = tv->pvs[a.pv_id - 1];
          const auto& bytes = tv->devices[a.pv_id - 1]->contents();
          const uint64_t dev_off = pv.data_offset_bytes + a.pv_start_extent * tv->extent_bytes;
          const uint64_t len = s.extent_count * tv->extent_bytes;
          EXPECT_EQ(std::memcmp(bytes.data() + dev_off,
                                model.data() + s.start_extent * tv->extent_bytes, len),
                    0)
              << c.name << " leg " << leg;
          checked += len;
        }
        EXPECT_EQ(checked, model.size());
      }
    }
    if (tv->info.segments.size() > 1 || c.spec.layout == Layout::kStriped) {
      EXPECT_GT((*vol)->stats().split_ops, 0u) << c.name << ": requests must cross boundaries";
    }
  }
  EXPECT_GE(total, 20000);
}

// The same random workload on real files through io_uring: buffered I/O on tmpfs, O_DIRECT
// for aligned requests on the disk-backed temporary directory, hole punching and zero
// ranges through fallocate.
TEST(IoEngineModel, RandomOpsOnFilesThroughIoUring) {
  const uint64_t seed = test_seed();
  std::cout << "seed " << seed << " (set RSIO_TEST_SEED to replay)\n";
  std::mt19937_64 rng(seed);
  auto loop = std::move(*Loop::create());
  for (const char* base : {"/dev/shm", "/tmp"}) {
    if (!std::filesystem::is_directory(base)) continue;
    char tmpl[64];
    std::snprintf(tmpl, sizeof(tmpl), "%s/rsio-io-test-XXXXXX", base);
    const std::string dir = ::mkdtemp(tmpl);
    for (const LayoutCase& c : layout_cases()) {
      auto tv = make_volume(*loop, c, seed);
      std::vector<std::unique_ptr<Device>> files;
      for (const PvInfo& pv : tv->pvs) {
        const std::string path = dir + "/" + c.name + "-" + std::to_string(pv.id);
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(pv.size_bytes)), 0);
        ::close(fd);
        auto dev = open_uring_device(*loop, path, UringDeviceOptions{});
        ASSERT_TRUE(dev) << dev.error().message;
        files.push_back(std::move(*dev));
      }
      DeviceLookup lookup = [&](int64_t id) { return files[id - 1].get(); };
      auto vol = VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, lookup, {});
      ASSERT_TRUE(vol);
      std::vector<uint8_t> model((*vol)->size_bytes(), 0);
      run_random_ops(*loop, **vol, model, rng, 700, 32, std::string(base) + " " + c.name);
      // 4 KiB-aligned requests take the O_DIRECT path where the file system has it.
      const size_t len = std::min<size_t>(1 << 20, (*vol)->size_bytes() / 4096 * 4096);
      void* p = nullptr;
      ASSERT_EQ(::posix_memalign(&p, 4096, len), 0);
      std::unique_ptr<void, decltype(&std::free)> owner(p, &std::free);
      std::memcpy(p, model.data(), len);
      iovec iov{p, len};
      IoRequest req;
      req.op = Op::kRead;
      req.offset_bytes = 0;
      req.length_bytes = len;
      req.iov = &iov;
      req.iov_count = 1;
      bool done = false;
      IoStatus status = IoStatus::kIoError;
      struct Ctx {
        bool* done;
        IoStatus* status;
      } ctx{&done, &status};
      req.user = &ctx;
      req.done = [](IoRequest* r, IoStatus s) {
        auto* x = static_cast<Ctx*>(r->user);
        *x->done = true;
        *x->status = s;
      };
      std::memset(p, 0xAB, len);
      (*vol)->submit(&req);
      loop->run_until([&] { return done; });
      EXPECT_EQ(status, IoStatus::kOk);
      EXPECT_EQ(std::memcmp(p, model.data(), len), 0) << base << " " << c.name << " aligned read";
      vol->reset();
    }
    std::filesystem::remove_all(dir);
  }
}

TEST(IoEngine, RejectsOutOfRangeReadOnlyAndMalformedRequests) {
  auto loop = std::move(*Loop::create());
  auto tv = make_volume(*loop, layout_cases()[0], 1);
  VolumeIoOptions ro;
  ro.read_only = true;
  auto vol =
      std::move(*VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, tv->lookup_fn(), ro));
  std::vector<uint8_t> buf(4096);
  iovec iov{buf.data(), buf.size()};
  struct Case {
    Op op;
    uint64_t off, len;
    int iov_count;
    IoStatus expect;
  };
  const uint64_t size = vol->size_bytes();
  const std::vector<Case> cases = {
      {Op::kRead, size - 100, 4096, 1, IoStatus::kOutOfRange},
      {Op::kRead, UINT64_MAX - 10, 4096, 1, IoStatus::kOutOfRange},
      {Op::kRead, 0, 4000, 1, IoStatus::kInvalid},
      {Op::kWrite, 0, 4096, 1, IoStatus::kReadOnly},
      {Op::kDiscard, 0, 4096, 0, IoStatus::kReadOnly},
      {Op::kRead, 0, 4096, 1, IoStatus::kOk},
      {Op::kFlush, 0, 0, 0, IoStatus::kOk},
  };
  for (const Case& c : cases) {
    IoRequest req;
    req.op = c.op;
    req.offset_bytes = c.off;
    req.length_bytes = c.len;
    req.iov = &iov;
    req.iov_count = c.iov_count;
    IoStatus got = IoStatus::kIoError;
    bool done = false;
    struct Ctx {
      IoStatus* got;
      bool* done;
    } ctx{&got, &done};
    req.user = &ctx;
    req.done = [](IoRequest* r, IoStatus s) {
      auto* x = static_cast<Ctx*>(r->user);
      *x->got = s;
      *x->done = true;
    };
    vol->submit(&req);
    EXPECT_FALSE(done) << "completion must not run inside submit()";
    loop->run_until([&] { return done; });
    EXPECT_EQ(got, c.expect) << op_name(c.op) << " offset=" << c.off << " length=" << c.len;
  }
}

}  // namespace
}  // namespace rsio::volmgr::io::test
