// LUN discovery on the committed fixture tree of an FC gateway (fixtures/make_fc_gateway.sh),
// and finding a PV again when it moved behind a multipath map.
#include "volmgr/lun.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "db/migrate.h"
#include "volmgr/device.h"
#include "volmgr/volume_manager.h"

namespace rsio::volmgr {
namespace {

namespace fs = std::filesystem;
const std::string kFixture = std::string(RSIO_FIXTURE_DIR) + "/fc-gateway";

LunScanOptions fixture_scan(const std::string& root = kFixture) {
  return LunScanOptions{root + "/sys", root + "/dev", root + "/mountinfo"};
}

std::string row(const Lun& l) {
  return fmt::format("{} {} {} {} paths={} use=[{}]", l.identity.empty() ? "-" : l.identity, l.name,
                     l.transport, l.size_bytes, l.paths.size(), l.os_use());
}

TEST(LunDiscovery, FixtureGivesTheExpectedLunTable) {
  auto luns = discover_luns(fixture_scan());
  ASSERT_TRUE(luns) << luns.error().message;
  std::vector<std::string> rows;
  for (const Lun& l : *luns) rows.push_back(row(l));
  const std::vector<std::string> expected = {
      "file:/srv/luns/lun0.img loop0 loop 1073741824 paths=0 use=[]",
      "naa.5000c500a1b2c3d4 sdb sas 4000787030016 paths=1 use=[mounted (sdb1 on /)]",
      "naa.600a098038303053453f463045727a31 dm-0 multipath 107374182400 paths=2 use=[]",
      "naa.600a098038303053453f463045727a32 sde fc 53687091200 paths=1 use=[]",
      "virtio-rsio-data-01 vda virtio 21474836480 paths=0 use=[]",
      // Member paths of the map come last, and send the admin to the map.
      "naa.600a098038303053453f463045727a31 sdc fc 107374182400 paths=1 use=[path of multipath "
      "map mpatha]",
      "naa.600a098038303053453f463045727a31 sdd fc 107374182400 paths=1 use=[path of multipath "
      "map mpatha]",
  };
  EXPECT_EQ(rows, expected);
}

TEST(LunDiscovery, FcPathsCarryPortNamesAndTheMapItsPaths) {
  auto luns = discover_luns(fixture_scan());
  ASSERT_TRUE(luns);
  const Lun* map = find_lun(*luns, "naa.600a098038303053453f463045727a31");
  ASSERT_NE(map, nullptr);
  EXPECT_EQ(map->name, "dm-0");
  EXPECT_EQ(map->dm_name, "mpatha");
  EXPECT_EQ(map->device_path, kFixture + "/dev/mapper/mpatha");
  EXPECT_EQ(map->vendor, "NETAPP");
  EXPECT_EQ(map->model, "LUN C-Mode");
  EXPECT_EQ(map->logical_block_bytes, 512u);
  EXPECT_EQ(map->physical_block_bytes, 4096u);
  ASSERT_EQ(map->paths.size(), 2u);
  EXPECT_EQ(map->paths[0].name, "sdc");
  EXPECT_EQ(map->paths[0].scsi_address, "5:0:0:3");
  EXPECT_EQ(map->paths[0].host_wwpn, "0x21000024ff3dbc10");
  EXPECT_EQ(map->paths[0].target_wwpn, "0x500a098188a7d3e1");
  EXPECT_EQ(map->paths[1].target_wwpn, "0x500a098198a7d3e1");
  EXPECT_EQ(map->paths[1].state, "running");
  const Lun* sdb = find_lun(*luns, "sdb");
  ASSERT_NE(sdb, nullptr);
  EXPECT_EQ(sdb->partitions, (std::vector<std::string>{"sdb1", "sdb2"}));
  EXPECT_TRUE(sdb->rotational);
  EXPECT_EQ(sdb->by_id,
            (std::vector<std::string>{"scsi-35000c500a1b2c3d4", "wwn-0x5000c500a1b2c3d4"}));
}

TEST(LunDiscovery, FindLunAcceptsEveryNameAnAdminUses) {
  auto luns = discover_luns(fixture_scan());
  ASSERT_TRUE(luns);
  for (const char* key :
       {"naa.600a098038303053453f463045727a31", "NAA.600A098038303053453F463045727A31",
        "0x600a098038303053453f463045727a31", "600a098038303053453f463045727a31",
        "wwn-0x600a098038303053453f463045727a31", "dm-0", "mpatha", "sdc", "sdd"}) {
    const Lun* l = find_lun(*luns, key);
    ASSERT_NE(l, nullptr) << key;
    EXPECT_EQ(l->name, "dm-0") << key << ": a path resolves to its map";
  }
  EXPECT_EQ(find_lun(*luns, "virtio-rsio-data-01")->name, "vda");
  EXPECT_EQ(find_lun(*luns, "file:/srv/luns/lun0.img")->name, "loop0");
  EXPECT_EQ(find_lun(*luns, kFixture + "/dev/sde")->name, "sde");
  EXPECT_EQ(find_lun(*luns, "naa.0000"), nullptr);
  EXPECT_EQ(find_lun(*luns, "loop1"), nullptr) << "an unused loop device is no LUN";
  EXPECT_EQ(find_lun(*luns, "ram0"), nullptr);
}

TEST(LunDiscovery, MissingSysfsIsAClearError) {
  auto luns = discover_luns(LunScanOptions{"/nonexistent/sys", "/dev", "/proc/self/mountinfo"});
  ASSERT_FALSE(luns);
  EXPECT_NE(luns.error().message.find("not a sysfs tree"), std::string::npos);
}

// A PV recorded at /dev/sdc is found behind the multipath map that now stands in front of
// the LUN; the member paths, which show the same label, are never taken.
TEST(LunDiscovery, PvRecordedOnAPathMovesToItsMultipathMap) {
  char tmpl[] = "/tmp/rsio-lun-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  fs::copy(kFixture, dir + "/fx", fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  const std::string root = dir + "/fx";
  // The fixture's device nodes are empty files: give the LUN's three names 64 MiB each.
  for (const char* n : {"sdc", "sdd", "dm-0"}) fs::resize_file(root + "/dev/" + n, 64ULL << 20);

  auto db = db::Database::open(dir + "/rsio.db", true);
  ASSERT_TRUE(db);
  ASSERT_TRUE(db::migrate(**db, db::builtin_migrations()));
  int64_t pv_id = 0;
  {
    auto vm = VolumeManager::open(**db);
    ASSERT_TRUE(vm);
    ASSERT_TRUE((*vm)->create_pool({"fc", kDefaultExtentSizeBytes, true}));
    auto pv = (*vm)->add_device({"fc", root + "/dev/dm-0", std::nullopt, false, {}});
    ASSERT_TRUE(pv) << pv.error().message;
    pv_id = pv->info.id;
    ASSERT_TRUE((*vm)->create_volume({"v", "fc", 32ULL << 20, {}, 512}));
  }
  // What the label looks like through every path of the LUN.
  std::vector<char> label(4096);
  {
    int fd = ::open((root + "/dev/dm-0").c_str(), O_RDONLY);
    ASSERT_EQ(::pread(fd, label.data(), label.size(), 0), 4096);
    ::close(fd);
    for (const char* n : {"sdc", "sdd"}) {
      int w = ::open((root + "/dev/" + n).c_str(), O_WRONLY);
      ASSERT_EQ(::pwrite(w, label.data(), label.size(), 0), 4096);
      ::close(w);
    }
  }
  // As if the PV had been added as a block device under /dev/sdc before multipath was set up.
  {
    auto st = (*db)->prepare("UPDATE pvs SET kind = 'block', path = ? WHERE id = ?");
    ASSERT_TRUE(st);
    (*st)->bind(1, std::string_view(root + "/dev/sdc")).bind(2, pv_id);
    ASSERT_TRUE((*st)->run());
  }
  {
    auto vm = VolumeManager::open(**db, {fixture_scan(root)});
    ASSERT_TRUE(vm);
    const PvInfo* pv = (*vm)->find_pv(pv_id);
    EXPECT_EQ(pv->state, PvState::kOk) << pv->state_detail;
    EXPECT_EQ(pv->path, root + "/dev/mapper/mpatha");
  }
  // The new path was recorded.
  {
    auto st = (*db)->prepare("SELECT path FROM pvs WHERE id = ?");
    ASSERT_TRUE(st);
    (*st)->bind(1, pv_id);
    ASSERT_TRUE(*(*st)->step());
    EXPECT_EQ((*st)->column_text(0), root + "/dev/mapper/mpatha");
  }
  // A block-level copy of the LUN shows up as sde: two devices carry the label, and rsiod
  // refuses to guess rather than attach either.
  fs::resize_file(root + "/dev/sde", 64ULL << 20);
  {
    int w = ::open((root + "/dev/sde").c_str(), O_WRONLY);
    ASSERT_EQ(::pwrite(w, label.data(), label.size(), 0), 4096);
    ::close(w);
  }
  {
    auto vm = VolumeManager::open(**db, {fixture_scan(root)});
    ASSERT_TRUE(vm);
    const PvInfo* pv = (*vm)->find_pv(pv_id);
    EXPECT_EQ(pv->state, PvState::kLabelMismatch);
    EXPECT_NE(pv->state_detail.find("its label is on 2 devices"), std::string::npos)
        << pv->state_detail;
    EXPECT_NE(pv->state_detail.find("/dev/sde"), std::string::npos) << pv->state_detail;
  }
  db->reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace rsio::volmgr
