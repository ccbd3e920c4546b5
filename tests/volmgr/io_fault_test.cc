// The I/O engine under faults: crashes that lose unflushed writes, failing mirror legs,
// errors on non-redundant layouts, and growth while requests are in flight.
#include <gtest/gtest.h>

#include <cstring>
#include <list>
#include <map>
#include <set>

#include "common/units.h"
#include "io_test_util.h"

namespace rsio::volmgr::io::test {
namespace {

constexpr uint64_t kSector = 512;

// Sector contents that name the write that produced them: word i of sector s written by
// write w is w * 1000003 + s * 64 + i, so a read tells which write a sector holds and
// whether it is torn.
void fill(uint8_t* p, uint64_t first_sector, uint64_t sectors, uint64_t write_id) {
  for (uint64_t s = 0; s < sectors; ++s)
    for (uint64_t i = 0; i < kSector / 8; ++i) {
      const uint64_t v = write_id * 1000003 + (first_sector + s) * 64 + i;
      std::memcpy(p + s * kSector + i * 8, &v, 8);
    }
}

// The write id a sector holds (0 for never written), or -1 when its words disagree.
int64_t identify(const uint8_t* p, uint64_t sector) {
  uint64_t w0;
  std::memcpy(&w0, p, 8);
  if (w0 == 0) {
    for (uint64_t i = 0; i < kSector; ++i)
      if (p[i] != 0) return -1;
    return 0;
  }
  if (w0 < sector * 64 || (w0 - sector * 64) % 1000003 != 0) return -1;
  const uint64_t id = (w0 - sector * 64) / 1000003;
  for (uint64_t i = 0; i < kSector / 8; ++i) {
    uint64_t v;
    std::memcpy(&v, p + i * 8, 8);
    if (v != id * 1000003 + sector * 64 + i) return -1;
  }
  return static_cast<int64_t>(id);
}

struct Completion {
  bool done = false;
  IoStatus status = IoStatus::kOk;
};

IoStatus run_one(Loop& loop, VolumeIo& vol, Op op, uint64_t off, uint64_t len, uint8_t* buf,
                 bool fua = false) {
  IoRequest req;
  iovec iov{buf, static_cast<size_t>(len)};
  req.op = op;
  req.fua = fua;
  req.offset_bytes = off;
  req.length_bytes = len;
  req.iov = buf ? &iov : nullptr;
  req.iov_count = buf ? 1 : 0;
  Completion c;
  req.user = &c;
  req.done = [](IoRequest* r, IoStatus s) {
    auto* x = static_cast<Completion*>(r->user);
    x->done = true;
    x->status = s;
  };
  vol.submit(&req);
  loop.run_until([&] { return c.done; });
  return c.status;
}

// Every write completed before a completed FLUSH, and every completed FUA write, reads back
// after a crash unless a later write to the same sector replaced it.
TEST(IoEngineCrash, DurableWritesSurviveACrash) {
  const uint64_t seed = test_seed();
  std::cout << "seed " << seed << " (set RSIO_TEST_SEED to replay)\n";
  std::mt19937_64 rng(seed);
  auto loop = std::move(*Loop::create());
  auto cases = layout_cases();
  int crash_points = 0;
  uint64_t durable_sectors_checked = 0;
  for (int round = 0; round < 1020; ++round) {
    const LayoutCase& c = cases[round % cases.size()];
    auto tv = make_volume(*loop, c, seed + round);
    for (auto& d : tv->devices) d->set_faults(FaultConfig{.max_delay_turns = 3});
    auto vol =
        std::move(*VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, tv->lookup_fn(), {}));
    const uint64_t sectors = std::min<uint64_t>(vol->size_bytes() / kSector, 4096);

    struct Write {
      uint64_t id, first, count;
      bool fua = false, completed = false;
      uint64_t completed_seq = 0;
    };
    struct Flush {
      uint64_t submitted_seq = 0;
      bool completed = false;
    };
    std::vector<Write> writes;
    std::vector<Flush> flushes;
    std::map<uint64_t, std::vector<size_t>> history;  // sector -> writes in order
    std::vector<int> sector_busy(sectors, 0);
    uint64_t seq = 0;
    struct Op_ {
      IoRequest req;
      iovec iov{};
      std::vector<uint8_t> buf;
      size_t index = 0;
      bool is_flush = false;
      bool done = false;
      bool succeeded = false;
    };
    std::list<Op_> ops;
    const int n_ops = 10 + static_cast<int>(rng() % 70);
    int issued = 0;
    auto on_complete = [](IoRequest* r, IoStatus s) {
      auto* o = static_cast<Op_*>(r->user);
      o->done = true;
      o->succeeded = s == IoStatus::kOk;
    };
    // Records completions in the order the test sees them.
    auto reap = [&] {
      for (auto it = ops.begin(); it != ops.end();) {
        if (!it->done) {
          ++it;
          continue;
        }
        const bool ok = it->succeeded;
        if (it->is_flush) {
          flushes[it->index].completed = ok;
        } else {
          Write& w = writes[it->index];
          w.completed = ok;
          w.completed_seq = ++seq;
          for (uint64_t s = w.first; s < w.first + w.count; ++s) sector_busy[s] = 0;
        }
        it = ops.erase(it);
      }
    };
    // Issue and complete a random mix, then crash with some still in flight.
    while (issued < n_ops) {
      if (rng() % 6 == 0) {
        ops.emplace_back();
        Op_& o = ops.back();
        o.is_flush = true;
        o.index = flushes.size();
        flushes.push_back({++seq, false});
        o.req.op = Op::kFlush;
        o.req.user = &o;
        o.req.done = on_complete;
        vol->submit(&o.req);
      } else {
        const uint64_t count = 1 + rng() % 16;
        const uint64_t first = rng() % (sectors - count + 1);
        bool clash = false;
        for (uint64_t s = first; s < first + count; ++s) clash = clash || sector_busy[s];
        if (clash) {
          loop->run_once(true);
          reap();
          continue;
        }
        ops.emplace_back();
        Op_& o = ops.back();
        o.index = writes.size();
        writes.push_back({writes.size() + 1, first, count, rng() % 5 == 0});
        for (uint64_t s = first; s < first + count; ++s) {
          sector_busy[s] = 1;
          history[s].push_back(o.index);
        }
        o.buf.resize(count * kSector);
        fill(o.buf.data(), first, count, writes.back().id);
        o.iov = {o.buf.data(), o.buf.size()};
        o.req.op = Op::kWrite;
        o.req.fua = writes.back().fua;
        o.req.offset_bytes = first * kSector;
        o.req.length_bytes = count * kSector;
        o.req.iov = &o.iov;
        o.req.iov_count = 1;
        o.req.user = &o;
        o.req.done = on_complete;
        vol->submit(&o.req);
      }
      ++issued;
      // Let some completions happen.
      for (int k = static_cast<int>(rng() % 4); k > 0; --k) loop->run_once(false);
      reap();
    }
    // Power loss, then let the engine see every in-flight operation fail.
    for (auto& d : tv->devices) d->crash();
    loop->run_until([&] { return vol->in_flight() == 0; });
    ops.clear();
    ++crash_points;

    // Reopen and read everything back.
    auto reopened =
        std::move(*VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, tv->lookup_fn(), {}));
    std::vector<uint8_t> data(sectors * kSector);
    ASSERT_EQ(run_one(*loop, *reopened, Op::kRead, 0, data.size(), data.data()), IoStatus::kOk);
    auto durable = [&](const Write& w) {
      if (!w.completed) return false;
      if (w.fua) return true;
      for (const Flush& f : flushes)
        if (f.completed && f.submitted_seq > w.completed_seq) return true;
      return false;
    };
    for (uint64_t s = 0; s < sectors; ++s) {
      const int64_t got = identify(data.data() + s * kSector, s);
      ASSERT_GE(got, 0) << c.name << " round " << round << " sector " << s << " is torn";
      const auto& h = history[s];
      // The last durable write to the sector, or none: the sector must hold it or a later one.
      size_t from = 0;
      bool have_durable = false;
      for (size_t i = 0; i < h.size(); ++i)
        if (durable(writes[h[i]])) {
          from = i;
          have_durable = true;
        }
      bool ok = !have_durable && got == 0;
      for (size_t i = from; i < h.size() && !ok; ++i)
        ok = writes[h[i]].id == static_cast<uint64_t>(got);
      if (have_durable) ++durable_sectors_checked;
      if (!ok) {
        const Write& w = writes[h[from]];
        std::string fl;
        for (const Flush& f : flushes)
          fl += " " + std::to_string(f.submitted_seq) + (f.completed ? "ok" : "x");
        FAIL() << c.name << " round " << round << " sector " << s << " holds write " << got
               << " but write " << w.id << " was durable (fua=" << w.fua
               << " completed_seq=" << w.completed_seq << "; flushes:" << fl << ")";
      }
    }
  }
  EXPECT_GE(crash_points, 1000);
  EXPECT_GT(durable_sectors_checked, 10000u);
}

// One mirror leg fails every operation for a while under load: no request fails, the leg is
// marked faulty once, and reads keep returning the right data from the other leg.
TEST(IoEngineMirror, FailingLegIsDroppedWithoutClientErrors) {
  struct Events : VolumeEvents {
    std::vector<uint32_t> faulty;
    void leg_faulty(int64_t, uint32_t leg, const std::string&) override { faulty.push_back(leg); }
  } events;
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  auto loop = std::move(*Loop::create());
  auto cases = layout_cases();
  for (const LayoutCase& c : {cases[4], cases[5]}) {
    events.faulty.clear();
    auto tv = make_volume(*loop, c, seed);
    VolumeIoOptions opt;
    opt.events = &events;
    auto vol = std::move(
        *VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, tv->lookup_fn(), opt));
    const uint64_t size = vol->size_bytes();
    std::vector<uint8_t> model(size, 0);
    // The device of leg 1's first area fails everything after the first 200 requests.
    const int64_t bad_pv = tv->info.segments[0].areas[1].pv_id;
    int errors = 0;
    for (int i = 0; i < 2000; ++i) {
      if (i == 200) tv->devices[bad_pv - 1]->set_faults(FaultConfig{.fail_everything = true});
      const uint64_t len = 1 + rng() % 20000;
      const uint64_t off = rng() % (size - len);
      std::vector<uint8_t> buf(len);
      if (rng() % 2) {
        for (auto& b : buf) b = static_cast<uint8_t>(rng());
        std::memcpy(model.data() + off, buf.data(), len);
        errors += run_one(*loop, *vol, Op::kWrite, off, len, buf.data()) != IoStatus::kOk;
      } else {
        errors += run_one(*loop, *vol, Op::kRead, off, len, buf.data()) != IoStatus::kOk;
        EXPECT_EQ(std::memcmp(buf.data(), model.data() + off, len), 0) << "read " << i;
      }
      if (i % 50 == 0) errors += run_one(*loop, *vol, Op::kFlush, 0, 0, nullptr) != IoStatus::kOk;
    }
    EXPECT_EQ(errors, 0) << c.name;
    ASSERT_EQ(events.faulty.size(), 1u) << c.name;
    EXPECT_EQ(events.faulty[0], 1u);
    EXPECT_EQ(vol->leg_states()[1], LegState::kFaulty);
    EXPECT_EQ(vol->leg_states()[0], LegState::kInSync);
  }
}

TEST(IoEngineMirror, LastInSyncLegFailingIsAnError) {
  auto loop = std::move(*Loop::create());
  auto tv = make_volume(*loop, layout_cases()[4], 7);
  auto vol =
      std::move(*VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, tv->lookup_fn(), {}));
  for (auto& d : tv->devices) d->set_faults(FaultConfig{.fail_everything = true});
  std::vector<uint8_t> buf(4096, 1);
  EXPECT_EQ(run_one(*loop, *vol, Op::kWrite, 0, buf.size(), buf.data()), IoStatus::kIoError);
  EXPECT_EQ(run_one(*loop, *vol, Op::kRead, 0, buf.size(), buf.data()), IoStatus::kIoError);
  EXPECT_EQ(static_cast<int>(
                std::count(vol->leg_states().begin(), vol->leg_states().end(), LegState::kInSync)),
            1)
      << "one leg always stays in sync: it holds the newest data";
}

// On layouts without redundancy every device error reaches exactly the requests that touch
// the failing range, and no read returns wrong data.
TEST(IoEngineErrors, ErrorsReachExactlyTheAffectedRequests) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  auto loop = std::move(*Loop::create());
  auto cases = layout_cases();
  for (const LayoutCase& c : {cases[0], cases[1], cases[2], cases[3]}) {
    auto tv = make_volume(*loop, c, seed);
    auto vol =
        std::move(*VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, tv->lookup_fn(), {}));
    const uint64_t size = vol->size_bytes();
    // Write a known pattern first.
    std::vector<uint8_t> model(size);
    for (auto& b : model) b = static_cast<uint8_t>(rng());
    ASSERT_EQ(run_one(*loop, *vol, Op::kWrite, 0, size, model.data()), IoStatus::kOk);
    // Naive map of every volume byte to (device, device offset), from the segments.
    auto where = [&](uint64_t off) {
      for (const Segment& s : tv->info.segments) {
        const uint64_t start = s.start_extent * tv->extent_bytes,
                       len = s.extent_count * tv->extent_bytes;
        if (off < start || off >= start + len) continue;
        uint64_t in = off - start;
        uint32_t k = 0;
        if (c.spec.layout == Layout::kStriped) {
          const uint64_t ss = c.spec.stripe_size_bytes, unit = in / ss;
          k = static_cast<uint32_t>(unit % c.spec.stripes);
          in = (unit / c.spec.stripes) * ss + in % ss;
        }
        const Area& a = s.areas[k];
        return std::pair<int64_t, uint64_t>(a.pv_id, tv->pvs[a.pv_id - 1].data_offset_bytes +
                                                         a.pv_start_extent * tv->extent_bytes + in);
      }
      return std::pair<int64_t, uint64_t>(0, 0);
    };
    // A bad range on the device that holds the middle of the volume.
    auto [pv, dev_off] = where(size / 2);
    const uint64_t bad_start = dev_off - 3000, bad_end = dev_off + 5000;
    FaultConfig f;
    f.error_start_bytes = bad_start;
    f.error_end_bytes = bad_end;
    tv->devices[pv - 1]->set_faults(f);
    int failed = 0, succeeded = 0;
    for (int i = 0; i < 3000; ++i) {
      const uint64_t len = 1 + rng() % 30000;
      const uint64_t off =
          (rng() % 4 == 0 ? size / 2 - rng() % 40000 : rng() % size) % (size - len);
      bool touches = false;
      for (uint64_t b = off; b < off + len && !touches; ++b) {
        auto [p2, o2] = where(b);
        touches = p2 == pv && o2 >= bad_start && o2 < bad_end;
      }
      std::vector<uint8_t> buf(len);
      const IoStatus s = run_one(*loop, *vol, Op::kRead, off, len, buf.data());
      if (touches) {
        EXPECT_EQ(s, IoStatus::kIoError) << c.name << " read " << off << "+" << len;
        ++failed;
      } else {
        EXPECT_EQ(s, IoStatus::kOk) << c.name << " read " << off << "+" << len;
        EXPECT_EQ(std::memcmp(buf.data(), model.data() + off, len), 0) << c.name;
        ++succeeded;
      }
    }
    EXPECT_GT(failed, 50) << c.name;
    EXPECT_GT(succeeded, 50) << c.name;
  }
}

// Growing a volume while requests are in flight: none fails, the new space is usable at once.
TEST(IoEngineGrow, GrowUnderConcurrentIo) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  auto loop = std::move(*Loop::create());
  for (const LayoutCase& c : {layout_cases()[1], layout_cases()[2], layout_cases()[4]}) {
    LayoutCase big = c;
    for (auto& e : big.pv_extents) e += 8;
    auto tv = make_volume(*loop, big, seed, false);
    // Start from a smaller mapping: the first half of the segments' extents.
    VolumeInfo small = tv->info;
    const uint64_t unit = c.spec.logical_per_area_extent();
    cut_segments(c.spec, small.segments, (tv->info.logical_extents() / unit / 2) * unit);
    small.size_bytes = small.logical_extents() * tv->extent_bytes;
    for (auto& d : tv->devices) d->set_faults(FaultConfig{.max_delay_turns = 5});
    // Mirrors get a bitmap with small regions, so growing adds regions.
    MemDevice bitmap(*loop, "bitmap", 4096, seed);
    VolumeIoOptions opt;
    if (c.spec.layout == Layout::kMirrored) {
      opt.bitmap.device = &bitmap;
      opt.bitmap.region_bytes = 64 * 1024;
    }
    auto vol =
        std::move(*VolumeIo::open(*loop, small, tv->extent_bytes, tv->pvs, tv->lookup_fn(), opt));
    const uint64_t old_size = vol->size_bytes();
    struct Req {
      IoRequest req;
      std::vector<uint8_t> buf;
      iovec iov{};
      IoStatus status = IoStatus::kInvalid;
      bool done = false;
    };
    std::list<Req> reqs;
    auto issue = [&](uint64_t limit) {
      reqs.emplace_back();
      Req& r = reqs.back();
      r.buf.assign(1 + rng() % 8192, 0x5a);
      r.iov = {r.buf.data(), r.buf.size()};
      r.req.op = rng() % 2 ? Op::kWrite : Op::kRead;
      r.req.offset_bytes = rng() % (limit - r.buf.size());
      r.req.length_bytes = r.buf.size();
      r.req.iov = &r.iov;
      r.req.iov_count = 1;
      r.req.user = &r;
      r.req.done = [](IoRequest* q, IoStatus s) {
        auto* x = static_cast<Req*>(q->user);
        x->status = s;
        x->done = true;
      };
      vol->submit(&r.req);
    };
    for (int i = 0; i < 64; ++i) issue(old_size);
    loop->run_once(false);
    ASSERT_TRUE(vol->update(tv->info, tv->pvs, tv->lookup_fn()));
    EXPECT_GT(vol->size_bytes(), old_size);
    for (int i = 0; i < 64; ++i) issue(vol->size_bytes());
    loop->run_until([&] { return vol->in_flight() == 0; });
    for (const Req& r : reqs) EXPECT_EQ(r.status, IoStatus::kOk) << c.name;
    // The new tail is readable and writable.
    std::vector<uint8_t> tail(4096, 0x77), back(4096);
    const uint64_t off = vol->size_bytes() - tail.size();
    EXPECT_EQ(run_one(*loop, *vol, Op::kWrite, off, tail.size(), tail.data()), IoStatus::kOk);
    EXPECT_EQ(run_one(*loop, *vol, Op::kRead, off, back.size(), back.data()), IoStatus::kOk);
    EXPECT_EQ(back, tail);
  }
}

}  // namespace
}  // namespace rsio::volmgr::io::test

namespace rsio::volmgr::io::test {
namespace {

// A 2-way mirror with a write-intent bitmap on its own in-memory device.
struct MirrorRig {
  std::unique_ptr<Loop> loop = std::move(*Loop::create());
  std::unique_ptr<TestVolume> tv;
  std::unique_ptr<MemDevice> bitmap;
  std::unique_ptr<VolumeIo> vol;
  struct Events : VolumeEvents {
    std::vector<uint32_t> faulty, in_sync;
    void leg_faulty(int64_t, uint32_t leg, const std::string&) override { faulty.push_back(leg); }
    void leg_in_sync(int64_t, uint32_t leg) override { in_sync.push_back(leg); }
  } events;
  static constexpr uint64_t kRegion = 64 * 1024;

  explicit MirrorRig(uint64_t seed) {
    LayoutCase c{"mirror2", {Layout::kMirrored, 1, 0, 2}, 3 * 64 * 1024, {12, 12}, 10};
    tv = make_volume(*loop, c, seed);
    bitmap = std::make_unique<MemDevice>(*loop, "bitmap", 4096, seed);
  }
  void open(std::vector<LegState> legs = {}) {
    VolumeIoOptions opt;
    opt.events = &events;
    opt.leg_states = std::move(legs);
    opt.bitmap.device = bitmap.get();
    opt.bitmap.region_bytes = kRegion;
    opt.bitmap.initial_bits.assign(bitmap->contents().begin(), bitmap->contents().end());
    vol = std::move(
        *VolumeIo::open(*loop, tv->info, tv->extent_bytes, tv->pvs, tv->lookup_fn(), opt));
  }
  uint64_t regions() const { return div_round_up(vol->size_bytes(), kRegion); }
  void settle() {
    loop->run_until([&] { return vol->in_flight() == 0 && !vol->resync_progress().active; });
    for (int i = 0; i < 20; ++i) loop->run_once(false);  // lazy bitmap writes
  }
  // Leg k's bytes of the volume, read straight from its devices.
  std::vector<uint8_t> leg_bytes(uint32_t k) const {
    std::vector<uint8_t> out;
    for (const Segment& s : tv->info.segments) {
      const Area& a = s.areas[k];
      const uint64_t off =
          tv->pvs[a.pv_id - 1].data_offset_bytes + a.pv_start_extent * tv->extent_bytes;
      const auto& d = tv->devices[a.pv_id - 1]->contents();
      out.insert(out.end(), d.begin() + off, d.begin() + off + s.extent_count * tv->extent_bytes);
    }
    return out;
  }
  // Writes `bytes` into leg `leg` at volume offset `vol_off` behind the engine's back (the
  // range must lie in one segment), as a failing or replaced disk would.
  void write_leg(uint32_t leg, uint64_t vol_off, std::vector<uint8_t> bytes) {
    for (const Segment& s : tv->info.segments) {
      const uint64_t start = s.start_extent * tv->extent_bytes;
      if (vol_off < start || vol_off >= start + s.extent_count * tv->extent_bytes) continue;
      const Area& a = s.areas[leg];
      iovec iov{bytes.data(), bytes.size()};
      DevOp op;
      op.op = Op::kWrite;
      op.offset_bytes = tv->pvs[a.pv_id - 1].data_offset_bytes +
                        a.pv_start_extent * tv->extent_bytes + (vol_off - start);
      op.length_bytes = bytes.size();
      op.iov = &iov;
      op.iov_count = 1;
      bool done = false;
      op.ctx = &done;
      op.done = [](DevOp* o, int) { *static_cast<bool*>(o->ctx) = true; };
      tv->devices[a.pv_id - 1]->submit(&op);
      loop->run_until([&] { return done; });
      return;
    }
    ADD_FAILURE() << "offset " << vol_off << " is outside the volume";
  }
  // Injects `f` into every device of leg `leg`.
  void set_leg_faults(uint32_t leg, const FaultConfig& f) {
    for (const Segment& s : tv->info.segments) tv->devices[s.areas[leg].pv_id - 1]->set_faults(f);
  }
  // Fills the whole volume with random bytes (returned), durably, and waits for the bitmap.
  std::vector<uint8_t> fill_durably(std::mt19937_64& rng) {
    std::vector<uint8_t> data(vol->size_bytes());
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    EXPECT_EQ(run_one(*loop, *vol, Op::kWrite, 0, data.size(), data.data()), IoStatus::kOk);
    EXPECT_EQ(run_one(*loop, *vol, Op::kFlush, 0, 0, nullptr), IoStatus::kOk);
    settle();
    return data;
  }
  void crash() {
    for (auto& d : tv->devices) d->crash();
    bitmap->crash();
    loop->run_until([&] { return vol->in_flight() == 0; });
    vol.reset();
  }
};

TEST(IoEngineMirror, CrashResyncCopiesOnlyMarkedRegions) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 30; ++round) {
    MirrorRig rig(seed + round);
    for (auto& d : rig.tv->devices) d->set_faults(FaultConfig{.max_delay_turns = 3});
    rig.open();
    const uint64_t size = rig.vol->size_bytes();
    // Writes all over, with flushes (which clear bits) and then a burst of writes to a few
    // regions that the crash interrupts.
    struct W {
      IoRequest req;
      std::vector<uint8_t> buf;
      iovec iov{};
    };
    std::list<W> ws;
    auto write = [&](uint64_t off, uint64_t len, bool fua) {
      ws.emplace_back();
      W& w = ws.back();
      w.buf.resize(len);
      for (auto& b : w.buf) b = static_cast<uint8_t>(rng());
      w.iov = {w.buf.data(), len};
      w.req.op = Op::kWrite;
      w.req.fua = fua;
      w.req.offset_bytes = off;
      w.req.length_bytes = len;
      w.req.iov = &w.iov;
      w.req.iov_count = 1;
      w.req.done = [](IoRequest*, IoStatus) {};
      rig.vol->submit(&w.req);
    };
    // Concurrent writes to the same bytes have no defined order (legs may apply them
    // differently), so every batch below writes disjoint ranges.
    for (int i = 0; i < 40; ++i) {
      write(rng() % (size - 8192), 1 + rng() % 8192, rng() % 3 == 0);
      rig.settle();
    }
    IoRequest flush;
    flush.op = Op::kFlush;
    flush.done = [](IoRequest*, IoStatus) {};
    rig.vol->submit(&flush);
    rig.settle();
    EXPECT_EQ(rig.vol->marked_regions(), 0u) << "a FLUSH with nothing in flight clears every bit";
    EXPECT_EQ(rig.leg_bytes(0), rig.leg_bytes(1)) << "legs equal before the burst";
    std::set<uint64_t> touched, slots;
    while (slots.size() < 12) slots.insert(rng() % (size / 4096));
    for (uint64_t slot : slots) {
      const uint64_t off = slot * 4096 + rng() % 100;
      const uint64_t len = std::min<uint64_t>(4096 - 100, size - off);
      touched.insert(off / MirrorRig::kRegion);
      touched.insert((off + len - 1) / MirrorRig::kRegion);
      write(off, len, rng() % 2 == 0);
    }
    for (int k = static_cast<int>(rng() % 12); k > 0; --k) rig.loop->run_once(false);
    rig.crash();

    rig.open();
    const ResyncProgress at_open = rig.vol->resync_progress();
    rig.settle();
    const uint64_t copied = rig.vol->stats().resync_regions;
    EXPECT_LE(copied, touched.size()) << "only regions written since the last flush are copied";
    EXPECT_EQ(copied, at_open.regions_total);
    {
      const auto l0 = rig.leg_bytes(0), l1 = rig.leg_bytes(1);
      size_t first = 0;
      while (first < l0.size() && l0[first] == l1[first]) ++first;
      EXPECT_EQ(first, l0.size()) << "round " << round << ": legs differ from byte " << first
                                  << " (region " << first / MirrorRig::kRegion << "); copied "
                                  << copied << " regions";
    }
    EXPECT_EQ(rig.vol->marked_regions(), 0u);
    ws.clear();
  }
}

TEST(IoEngineMirror, RestoredLegResyncsOnlyRegionsWrittenWhileAway) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  MirrorRig rig(seed);
  rig.open();
  const uint64_t size = rig.vol->size_bytes();
  std::vector<uint8_t> model = rig.fill_durably(rng);
  ASSERT_EQ(rig.vol->marked_regions(), 0u);
  // Leg 1's devices fail: the leg drops out; writes go on to leg 0 and mark their regions.
  rig.set_leg_faults(1, FaultConfig{.fail_everything = true});
  std::set<uint64_t> touched;
  for (int i = 0; i < 25; ++i) {
    const uint64_t len = 1 + rng() % 5000, off = rng() % (size - len);
    std::vector<uint8_t> buf(len);
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    std::memcpy(model.data() + off, buf.data(), len);
    for (uint64_t r = off / MirrorRig::kRegion; r <= (off + len - 1) / MirrorRig::kRegion; ++r)
      touched.insert(r);
    ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kWrite, off, len, buf.data()), IoStatus::kOk);
    if (i % 5 == 0) {
      ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kFlush, 0, 0, nullptr), IoStatus::kOk);
    }
  }
  rig.settle();
  ASSERT_EQ(rig.vol->leg_states()[1], LegState::kFaulty);
  EXPECT_EQ(rig.vol->marked_regions(), touched.size()) << "bits stay while a leg is away";
  // The leg comes back: exactly the marked regions are copied, under load.
  rig.set_leg_faults(1, FaultConfig{});
  ASSERT_TRUE(rig.vol->restore_leg(1));
  EXPECT_EQ(rig.vol->leg_states()[1], LegState::kResyncing);
  for (int i = 0; i < 20; ++i) {  // writes and reads while it resyncs
    const uint64_t len = 1 + rng() % 5000, off = rng() % (size - len);
    std::vector<uint8_t> buf(len);
    if (i % 2) {
      for (auto& b : buf) b = static_cast<uint8_t>(rng());
      std::memcpy(model.data() + off, buf.data(), len);
      EXPECT_EQ(run_one(*rig.loop, *rig.vol, Op::kWrite, off, len, buf.data()), IoStatus::kOk);
    } else {
      EXPECT_EQ(run_one(*rig.loop, *rig.vol, Op::kRead, off, len, buf.data()), IoStatus::kOk);
      EXPECT_EQ(std::memcmp(buf.data(), model.data() + off, len), 0);
    }
  }
  rig.settle();
  EXPECT_EQ(rig.vol->stats().resync_regions, touched.size());
  EXPECT_LT(touched.size(), rig.regions());
  EXPECT_EQ(rig.vol->leg_states()[1], LegState::kInSync);
  EXPECT_EQ(rig.events.in_sync, std::vector<uint32_t>{1});
  EXPECT_EQ(rig.leg_bytes(0), model);
  EXPECT_EQ(rig.leg_bytes(1), model);
}

TEST(IoEngineMirror, ResyncResumesFromItsCheckpointAfterARestart) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  MirrorRig rig(seed);
  rig.open();
  const uint64_t size = rig.vol->size_bytes();
  std::vector<uint8_t> model = rig.fill_durably(rng);
  rig.set_leg_faults(1, FaultConfig{.fail_everything = true});
  // Rewrite everything while leg 1 is away: every region is marked.
  for (auto& b : model) b = static_cast<uint8_t>(rng());
  ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kWrite, 0, size, model.data()), IoStatus::kOk);
  ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kFlush, 0, 0, nullptr), IoStatus::kOk);
  rig.settle();
  const uint64_t total = rig.vol->marked_regions();
  ASSERT_EQ(total, rig.regions());
  rig.set_leg_faults(1, FaultConfig{});
  ASSERT_TRUE(rig.vol->restore_leg(1));
  // Let about half the regions copy, then the process dies.
  rig.loop->run_until([&] { return rig.vol->resync_progress().regions_done >= total / 2; });
  const uint64_t done_before = rig.vol->resync_progress().regions_done;
  rig.crash();
  // Restart: leg 1 was not in sync yet, so it comes back as faulty and is restored again.
  rig.open({LegState::kInSync, LegState::kFaulty});
  const uint64_t left = rig.vol->marked_regions();
  EXPECT_LE(left, total - done_before + 1) << "copied regions are not marked any more";
  ASSERT_TRUE(rig.vol->restore_leg(1));
  rig.settle();
  const uint64_t copied_after = rig.vol->stats().resync_regions;
  EXPECT_EQ(copied_after, left);
  EXPECT_LT(copied_after, total) << "the resync resumed instead of starting from zero";
  EXPECT_EQ(rig.leg_bytes(1), model);
  EXPECT_EQ(rig.leg_bytes(0), model);
}

// A leg recorded as resyncing whose marks are gone (no copy running) can be restored and
// gets every region.
TEST(IoEngineMirror, ResyncingLegWithoutMarksIsCopiedInFull) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  MirrorRig rig(seed);
  rig.open();
  std::vector<uint8_t> model = rig.fill_durably(rng);
  rig.vol.reset();
  // Leg 1 loses its data, and the bitmap holds no marks.
  for (const Segment& s : rig.tv->info.segments)
    rig.write_leg(1, s.start_extent * rig.tv->extent_bytes,
                  std::vector<uint8_t>(s.extent_count * rig.tv->extent_bytes, 0));
  rig.open({LegState::kInSync, LegState::kResyncing});
  rig.settle();
  EXPECT_EQ(rig.vol->stats().resync_regions, 0u) << "nothing marked: no copy starts by itself";
  EXPECT_FALSE(rig.vol->restore_leg(0)) << "an in-sync leg is not restored";
  ASSERT_TRUE(rig.vol->restore_leg(1));
  rig.settle();
  EXPECT_EQ(rig.vol->stats().resync_regions, rig.regions());
  EXPECT_EQ(rig.vol->leg_states()[1], LegState::kInSync);
  EXPECT_EQ(rig.leg_bytes(1), model);
}

TEST(IoEngineMirror, ScrubFindsExactlyTheRegionsWhereLegsDiffer) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  MirrorRig rig(seed);
  rig.open();
  const uint64_t size = rig.vol->size_bytes();
  std::vector<uint8_t> data(size);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kWrite, 0, size, data.data()), IoStatus::kOk);
  // Clean scrub while writes keep coming: region locks keep them from looking like damage.
  ASSERT_TRUE(rig.vol->start_scrub());
  EXPECT_FALSE(rig.vol->restore_leg(1)) << "no resync while a scrub runs";
  for (int i = 0; i < 30 && rig.vol->scrub_progress().active; ++i) {
    const uint64_t len = 1 + rng() % 9000, off = rng() % (size - len);
    std::vector<uint8_t> buf(len, static_cast<uint8_t>(i));
    EXPECT_EQ(run_one(*rig.loop, *rig.vol, Op::kWrite, off, len, buf.data()), IoStatus::kOk);
  }
  rig.settle();
  EXPECT_EQ(rig.vol->scrub_progress().mismatched_regions, 0u);
  EXPECT_EQ(rig.vol->scrub_progress().regions_done, rig.regions());
  // Damage leg 1 behind the engine's back in three regions.
  std::set<uint64_t> damaged;
  while (damaged.size() < 3) damaged.insert(rng() % rig.regions());
  for (uint64_t r : damaged) {
    const uint64_t vol_off = r * MirrorRig::kRegion + 100;
    // Flip every bit of the byte there, so the damage always shows.
    rig.write_leg(1, vol_off, {static_cast<uint8_t>(~rig.leg_bytes(1)[vol_off])});
  }
  ASSERT_TRUE(rig.vol->start_scrub());
  rig.settle();
  const ScrubProgress pr = rig.vol->scrub_progress();
  EXPECT_EQ(pr.mismatched_regions, damaged.size());
  std::set<uint64_t> found;
  for (uint64_t off : pr.mismatches) found.insert(off / MirrorRig::kRegion);
  EXPECT_EQ(found, damaged);
}

// When a resync's source fails, regions it has not copied yet are not served from the stale
// targets, and the targets are not blamed.
TEST(IoEngineMirror, FailedResyncSourceNeverServesStaleData) {
  const uint64_t seed = test_seed();
  std::mt19937_64 rng(seed);
  MirrorRig rig(seed);
  rig.open();
  const uint64_t size = rig.vol->size_bytes();
  std::vector<uint8_t> old_data(size), new_data(size);
  for (auto& b : old_data) b = static_cast<uint8_t>(rng());
  for (auto& b : new_data) b = static_cast<uint8_t>(rng());
  ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kWrite, 0, size, old_data.data()), IoStatus::kOk);
  ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kFlush, 0, 0, nullptr), IoStatus::kOk);
  rig.settle();
  // Leg 1 is away while everything is rewritten: leg 1 holds old data, every region marked.
  rig.set_leg_faults(1, FaultConfig{.fail_everything = true});
  ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kWrite, 0, size, new_data.data()), IoStatus::kOk);
  ASSERT_EQ(run_one(*rig.loop, *rig.vol, Op::kFlush, 0, 0, nullptr), IoStatus::kOk);
  rig.settle();
  rig.vol.reset();
  for (const Segment& s : rig.tv->info.segments) {
    rig.tv->devices[s.areas[1].pv_id - 1]->set_faults(FaultConfig{});
    rig.tv->devices[s.areas[0].pv_id - 1]->set_faults(FaultConfig{.fail_everything = true});
  }
  // Reopened with both legs recorded in sync, the marks start a resync from leg 0 — whose
  // devices now fail.
  rig.open();
  rig.settle();
  EXPECT_EQ(rig.vol->leg_states()[1], LegState::kInSync) << "the target is not at fault";
  std::vector<uint8_t> buf(4096);
  const IoStatus s = run_one(*rig.loop, *rig.vol, Op::kRead, size / 2, buf.size(), buf.data());
  EXPECT_EQ(s, IoStatus::kIoError) << "leg 1 is stale there and must not answer";
  EXPECT_NE(std::memcmp(buf.data(), old_data.data() + size / 2, buf.size()), 0)
      << "stale data was returned";
}

}  // namespace
}  // namespace rsio::volmgr::io::test
