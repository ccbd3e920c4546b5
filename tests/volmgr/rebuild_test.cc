// Rebuilding the database from the metadata copies in the PVs' label areas: 50 random
// topologies are built, the database is deleted and rebuilt, and the pool, PV, volume and
// extent tables must come back identical. Stale and damaged copies are detected and not used.
#include "volmgr/rebuild.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "db/migrate.h"
#include "volmgr/device.h"
#include "volmgr/pool_copy.h"
#include "volmgr/volume_manager.h"

namespace rsio::volmgr {
namespace {

namespace fs = std::filesystem;

// Every row of the volume manager's tables, in a fixed order (mirror_legs without the time
// of its last change, which a rebuild cannot know to the millisecond).
std::string dump(db::Database& db) {
  std::string out;
  const char* queries[] = {
      "SELECT 'pool', id, uuid, name, extent_size_bytes, is_default, created_ms FROM pools "
      "ORDER BY id",
      "SELECT 'pv', id, uuid, pool_id, path, kind, size_bytes, data_offset_bytes, extent_count, "
      "label_generation, created_ms, coalesce(lun_id, '') FROM pvs ORDER BY id",
      "SELECT 'volume', id, uuid, name, pool_id, size_bytes, block_size_bytes, layout, stripes, "
      "stripe_size_bytes, mirrors, created_ms FROM volumes ORDER BY id",
      "SELECT 'segment', volume_id, idx, start_extent, extent_count FROM segments "
      "ORDER BY volume_id, idx",
      "SELECT 'area', volume_id, segment_idx, area_idx, pv_id, pv_start_extent, extent_count "
      "FROM areas ORDER BY volume_id, segment_idx, area_idx",
      "SELECT 'leg', volume_id, leg, state, detail FROM mirror_legs ORDER BY volume_id, leg",
  };
  for (const char* q : queries) {
    auto st = db.prepare(q);
    EXPECT_TRUE(st) << q;
    if (!st) continue;
    for (auto row = (*st)->step(); row && *row; row = (*st)->step()) {
      for (int c = 0; c < (*st)->column_count(); ++c) out += (c ? "|" : "") + (*st)->column_text(c);
      out += "\n";
    }
  }
  return out;
}

class Rebuild : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rsio-rebuild-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    fs::create_directories(dir_ + "/pvs");
  }
  void TearDown() override {
    vm_.reset();
    db_.reset();
    fs::remove_all(dir_);
  }

  void open_fresh() {
    vm_.reset();
    db_.reset();
    for (const char* f : {"/rsio.db", "/rsio.db-wal", "/rsio.db-shm"}) fs::remove(dir_ + f);
    auto db = db::Database::open(dir_ + "/rsio.db", true);
    ASSERT_TRUE(db);
    db_ = std::move(*db);
    ASSERT_TRUE(db::migrate(*db_, db::builtin_migrations()));
  }
  void open_vm() {
    auto vm = VolumeManager::open(*db_);
    ASSERT_TRUE(vm) << vm.error().message;
    vm_ = std::move(*vm);
  }
  Result<RebuildReport> rebuild() {
    vm_.reset();
    open_fresh();
    return rebuild_database(*db_, RebuildOptions{std::nullopt, {dir_ + "/pvs"}});
  }
  std::string pv_path(const std::string& name) { return dir_ + "/pvs/" + name; }

  // A random topology: 1-3 pools of 1-4 file PVs, volumes of every layout, grows,
  // renames, deletes, extra legs and leg states, a default pool switch.
  void build_random(uint32_t seed) {
    std::mt19937 rng(seed);
    auto pick = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
    const uint32_t pools = 1 + pick(3);
    int next_pv = 0, next_vol = 0;
    for (uint32_t p = 0; p < pools; ++p) {
      const std::string pool = "pool" + std::to_string(p);
      const uint64_t extent = (64ULL << 10) << pick(7);  // 64 KiB .. 4 MiB
      ASSERT_TRUE(vm_->create_pool({pool, extent, pick(2) == 0}));
      const uint32_t pvs = 1 + pick(4);
      for (uint32_t d = 0; d < pvs; ++d) {
        const uint64_t size = (8ULL << 20) + pick(24) * (4ULL << 20);
        auto added = vm_->add_device(
            {pool, pv_path("d" + std::to_string(next_pv++) + ".img"), size, false, {}});
        ASSERT_TRUE(added) << added.error().message;
      }
    }
    std::vector<std::string> names;
    for (int op = 0, ops = 4 + static_cast<int>(pick(12)); op < ops; ++op) {
      const std::string pool = "pool" + std::to_string(pick(pools));
      switch (pick(6)) {
        case 0:
        case 1: {
          CreateVolumeRequest r;
          r.name = "vol" + std::to_string(next_vol++);
          r.pool = pool;
          r.size_bytes = (1ULL << 20) + pick(8) * (1ULL << 20);
          r.block_size_bytes = pick(4) == 0 ? 4096 : 512;
          const uint32_t layout = pick(3);
          if (layout == 1) {
            r.spec.layout = Layout::kStriped;
            r.spec.stripes = 2 + pick(2);
          } else if (layout == 2) {
            r.spec.layout = Layout::kMirrored;
            r.spec.mirrors = 2;
          }
          if (vm_->create_volume(r)) names.push_back(r.name);  // may not fit: fine
          break;
        }
        case 2:
          if (!names.empty()) {
            const std::string& n = names[pick(static_cast<uint32_t>(names.size()))];
            (void)vm_->resize_volume(n, vm_->find_volume(n)->size_bytes + (2ULL << 20), false);
          }
          break;
        case 3:
          if (!names.empty()) {
            const size_t i = pick(static_cast<uint32_t>(names.size()));
            ASSERT_TRUE(vm_->delete_volume(names[i], nullptr));
            names.erase(names.begin() + static_cast<long>(i));
          }
          break;
        case 4:
          if (!names.empty()) {
            const size_t i = pick(static_cast<uint32_t>(names.size()));
            const std::string to = names[i] + "r";
            ASSERT_TRUE(vm_->rename_volume(names[i], to));
            names[i] = to;
          }
          break;
        case 5:
          if (!names.empty()) {
            const std::string& n = names[pick(static_cast<uint32_t>(names.size()))];
            if (auto v = vm_->add_leg(n); v && v->spec.layout == Layout::kMirrored) {
              ASSERT_TRUE(vm_->set_leg_state(v->id, 0, LegState::kFaulty, "random fault"));
            }
          }
          break;
      }
    }
    if (pick(3) == 0) {
      ASSERT_TRUE(vm_->set_default_pool("pool" + std::to_string(pick(pools))));
    }
    vm_->flush_pool_copies();
  }

  std::string dir_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<VolumeManager> vm_;
};

TEST_F(Rebuild, FiftyRandomTopologiesComeBackIdentical) {
  size_t volumes = 0, pvs = 0, pools = 0, striped = 0, mirrored = 0, leg_rows = 0, segments = 0;
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    fs::remove_all(dir_ + "/pvs");
    fs::create_directories(dir_ + "/pvs");
    open_fresh();
    open_vm();
    build_random(seed);
    if (HasFatalFailure()) return;
    const std::string before = dump(*db_);
    auto report = rebuild();
    ASSERT_TRUE(report) << report.error().message;
    EXPECT_EQ(report->stale_copies, 0u);
    EXPECT_EQ(report->damaged_copies, 0u);
    EXPECT_EQ(report->missing_pvs, 0u);
    const std::string after = dump(*db_);
    ASSERT_EQ(after, before);
    // The rebuilt database opens with every device in place.
    open_vm();
    for (const PvUsage& d : vm_->devices()) EXPECT_EQ(d.info.state, PvState::kOk) << d.info.path;
    auto count = [&](const std::string& needle) {
      size_t n = 0;
      for (size_t at = after.find(needle); at != std::string::npos; at = after.find(needle, at + 1))
        ++n;
      return n;
    };
    striped += count("|striped|");
    mirrored += count("|mirrored|");
    leg_rows += count("\nleg|") + (after.rfind("leg|", 0) == 0 ? 1 : 0);
    segments += count("\nsegment|");
    volumes += report->volumes;
    pvs += report->pvs;
    pools += report->pools;
  }
  std::printf(
      "rebuild: 50 topologies, %zu pools, %zu devices, %zu volumes (%zu striped, %zu "
      "mirrored; %zu segments, %zu leg states) rebuilt identical\n",
      pools, pvs, volumes, striped, mirrored, segments, leg_rows);
  EXPECT_GT(striped, 0u);
  EXPECT_GT(mirrored, 0u);
  EXPECT_GT(leg_rows, 0u);
}

TEST_F(Rebuild, StaleCopyOfADeviceThatMissedChangesIsNotUsed) {
  open_fresh();
  open_vm();
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  for (const char* n : {"a.img", "b.img", "c.img"})
    ASSERT_TRUE(vm_->add_device({"p", pv_path(n), 64ULL << 20, false, {}}));
  ASSERT_TRUE(vm_->create_volume({"early", "p", 8ULL << 20, {}, 512}));
  vm_->flush_pool_copies();
  // c.img is away while the next changes are made: its copies stay behind.
  fs::rename(pv_path("c.img"), dir_ + "/c.away");
  ASSERT_TRUE(vm_->create_volume({"late", "", 8ULL << 20, {}, 512}));
  vm_->flush_pool_copies();
  const std::string before = dump(*db_);
  fs::rename(dir_ + "/c.away", pv_path("c.img"));

  auto report = rebuild();
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->stale_copies, 1u);
  bool named = false;
  for (const auto& n : report->notes) named = named || n.find("c.img") != std::string::npos;
  EXPECT_TRUE(named) << "the stale device is named in the report";
  EXPECT_EQ(dump(*db_), before) << "the newest copy was used: 'late' exists";
}

TEST_F(Rebuild, DamagedCopyIsDetectedAndAnotherUsed) {
  open_fresh();
  open_vm();
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  for (const char* n : {"a.img", "b.img"})
    ASSERT_TRUE(vm_->add_device({"p", pv_path(n), 64ULL << 20, false, {}}));
  ASSERT_TRUE(vm_->create_volume({"v", "p", 16ULL << 20, {}, 512}));
  vm_->flush_pool_copies();
  const int64_t pool_id = vm_->find_pool("p")->id;
  const uint64_t newest = vm_->copy_generation(pool_id);
  const std::string before = dump(*db_);
  // One byte of the newest copy on a.img goes bad.
  {
    UniqueFd fd(::open(pv_path("a.img").c_str(), O_RDWR));
    ASSERT_TRUE(damage_pool_copy_for_test(fd.get(), static_cast<int>(newest % 2)));
  }
  auto report = rebuild();
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->damaged_copies, 1u);
  bool detected = false, used_b = false;
  for (const auto& n : report->notes) {
    detected = detected || (n.find("a.img") != std::string::npos &&
                            n.find("checksum mismatch") != std::string::npos);
    used_b = used_b || (n.find(fmt::format("generation {} from", newest)) != std::string::npos &&
                        n.find("b.img") != std::string::npos);
  }
  EXPECT_TRUE(detected) << "the damaged slot is reported";
  EXPECT_TRUE(used_b) << "the intact copy of the same generation on b.img is used";
  EXPECT_EQ(dump(*db_), before);
}

TEST_F(Rebuild, OnASingleDeviceTheOtherSlotIsTheFallback) {
  open_fresh();
  open_vm();
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  ASSERT_TRUE(vm_->add_device({"p", pv_path("a.img"), 64ULL << 20, false, {}}));
  ASSERT_TRUE(vm_->create_volume({"first", "p", 8ULL << 20, {}, 512}));
  vm_->flush_pool_copies();
  const std::string older = dump(*db_);
  ASSERT_TRUE(vm_->create_volume({"second", "p", 8ULL << 20, {}, 512}));
  vm_->flush_pool_copies();
  const uint64_t newest = vm_->copy_generation(vm_->find_pool("p")->id);
  {
    UniqueFd fd(::open(pv_path("a.img").c_str(), O_RDWR));
    ASSERT_TRUE(damage_pool_copy_for_test(fd.get(), static_cast<int>(newest % 2)));
  }
  auto report = rebuild();
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->damaged_copies, 1u);
  // The previous generation, written before 'second' existed, is what is left.
  EXPECT_EQ(dump(*db_), older);
}

TEST_F(Rebuild, RefusesADatabaseThatHasPoolsAndSaysWhenNothingIsFound) {
  open_fresh();
  auto empty = rebuild_database(*db_, RebuildOptions{std::nullopt, {dir_ + "/pvs"}});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, Errc::kNotFound);
  open_vm();
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  auto full = rebuild_database(*db_, RebuildOptions{std::nullopt, {dir_ + "/pvs"}});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::kInvalidArgument);
  EXPECT_NE(full.error().message.find("already has pools"), std::string::npos);
}

}  // namespace
}  // namespace rsio::volmgr
