#include "volmgr/volume_manager.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "db/migrate.h"
#include "volmgr/device.h"

namespace rsio::volmgr {
namespace {

class VolumeManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rsio-vm-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    reopen();
  }
  void TearDown() override {
    vm_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  void reopen() {
    vm_.reset();
    db_.reset();
    auto db = db::Database::open(dir_ + "/rsio.db", true);
    ASSERT_TRUE(db);
    db_ = std::move(*db);
    ASSERT_TRUE(db::migrate(*db_, db::builtin_migrations()));
    auto vm = VolumeManager::open(*db_);
    ASSERT_TRUE(vm) << vm.error().message;
    vm_ = std::move(*vm);
  }
  std::string file(const std::string& n) const { return dir_ + "/" + n; }
  PvUsage add_file(const std::string& name, uint64_t size, const std::string& pool = "") {
    AddDeviceRequest r;
    r.pool = pool;
    r.path = file(name);
    r.create_size_bytes = size;
    auto pv = vm_->add_device(r);
    EXPECT_TRUE(pv) << pv.error().message;
    return *pv;
  }
  std::string table_dump() {
    std::string out;
    for (const char* t : {"pools", "pvs", "volumes", "segments", "areas", "mirror_legs"}) {
      auto* st = *db_->prepare(std::string("SELECT * FROM ") + t + " ORDER BY 1, 2");
      while (*st->step()) {
        out += t;
        for (int c = 0; c < st->column_count(); ++c) out += "|" + st->column_text(c);
        out += "\n";
      }
    }
    return out;
  }

  std::string dir_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<VolumeManager> vm_;
};

TEST_F(VolumeManagerTest, FirstPoolBecomesDefaultAndVolumesPersist) {
  auto pool = vm_->create_pool({"default", kDefaultExtentSizeBytes, false});
  ASSERT_TRUE(pool);
  EXPECT_TRUE(pool->is_default);
  add_file("a.img", 1ULL << 30);
  add_file("b.img", 1ULL << 30);
  auto v = vm_->create_volume({"eisberg", "", 100 << 20, {}, 512});
  ASSERT_TRUE(v) << v.error().message;
  EXPECT_EQ(v->size_bytes, 100u << 20);
  CreateVolumeRequest m{"mirror", "", 64 << 20, LayoutSpec{Layout::kMirrored, 1, 0, 2}, 512};
  ASSERT_TRUE(vm_->create_volume(m));
  CreateVolumeRequest s{"stripe", "", 10 << 20, LayoutSpec{Layout::kStriped, 2, 64 << 10, 1}, 512};
  auto sv = vm_->create_volume(s);
  ASSERT_TRUE(sv);
  EXPECT_EQ(sv->size_bytes, 16u << 20) << "rounded up to whole extents per stripe";
  ASSERT_TRUE(vm_->resize_volume("eisberg", 200 << 20, false));
  ASSERT_TRUE(vm_->rename_volume("eisberg", "berg"));

  const std::string before = table_dump();
  std::vector<VolumeInfo> vols;
  for (auto* x : vm_->volumes()) vols.push_back(*x);
  reopen();
  EXPECT_EQ(table_dump(), before);
  ASSERT_EQ(vm_->volumes().size(), vols.size());
  for (size_t i = 0; i < vols.size(); ++i) {
    EXPECT_EQ(vm_->volumes()[i]->name, vols[i].name);
    EXPECT_EQ(vm_->volumes()[i]->segments, vols[i].segments);
  }
  EXPECT_EQ(vm_->find_volume("berg")->size_bytes, 200u << 20);
  for (const auto& d : vm_->devices()) EXPECT_EQ(d.info.state, PvState::kOk);
}

TEST_F(VolumeManagerTest, MirrorLegStatesPersist) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  add_file("a.img", 64 << 20);
  add_file("b.img", 64 << 20);
  auto v = vm_->create_volume({"m", "", 8 << 20, LayoutSpec{Layout::kMirrored, 1, 0, 2}, 512});
  ASSERT_TRUE(v);
  ASSERT_EQ(v->leg_states.size(), 2u);
  ASSERT_TRUE(vm_->set_leg_state(v->id, 1, LegState::kFaulty, "write failed"));
  EXPECT_FALSE(vm_->set_leg_state(v->id, 2, LegState::kFaulty, ""));
  reopen();
  const VolumeInfo* m = vm_->find_volume("m");
  EXPECT_EQ(m->leg_states[1], LegState::kFaulty);
  EXPECT_EQ(m->leg_details[1], "write failed");
  ASSERT_TRUE(vm_->set_leg_state(m->id, 1, LegState::kInSync, ""));
  reopen();
  EXPECT_EQ(vm_->find_volume("m")->leg_states[1], LegState::kInSync);
  ASSERT_TRUE(vm_->set_leg_state(vm_->find_volume("m")->id, 0, LegState::kResyncing, "restored"));
  ASSERT_TRUE(vm_->delete_volume("m", nullptr));  // cascades to the leg rows
  auto* st = *db_->prepare("SELECT count(*) FROM mirror_legs");
  ASSERT_TRUE(*st->step());
  EXPECT_EQ(st->column_int64(0), 0);
}

TEST_F(VolumeManagerTest, MirrorLegsAreAddedRemovedAndReplaced) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  for (const char* f : {"a.img", "b.img", "c.img", "d.img"}) add_file(f, 64 << 20);
  auto v = vm_->create_volume({"v", "", 20 << 20, {}, 512});
  ASSERT_TRUE(v);
  const uint64_t free_before = vm_->pools()[0].free_extents;
  auto two = vm_->add_leg("v");
  ASSERT_TRUE(two) << two.error().message;
  EXPECT_EQ(two->spec.layout, Layout::kMirrored);
  EXPECT_EQ(two->spec.mirrors, 2u);
  EXPECT_EQ(two->leg_states[1], LegState::kResyncing);
  EXPECT_TRUE(check_segments(two->spec, two->segments));
  EXPECT_EQ(vm_->pools()[0].free_extents, free_before - 5);
  auto three = vm_->add_leg("v");
  ASSERT_TRUE(three);
  EXPECT_EQ(three->spec.mirrors, 3u);
  // The only in-sync leg is kept unless forced.
  auto refused = vm_->remove_leg("v", 0, false);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kInUse);
  ASSERT_TRUE(vm_->set_leg_state(v->id, 1, LegState::kInSync, ""));
  auto replaced = vm_->replace_leg("v", 2);
  ASSERT_TRUE(replaced) << replaced.error().message;
  EXPECT_EQ(replaced->spec.mirrors, 3u);
  EXPECT_EQ(replaced->leg_states[2], LegState::kResyncing);
  EXPECT_TRUE(check_segments(replaced->spec, replaced->segments));
  const std::string before = table_dump();
  reopen();
  EXPECT_EQ(table_dump(), before);
  ASSERT_TRUE(vm_->remove_leg("v", 2, false));
  auto one = vm_->remove_leg("v", 1, false);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->spec.layout, Layout::kLinear);
  EXPECT_TRUE(one->leg_states.empty());
  EXPECT_EQ(vm_->pools()[0].free_extents, free_before);
  auto none = vm_->remove_leg("v", 0, true);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("single leg"), std::string::npos);
  // No device outside the other legs: a 5th leg does not fit on 4 devices.
  ASSERT_TRUE(vm_->add_leg("v"));
  ASSERT_TRUE(vm_->add_leg("v"));
  ASSERT_TRUE(vm_->add_leg("v"));
  auto full = vm_->add_leg("v");
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::kNoSpace);
}

TEST_F(VolumeManagerTest, ShrinkNeedsForce) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  add_file("a.img", 1ULL << 30);
  ASSERT_TRUE(vm_->create_volume({"v", "", 100 << 20, {}, 512}));
  auto r = vm_->resize_volume("v", 50 << 20, false);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("--force"), std::string::npos);
  EXPECT_EQ(vm_->find_volume("v")->size_bytes, 100u << 20);
  ASSERT_TRUE(vm_->resize_volume("v", 50 << 20, true));
  EXPECT_EQ(vm_->find_volume("v")->size_bytes, 52u << 20);
}

TEST_F(VolumeManagerTest, DeviceWithForeignLabelIsRefusedUnlessForced) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  const std::string path = file("foreign.img");
  ASSERT_TRUE(create_sparse_file(path, 64 << 20));
  PvLabel other;
  other.pv_uuid = Uuid::random();
  other.pool_uuid = Uuid::random();
  other.pv_size_bytes = 64 << 20;
  other.data_offset_bytes = 1 << 20;
  other.extent_size_bytes = 4 << 20;
  other.pool_name = "elsewhere";
  {
    auto fd = open_device(path, false);
    ASSERT_TRUE(write_label(fd->get(), other));
  }
  AddDeviceRequest r{"", path, std::nullopt, false, {}};
  auto refused = vm_->add_device(r);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("another RSIO pool 'elsewhere'"), std::string::npos);
  EXPECT_TRUE(vm_->devices().empty());
  {  // the device was not touched
    auto fd = open_device(path, false);
    EXPECT_EQ(**read_label(fd->get()), other);
  }
  r.force = true;
  ASSERT_TRUE(vm_->add_device(r));
}

TEST_F(VolumeManagerTest, DeviceWithFileSystemOrTooSmallIsRefused) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  const std::string fs = file("ext4.img");
  ASSERT_TRUE(create_sparse_file(fs, 64 << 20));
  {
    int fd = ::open(fs.c_str(), O_RDWR);
    const unsigned char magic[2] = {0x53, 0xEF};
    ASSERT_EQ(::pwrite(fd, magic, 2, 1080), 2);
    ::close(fd);
  }
  auto r = vm_->add_device({"", fs, std::nullopt, false, {}});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("ext2/3/4"), std::string::npos);

  auto small = vm_->add_device({"", file("small.img"), 2 << 20, false, {}});
  ASSERT_FALSE(small);
  EXPECT_NE(small.error().message.find("too small"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(file("small.img")));
}

TEST_F(VolumeManagerTest, SameDeviceTwiceIsRefused) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  add_file("a.img", 64 << 20);
  std::filesystem::create_symlink(file("a.img"), file("link.img"));
  auto r = vm_->add_device({"", file("link.img"), std::nullopt, false, {}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::kAlreadyExists);
}

TEST_F(VolumeManagerTest, CorruptedLabelMarksDeviceAndVolumeUnavailable) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  auto pv = add_file("a.img", 64 << 20);
  ASSERT_TRUE(vm_->create_volume({"v", "", 8 << 20, {}, 512}));
  {
    int fd = ::open(pv.info.path.c_str(), O_RDWR);
    const char junk = 'x';
    ASSERT_EQ(::pwrite(fd, &junk, 1, 100), 1);
    ::close(fd);
  }
  reopen();
  ASSERT_EQ(vm_->devices().size(), 1u);
  EXPECT_EQ(vm_->devices()[0].info.state, PvState::kLabelMismatch);
  EXPECT_NE(vm_->devices()[0].info.state_detail.find("checksum"), std::string::npos);
  // No new allocations on it, and its label is left as found.
  EXPECT_FALSE(vm_->create_volume({"w", "", 8 << 20, {}, 512}));
}

TEST_F(VolumeManagerTest, RemoveDeviceOnlyWhenUnused) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  auto pv = add_file("a.img", 64 << 20);
  ASSERT_TRUE(vm_->create_volume({"v", "", 8 << 20, {}, 512}));
  auto busy = vm_->remove_device(pv.info.path);
  ASSERT_FALSE(busy);
  EXPECT_NE(busy.error().message.find("'v'"), std::string::npos);
  ASSERT_TRUE(vm_->delete_volume("v", nullptr));
  ASSERT_TRUE(vm_->remove_device(pv.info.path));
  auto fd = open_device(pv.info.path, false);
  EXPECT_FALSE(read_label(fd->get())->has_value()) << "label wiped";
}

TEST_F(VolumeManagerTest, DeleteHookCanVetoInsideTheTransaction) {
  ASSERT_TRUE(vm_->create_pool({"p", kDefaultExtentSizeBytes, true}));
  add_file("a.img", 64 << 20);
  ASSERT_TRUE(vm_->create_volume({"v", "", 8 << 20, {}, 512}));
  const std::string before = table_dump();
  auto st = vm_->delete_volume("v", [](db::Database&, const VolumeInfo&) -> Status {
    return make_error(Errc::kInUse, "granted");
  });
  ASSERT_FALSE(st);
  EXPECT_EQ(table_dump(), before);
  ASSERT_NE(vm_->find_volume("v"), nullptr);
}

}  // namespace
}  // namespace rsio::volmgr
