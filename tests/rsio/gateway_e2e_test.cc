// The FC gateway on real block devices of this host: loop devices stand in for LUNs. Two are
// imported as PVs and one as a pass-through volume with data on it; the loop devices are
// detached and attached again in another order (so their numbers change), and rsiod must map
// every volume to the right device with the data intact. A device with a foreign label at a
// PV's old name is refused. Needs root and loop devices; skipped with the reason otherwise.
// Also: smgr -L / -Lv on the committed fixture tree of an FC HBA (golden output).
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "../e2e/process.h"
#include "test_client.h"
#include "volmgr/label.h"

namespace rsio::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using wire::Opcode;
using wire::StatusCode;

const std::string kFixtures = RSIO_FIXTURE_DIR;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
  return s;
}

class Gateway : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rsio-gw-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    daemon_.reset();
    for (const std::string& dev : attached_) run({"/sbin/losetup", "-d", dev});
    fs::remove_all(dir_);
    if (!shm_.empty()) fs::remove_all(shm_);
  }

  void start_daemon(std::vector<std::string> extra = {}) {
    if (!daemon_) daemon_ = std::make_unique<Daemon>(kRsiod, dir_ + "/state", dir_ + "/rsiod.sock");
    extra.insert(extra.end(), {"--listen", fmt::format("127.0.0.1:{}", port_)});
    ASSERT_TRUE(daemon_->start(extra)) << daemon_->log();
  }

  CommandResult cli(const std::string& line, int expect = 0) {
    auto words = split_words(line);
    words[0] = words[0] == "smgr" ? kSmgr : kRsadmin;
    RunOptions opt;
    opt.env.push_back("RSIO_SOCKET=" + daemon_->socket());
    auto r = run(words, opt);
    EXPECT_EQ(r.exit_code, expect) << line << "\n" << r.out << r.err;
    return r;
  }

  std::string losetup(const std::string& file, const std::string& dev = "") {
    auto r = dev.empty() ? run({"/sbin/losetup", "-f", "--show", file})
                         : run({"/sbin/losetup", dev, file});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::string name = dev.empty() ? r.out.substr(0, r.out.find('\n')) : dev;
    attached_.push_back(name);
    return name;
  }
  void detach(const std::string& dev) {
    auto r = run({"/sbin/losetup", "-d", dev});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::erase(attached_, dev);
  }

  std::string dir_, shm_;
  std::unique_ptr<Daemon> daemon_;
  std::vector<std::string> attached_;
  uint16_t port_ = free_port();
};

TEST_F(Gateway, SmgrListsTheLunsOfTheFixtureByWwn) {
  const std::string root = kFixtures + "/fc-gateway";
  start_daemon({"--sysfs-root", root + "/sys", "--dev-root", root + "/dev", "--mountinfo",
                root + "/mountinfo"});
  // Device paths start with the fixture's /dev; the golden files say /dev. The table's
  // column widths follow the longest path, so -L is compared with runs of spaces squeezed.
  auto squeeze = [](std::string s) {
    for (size_t at = s.find("  "); at != std::string::npos; at = s.find("  ", at)) s.erase(at, 1);
    return s;
  };
  for (const char* flag : {"-L", "-Lv"}) {
    auto r = cli(std::string("smgr ") + flag);
    const std::string golden = read_file(kFixtures + "/fc-gateway.smgr" + flag + ".txt");
    const std::string got = replace_all(r.out, root + "/dev", "/dev");
    if (std::string(flag) == "-L")
      EXPECT_EQ(squeeze(got), squeeze(golden)) << got;
    else
      EXPECT_EQ(got, golden);
  }
  auto j = json::parse(cli("smgr -L --json").out);
  ASSERT_EQ(j["luns"].size(), 7u);
  EXPECT_EQ(j["luns"][2]["paths"][1]["target_wwpn"], "0x500a098198a7d3e1");
  // A member path resolves to its map; a mounted disk and an unknown WWN are refused.
  auto busy = cli("smgr --passthrough naa.5000c500a1b2c3d4 boot", 1);
  EXPECT_NE(busy.err.find("mounted (sdb1 on /)"), std::string::npos) << busy.err;
  auto unknown = cli("smgr --import-lun naa.0123 -p x", 1);
  EXPECT_NE(unknown.err.find("no LUN matches 'naa.0123'"), std::string::npos) << unknown.err;
}

TEST_F(Gateway, LoopLunsAreFoundAgainAfterTheirNumbersChange) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices)";
  if (!fs::exists("/dev/loop-control") || !fs::exists("/sbin/losetup"))
    GTEST_SKIP() << "no loop devices on this machine (/dev/loop-control or losetup missing)";
  // Loop devices over files in /dev/shm: the root disk of this machine is slow.
  char tmpl[] = "/dev/shm/rsio-gw-XXXXXX";
  shm_ = ::mkdtemp(tmpl);
  auto make = [&](const std::string& name, uint64_t size) {
    const std::string path = shm_ + "/" + name;
    std::ofstream(path).close();
    fs::resize_file(path, size);
    return path;
  };
  const std::string a = make("lun-a.img", 64ULL << 20), b = make("lun-b.img", 64ULL << 20);
  const std::string c = make("lun-c.img", 48ULL << 20), foreign = make("foreign.img", 64ULL << 20);
  const std::string filler = make("filler.img", 8ULL << 20);
  // The pass-through LUN holds data before the appliance ever sees it.
  std::string c_data(48ULL << 20, '\0');
  {
    std::mt19937_64 rng(7);
    for (size_t i = 0; i < c_data.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(c_data.data() + i, &v, 8);
    }
    std::ofstream(c, std::ios::binary).write(c_data.data(), static_cast<long>(c_data.size()));
  }
  std::string dev_a = losetup(a), dev_b = losetup(b), dev_c = losetup(c);
  if (HasFailure()) return;

  start_daemon();
  cli("smgr --create-pool gw");
  auto listed = json::parse(cli("smgr -L --json").out);
  bool seen_c = false;
  for (const auto& l : listed["luns"])
    seen_c = seen_c || (l["identity"] == "file:" + c && l["use"] == "free");
  ASSERT_TRUE(seen_c) << listed.dump(1);
  cli("smgr --import-lun file:" + a + " -p gw");  // by identity
  cli("smgr --import-lun " + dev_b + " -p gw");   // by device name: recorded by identity too
  cli("smgr --passthrough file:" + c + " ptv");
  cli("smgr -c vol -S 100m -p gw");  // concatenated over both PVs
  auto listing = cli("smgr -q");
  EXPECT_NE(listing.out.find("pass-through"), std::string::npos) << listing.out;
  auto grow = cli("smgr -r ptv -S 1g", 1);
  EXPECT_NE(grow.err.find("pass the LUN through again"), std::string::npos) << grow.err;
  cli("rsadmin -c gwnode -k gwkey");
  cli("rsadmin -g vol gwnode");
  cli("rsadmin -g ptv gwnode");
  auto luns = json::parse(cli("smgr -L --json").out);
  for (const auto& l : luns["luns"]) {
    if (l["identity"] == "file:" + a || l["identity"] == "file:" + b) {
      EXPECT_EQ(l["use"], "pv");
    }
    if (l["identity"] == "file:" + c) {
      EXPECT_EQ(l["use_detail"], "volume ptv");
    }
  }

  auto connect = [&] {
    client::ClientOptions o;
    o.node_name = "gwnode";
    o.node_key = "gwkey";
    o.paths.push_back({"127.0.0.1", port_, ""});
    auto cl = client::Client::connect(o);
    EXPECT_TRUE(cl) << cl.error().message;
    return cl ? std::move(*cl) : nullptr;
  };
  constexpr uint32_t kChunk = 1U << 20;
  std::string vol_data(100ULL << 20, '\0');
  {
    std::mt19937_64 rng(11);
    for (size_t i = 0; i < vol_data.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(vol_data.data() + i, &v, 8);
    }
  }
  auto read_all = [&](client::Client& cl, uint32_t id, size_t bytes) {
    std::string out(bytes, '\0');
    for (size_t off = 0; off < bytes; off += kChunk)
      EXPECT_EQ(io_sync(cl, id, Opcode::kRead, off, kChunk, out.data() + off), StatusCode::kOk);
    return out;
  };
  {
    auto cl = connect();
    ASSERT_TRUE(cl);
    auto vol = cl->open("vol");
    auto ptv = cl->open("ptv");
    ASSERT_TRUE(vol && ptv);
    EXPECT_EQ(ptv->size_bytes, c_data.size()) << "a pass-through volume is the whole LUN";
    for (size_t off = 0; off < vol_data.size(); off += kChunk)
      ASSERT_EQ(io_sync(*cl, vol->id, Opcode::kWrite, off, kChunk, vol_data.data() + off),
                StatusCode::kOk);
    ASSERT_EQ(io_sync(*cl, vol->id, Opcode::kFlush, 0, 0, nullptr), StatusCode::kOk);
    EXPECT_TRUE(read_all(*cl, ptv->id, c_data.size()) == c_data)
        << "the pass-through volume shows the LUN's data as it was";
  }
  EXPECT_EQ(daemon_->stop(), 0);
  EXPECT_TRUE(read_file(c) == c_data) << "nothing was written to the pass-through LUN";

  // New numbers: the filler takes a free number first, then the LUNs come back in reverse.
  const std::vector<std::string> before = {dev_a, dev_b, dev_c};
  for (const std::string& d : before) detach(d);
  losetup(filler);
  dev_c = losetup(c);
  dev_b = losetup(b);
  dev_a = losetup(a);
  ASSERT_NE((std::vector<std::string>{dev_a, dev_b, dev_c}), before);
  fmt::print("loop devices before: {} {} {}, after: {} {} {}\n", before[0], before[1], before[2],
             dev_a, dev_b, dev_c);

  start_daemon();
  auto devices = json::parse(cli("smgr -D --json").out);
  std::map<std::string, std::string> path_of;  // lun_id -> path
  for (const auto& d : devices["devices"]) {
    EXPECT_EQ(d["state"], "ok") << d.dump();
    path_of[d["lun_id"]] = d["path"];
  }
  EXPECT_EQ(path_of["file:" + a], dev_a);
  EXPECT_EQ(path_of["file:" + b], dev_b);
  EXPECT_EQ(path_of["file:" + c], dev_c);
  {
    auto cl = connect();
    ASSERT_TRUE(cl);
    auto vol = cl->open("vol");
    auto ptv = cl->open("ptv");
    ASSERT_TRUE(vol && ptv);
    EXPECT_TRUE(read_all(*cl, vol->id, vol_data.size()) == vol_data)
        << "the concatenated volume reads back byte-exact from its renamed devices";
    EXPECT_TRUE(read_all(*cl, ptv->id, c_data.size()) == c_data);
  }
  EXPECT_EQ(daemon_->stop(), 0);

  // b's device number now leads to a disk of another appliance's pool: refused, not used.
  volmgr::PvLabel other;
  other.pv_uuid = Uuid::random();
  other.pool_uuid = Uuid::random();
  other.pv_size_bytes = 64ULL << 20;
  other.data_offset_bytes = 1ULL << 20;
  other.extent_size_bytes = 4ULL << 20;
  other.pool_name = "elsewhere";
  const auto block = volmgr::encode_label(other);
  {
    std::fstream f(foreign, std::ios::in | std::ios::out | std::ios::binary);
    f.write(reinterpret_cast<const char*>(block.data()), static_cast<long>(block.size()));
  }
  const std::string foreign_before = read_file(foreign);
  const std::string old_b = dev_b;
  detach(dev_b);
  losetup(foreign, old_b);
  start_daemon();
  devices = json::parse(cli("smgr -D --json").out);
  for (const auto& d : devices["devices"]) {
    if (d["lun_id"] != "file:" + b) continue;
    EXPECT_EQ(d["state"], "label-mismatch") << d.dump();
    EXPECT_NE(d["state_detail"].get<std::string>().find("not to this PV"), std::string::npos);
  }
  auto vols = json::parse(cli("smgr -q --json").out);
  for (const auto& v : vols["volumes"])
    EXPECT_EQ(v["state"], v["name"] == "vol" ? "unavailable" : "ok") << v.dump();
  // Importing the foreign disk is refused twice over: its name is still the missing PV's,
  // and under another name it carries another pool's label.
  auto refused = cli("smgr --import-lun " + old_b + " -p gw", 1);
  EXPECT_NE(refused.err.find("which is label-mismatch"), std::string::npos) << refused.err;
  const std::string other_name = losetup(foreign);
  auto foreign_label = cli("smgr --import-lun " + other_name + " -p gw", 1);
  EXPECT_NE(foreign_label.err.find("belongs to another RSIO pool 'elsewhere'"), std::string::npos)
      << foreign_label.err;
  EXPECT_EQ(daemon_->stop(), 0);
  EXPECT_TRUE(read_file(foreign) == foreign_before) << "the foreign disk was not written to";

  // The pass-through LUN is away when rsiod starts (zoning, a cable) and comes back under
  // another name: smgr --rescan finds it and makes its volume available without a restart.
  detach(dev_c);
  start_daemon();
  vols = json::parse(cli("smgr -q --json").out);
  for (const auto& v : vols["volumes"])
    if (v["name"] == "ptv") {
      EXPECT_EQ(v["state"], "unavailable") << v.dump();
    }
  auto nothing = cli("smgr --rescan");
  EXPECT_NE(nothing.out.find("still missing"), std::string::npos) << nothing.out;
  losetup(filler);  // takes a number, so the LUN comes back under yet another one
  dev_c = losetup(c);
  auto rescan = cli("smgr --rescan");
  fmt::print("{}", rescan.out);
  EXPECT_NE(rescan.out.find("back: " + dev_c + " (file:" + c + ")"), std::string::npos)
      << rescan.out;
  EXPECT_NE(rescan.out.find("volume ptv is available again"), std::string::npos) << rescan.out;
  {
    auto cl = connect();
    ASSERT_TRUE(cl);
    auto ptv = cl->open("ptv");
    ASSERT_TRUE(ptv) << ptv.error().message;
    EXPECT_TRUE(read_all(*cl, ptv->id, c_data.size()) == c_data)
        << "the pass-through volume reads the LUN's data after the rescan";
  }
  EXPECT_EQ(daemon_->stop(), 0);
}

// The database is lost: rsiod --rebuild-db brings pools, devices and volumes back from the
// copies on the devices; clients and grants come back from smgr --backup-db.
TEST_F(Gateway, LostDatabaseIsRebuiltFromTheDevicesAndGrantsFromABackup) {
  start_daemon({"--init-pool-size", "256m", "--no-lun-scan"});
  const std::string state = dir_ + "/state";
  cli("smgr -a " + state + "/pools/second.img -S 256m");
  cli("smgr -c plain -S 40m");
  cli("smgr -c safe -S 32m --mirrors 2");
  cli("smgr -c wide -S 16m --stripes 2");
  cli("smgr -r plain -S 60m");
  cli("rsadmin -c tux -k tuxkey");
  cli("rsadmin -g safe tux");
  cli("smgr --backup-db " + dir_ + "/backup.db");
  auto refused = cli("smgr --backup-db " + dir_ + "/backup.db", 1);
  EXPECT_NE(refused.err.find("already exists"), std::string::npos) << refused.err;
  EXPECT_EQ(fs::status(dir_ + "/backup.db").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write)
      << "the backup holds node keys: owner only";
  // What the volumes look like, without the grants (which live only in the database).
  auto volumes = [&] {
    auto j = json::parse(cli("smgr -qv --json").out);
    for (auto& v : j["volumes"]) {
      v.erase("grants");
      v.erase("io");
    }
    return j.dump(1);
  };
  const std::string before = volumes();
  EXPECT_EQ(daemon_->stop(), 0);

  for (const char* f : {"/rsio.db", "/rsio.db-wal", "/rsio.db-shm"}) fs::remove(state + f);
  auto r = run({kRsiod, "--state-dir", state, "--rebuild-db", "--no-lun-scan"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  fmt::print("{}", r.out);
  EXPECT_NE(r.out.find("1 pool(s), 2 device(s) (0 missing), 3 volume(s)"), std::string::npos)
      << r.out;
  auto again = run({kRsiod, "--state-dir", state, "--rebuild-db", "--no-lun-scan"});
  EXPECT_EQ(again.exit_code, 1) << "a database with pools is never overwritten";
  EXPECT_NE(again.err.find("already has pools"), std::string::npos) << again.err;

  start_daemon({"--no-lun-scan"});
  EXPECT_EQ(volumes(), before);
  auto clients = json::parse(cli("rsadmin -q --json").out);
  EXPECT_TRUE(clients["clients"].empty()) << clients.dump();
  EXPECT_EQ(daemon_->stop(), 0);

  // The backup brings clients and grants back.
  for (const char* f : {"/rsio.db", "/rsio.db-wal", "/rsio.db-shm"}) fs::remove(state + f);
  fs::copy_file(dir_ + "/backup.db", state + "/rsio.db");
  start_daemon({"--no-lun-scan"});
  auto grants = cli("rsadmin -qa");
  EXPECT_NE(grants.out.find("tux"), std::string::npos) << grants.out;
  EXPECT_EQ(volumes(), before);
}

}  // namespace
}  // namespace rsio::test
