// End-to-end tests of the control plane: a real rsiod on a temporary state directory and
// socket, driven by the real smgr and rsadmin binaries.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "process.h"

namespace rsio::test {
namespace {

using nlohmann::json;


std::string rstrip_lines(const std::string& text) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    out += line + "\n";
  }
  while (out.size() >= 2 && out.substr(out.size() - 2) == "\n\n") out.pop_back();
  if (out == "\n") out.clear();
  return out;
}

class ControlPlane : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rsio-e2e-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    state_ = dir_ + "/state";
    socket_ = dir_ + "/rsiod.sock";
    daemon_ = std::make_unique<Daemon>(kRsiod, state_, socket_);
  }
  void TearDown() override {
    daemon_.reset();
    std::filesystem::remove_all(dir_);
  }

  void start(const std::vector<std::string>& extra = {"--init-pool-size", "4g"}) {
    ASSERT_TRUE(daemon_->start(extra)) << daemon_->log();
  }

  // Runs a CLI ("smgr ..." or "rsadmin ...") against this test's appliance.
  CommandResult cli(const std::string& line, RunOptions opt = {}) {
    auto words = split_words(line);
    words[0] = words[0] == "smgr" ? kSmgr : words[0] == "rsadmin" ? kRsadmin : words[0];
    opt.env.push_back("RSIO_SOCKET=" + socket_);
    return run(words, opt);
  }
  void ok(const std::string& line) {
    auto r = cli(line);
    ASSERT_EQ(r.exit_code, 0) << line << "\n" << r.err;
  }

  // The state a bad command must not change: every table of the database, read through a
  // separate connection (WAL lets it read while rsiod runs), plus the API's view.
  std::string snapshot() {
    std::string s;
    auto dump = run({"/usr/bin/sqlite3", "-readonly", state_ + "/rsio.db", ".dump"});
    EXPECT_EQ(dump.exit_code, 0) << dump.err;
    s += dump.out;
    for (const char* c : {"smgr -q --json", "smgr -D --json", "smgr -P --json", "rsadmin -q --json",
                          "rsadmin -qa --json"})
      s += cli(c).out;
    return s;
  }

  // The seed's starting point: clients trainee and dummy, volumes testvol and probevol.
  void seed_fixture() {
    ok("rsadmin -c trainee -k 0139dfX982");
    ok("rsadmin -c dummy -k 1234567890");
    ok("smgr -c testvol -S 256m");
    ok("smgr -c probevol -S 512m");
    ok("rsadmin -g testvol trainee");
    ok("rsadmin -g probevol trainee");
    ok("rsadmin -g probevol dummy");
  }

  std::string dir_, state_, socket_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(ControlPlane, SeedServerTranscriptPrintsTheSeedsOutput) {
  start();
  seed_fixture();
  std::ifstream in(RSIO_SEED_FILE);
  ASSERT_TRUE(in) << RSIO_SEED_FILE;
  std::vector<std::pair<std::string, std::string>> steps;  // command, expected output
  for (std::string line; std::getline(in, line);) {
    if (line.rfind('#', 0) == 0) continue;
    if (line.rfind("srv# ", 0) == 0)
      steps.push_back({line.substr(5), ""});
    else if (!steps.empty())
      steps.back().second += line + "\n";
  }
  ASSERT_EQ(steps.size(), 7u);
  for (const auto& [command, expected] : steps) {
    auto r = cli(command);
    EXPECT_EQ(r.exit_code, 0) << command << "\n" << r.err;
    EXPECT_EQ(rstrip_lines(r.out), rstrip_lines(expected)) << "srv# " << command;
  }
  // The volume has the seed's size: 2097152 blocks of 512 bytes.
  auto v = json::parse(cli("smgr -q --json").out);
  EXPECT_EQ(v["volumes"][2]["name"], "eisberg");
  EXPECT_EQ(v["volumes"][2]["blocks"], 2097152);
  EXPECT_EQ(v["volumes"][2]["block_size_bytes"], 512);
}

TEST_F(ControlPlane, EverythingPersistsAcrossRestart) {
  start();
  seed_fixture();
  ok("smgr --create-pool fast --extent-size 1m");
  ok("smgr -a " + dir_ + "/f1.img -p fast -S 256m");
  ok("smgr -a " + dir_ + "/f2.img -p fast -S 256m");
  ok("smgr -c striped -p fast -S 100m --stripes 2 --stripe-size 128k");
  ok("smgr -c mirrored -p fast -S 50m --mirrors 2");
  ok("smgr -r testvol -S 300m");
  ok("smgr --rename probevol probe2");
  ok("rsadmin -g striped dummy --read-only");
  const std::string before = snapshot();
  ASSERT_EQ(daemon_->stop(), 0) << "clean exit on SIGTERM";
  EXPECT_FALSE(std::filesystem::exists(socket_)) << "socket removed on shutdown";
  start({});
  EXPECT_EQ(snapshot(), before);
  auto grants = cli("rsadmin -qa");
  EXPECT_EQ(rstrip_lines(grants.out),
            "0 testvol         : trainee\n0 probe2          : dummy,trainee\n0 striped         : "
            "dummy(ro)\n");
}

TEST_F(ControlPlane, BadInputGetsAClearErrorAndChangesNothing) {
  start();
  seed_fixture();
  ok("rsadmin -c tux -k Linuxtag");
  ok("smgr -c eisberg -S 1g");
  ok("rsadmin -g eisberg tux");
  const std::string before = snapshot();
  struct Case {
    std::string command;
    int exit_code;
    std::string message;
  };
  const std::string long_name(65, 'v');
  const std::vector<Case> cases = {
      {"smgr -c x -S abc", 2, "invalid size 'abc'"},
      {"smgr -c x -S 0", 2, "must be greater than zero"},
      {"smgr -c x -S -1g", 2, "must not be negative"},
      {"smgr -c x -S 99999999999T", 2, "too large"},
      {"smgr -c a/b -S 1g", 1, "contains '/'"},
      {"smgr -c " + long_name + " -S 1g", 1, "65 bytes long"},
      {"rsadmin -c a/b -k key", 1, "contains '/'"},
      {"smgr -c eisberg -S 1g", 1, "volume 'eisberg' already exists"},
      {"rsadmin -c tux -k other", 1, "node tux already exists"},
      {"rsadmin -g nosuchvol tux", 1, "volume nosuchvol does not exist"},
      {"rsadmin -g eisberg nosuchnode", 1, "node nosuchnode does not exist"},
      {"smgr -c big -S 100g", 1, "not enough free space in pool 'default'"},
      {"smgr -c m3 -S 1g --mirrors 3", 1,
       "need 3 distinct devices with 1 GiB free, pool 'default' has 1"},
      {"smgr -c both -S 1g --mirrors 2 --stripes 2", 1, "either striped or mirrored"},
      {"smgr -c bs -S 1g --block-size 1000", 1, "block size must be 512 or 4096"},
      {"smgr -c ss -S 1g --stripe-size 64k", 1, "needs a striped layout"},
      {"smgr -d eisberg", 1, "is granted to tux"},
      {"smgr -r eisberg -S 512m", 1, "--force"},
      {"smgr -r eisberg -S 100g", 1, "not enough free space"},
      {"smgr -r nosuch -S 1g", 1, "does not exist"},
      {"smgr --rename eisberg testvol", 1, "already exists"},
      {"smgr --rename eisberg a/b", 1, "contains '/'"},
      {"rsadmin -d tux", 1, "still has access"},
      {"rsadmin -r eisberg dummy", 1, "has no access"},
      {"smgr -a " + dir_ + "/tiny.img -S 1m", 1, "too small"},
      {"smgr -a " + state_ + "/pools/default-0.img", 1, "already a device"},
      {"smgr -a relative.img -S 1g", 1, "must be absolute"},
      {"smgr -a /nonexistent/dir/x.img -S 1g", 1, "No such file or directory"},
      {"smgr --create-pool default", 1, "already exists"},
      {"smgr --create-pool p2 --extent-size 3m", 1, "power of two"},
      {"smgr --delete-pool default", 1, "still has 1 device"},
      {"smgr -c v -S 1g -p nosuchpool", 1, "pool 'nosuchpool' does not exist"},
      {"smgr", 2, "say what to do"},
      {"smgr -q -c x", 2, "one action at a time"},
      {"smgr -c x", 2, "needs a size"},
      {"smgr -q --bogus", 2, "--bogus"},
      {"rsadmin", 2, "say what to do"},
      {"rsadmin -g eisberg", 2, ""},
      {"rsadmin -k key", 2, "belongs to -c"},
      {"rsadmin -q -f", 2, "belongs to -d"},
      {"smgr -c x -S 1g --stripes 0", 2, "at least 1"},
      {"smgr -c x -S 1g --mirrors 0", 2, "at least 1"},
      {"smgr -q -p default", 2, "belongs to -c, -a, --import-lun or --passthrough"},
      {"smgr -P -v", 2, "belongs to -q"},
      {"smgr -q --default", 2, "belong to --create-pool"},
      {"smgr -c x -S 1g -f", 2, "belongs to -r, -d, -a, --import-lun or --remove-leg"},
      {"smgr --set-default-pool nosuch", 1, "pool 'nosuch' does not exist"},
  };
  for (const Case& c : cases) {
    auto r = cli(c.command);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.command << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.command << "\nstderr: " << r.err;
    EXPECT_TRUE(r.out.empty()) << c.command << " printed to stdout: " << r.out;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/tiny.img")) << "a refused device file is removed";
  EXPECT_EQ(snapshot(), before);
}

// Sends one raw HTTP request over the socket and returns status line and body.
std::string raw_http(const std::string& socket_path, const std::string& request) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return "connect failed";
  (void)!::write(fd, request.data(), request.size());
  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;)
    reply.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return reply;
}

std::string post(const std::string& path, const std::string& body) {
  return "POST " + path +
         " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
         "Content-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

TEST_F(ControlPlane, ApiRejectsMalformedJsonAndUnknownFields) {
  start();
  const std::string before = snapshot();
  auto r = raw_http(socket_, post("/1.0/volumes", "{\"name\": \"x\", \"size_bytes\": "));
  EXPECT_NE(r.find("400 Bad Request"), std::string::npos) << r;
  EXPECT_NE(r.find("not valid JSON"), std::string::npos) << r;
  r = raw_http(socket_,
               post("/1.0/volumes", R"({"name":"x","size_bytes":1048576,"colour":"red"})"));
  EXPECT_NE(r.find("400 Bad Request"), std::string::npos) << r;
  EXPECT_NE(r.find("unknown field 'colour'"), std::string::npos) << r;
  r = raw_http(socket_, post("/1.0/volumes", R"({"name":"x","size_bytes":"1g"})"));
  EXPECT_NE(r.find("must be a non-negative integer"), std::string::npos) << r;
  r = raw_http(socket_, post("/1.0/volumes",
                             R"({"name":"x","size_bytes":4194304,"layout":"linear","stripes":3})"));
  EXPECT_NE(r.find("contradicts"), std::string::npos) << r;
  r = raw_http(socket_, post("/1.0/volumes", R"({"name":"x","size_bytes":4194304,"mirrors":0})"));
  EXPECT_NE(r.find("at least 1"), std::string::npos) << r;
  r = raw_http(socket_, post("/1.0/clients", R"(["tux"])"));
  EXPECT_NE(r.find("must be a JSON object"), std::string::npos) << r;
  r = raw_http(socket_, "GET /2.0/volumes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(r.find("404 Not Found"), std::string::npos) << r;
  r = raw_http(
      socket_,
      "PUT /1.0/volumes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  EXPECT_NE(r.find("405"), std::string::npos) << r;
  r = raw_http(socket_, "garbage\r\n\r\n");
  EXPECT_NE(r.find("400"), std::string::npos) << r;
  EXPECT_EQ(snapshot(), before);
  // The daemon is still serving.
  ok("smgr -q");
}

TEST_F(ControlPlane, IdsAreNeverReusedAndNodeKeysStayPrivate) {
  start();
  ok("rsadmin -c a -k ka");
  ok("rsadmin -c b -k kb");
  ok("rsadmin -d b");
  auto r = cli("rsadmin -c c -k kc");
  EXPECT_EQ(r.out, "node c added with rs nodeid 3\n");
  ok("smgr -c v1 -S 4m");
  ok("smgr -d v1");
  auto v = json::parse(cli("smgr -c v2 -S 4m --json").out);
  EXPECT_EQ(v["id"], 2);
  // Keys appear in the verbose listing (as in the seed) but not in plain JSON listings.
  EXPECT_EQ(cli("rsadmin -q --json").out.find("\"node_key\""), std::string::npos);
  EXPECT_NE(cli("rsadmin -qv --json").out.find("\"node_key\": \"kc\""), std::string::npos);
}

TEST_F(ControlPlane, DefaultPoolCanBeChanged) {
  start();
  ok("smgr --create-pool second");
  ok("smgr -a " + dir_ + "/s.img -p second -S 64m");
  ok("smgr --set-default-pool second");
  ok("smgr -c v -S 4m");
  auto v = json::parse(cli("smgr -q --json").out);
  EXPECT_EQ(v["volumes"][0]["pool"], "second");
  auto p = json::parse(cli("smgr -P --json").out);
  for (const auto& pool : p["pools"]) EXPECT_EQ(pool["default"], pool["name"] == "second");
}

// A loop device over a file in the test directory, detached (and unmounted) on destruction.
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& file) {
    auto r = run({"/usr/sbin/losetup", "-f", "--show", file});
    if (r.exit_code == 0) path_ = r.out.substr(0, r.out.find('\n'));
  }
  ~LoopDevice() {
    if (!mount_point_.empty()) run({"/usr/bin/umount", mount_point_});
    if (!path_.empty()) run({"/usr/sbin/losetup", "-d", path_});
  }
  bool mount(const std::string& dir) {
    std::filesystem::create_directories(dir);
    if (run({"/usr/bin/mount", path_, dir}).exit_code != 0) return false;
    mount_point_ = dir;
    return true;
  }
  void umount() {
    run({"/usr/bin/umount", mount_point_});
    mount_point_.clear();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_, mount_point_;
};

TEST_F(ControlPlane, BlockDevicesInUseOrHoldingDataAreRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for loop devices";
  for (const char* f : {"a.img", "b.img"}) {
    auto r = run({"/usr/bin/truncate", "-s", "64M", dir_ + "/" + f});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  LoopDevice plain(dir_ + "/a.img");
  LoopDevice with_fs(dir_ + "/b.img");
  if (plain.path().empty() || with_fs.path().empty()) GTEST_SKIP() << "no loop devices here";
  start();
  // A blank block device is added under the name given, with its size from the kernel.
  ok("smgr -a " + plain.path());
  auto d = json::parse(cli("smgr -D --json").out);
  ASSERT_EQ(d["devices"].size(), 2u);
  EXPECT_EQ(d["devices"][1]["path"], plain.path());
  EXPECT_EQ(d["devices"][1]["kind"], "block");
  EXPECT_EQ(d["devices"][1]["size_bytes"], 64u << 20);
  ok("smgr --remove-device " + plain.path());

  auto mkfs = run({"/usr/sbin/mkfs.ext4", "-q", with_fs.path()});
  ASSERT_EQ(mkfs.exit_code, 0) << mkfs.err;
  ASSERT_TRUE(with_fs.mount(dir_ + "/mnt"));
  const std::string before = snapshot();
  auto r = cli("smgr -a " + with_fs.path() + " --force");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is in use"), std::string::npos) << r.err;
  with_fs.umount();
  r = cli("smgr -a " + with_fs.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("contains an ext2/3/4 file system"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(), before);
  ok("smgr -a " + with_fs.path() + " --force");
}

// rsiod opens every volume in its I/O engine: a mirror can be scrubbed from smgr and the
// progress shows in smgr -qv.
TEST_F(ControlPlane, MirrorScrubRunsInTheEngine) {
  start();
  ok("smgr --create-pool m --extent-size 1m");
  ok("smgr -a " + dir_ + "/m1.img -p m -S 64m");
  ok("smgr -a " + dir_ + "/m2.img -p m -S 64m");
  ok("smgr -c mv -p m -S 16m --mirrors 2");
  ok("smgr -c lin -S 8m");
  auto v = json::parse(cli("smgr -qv --json").out);
  ASSERT_TRUE(v["volumes"][0]["io"]["open"].get<bool>()) << v.dump();
  // A new mirror is synced once (leg 0 copied to leg 1); wait (bounded) for that first.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (v["volumes"][0]["io"]["resync"]["active"].get<bool>() &&
         std::chrono::steady_clock::now() < deadline)
    v = json::parse(cli("smgr -qv --json").out);
  EXPECT_EQ(v["volumes"][0]["io"]["resync"]["regions_done"], 8) << "initial sync of 8 regions";
  EXPECT_EQ(v["volumes"][0]["io"]["marked_regions"], 0);
  ok("smgr --scrub mv");
  // Wait (bounded) until the scrub has gone through every region.
  json scrub;
  do {
    auto r = json::parse(cli("smgr -qv --json").out);
    scrub = r["volumes"][0]["io"]["scrub"];
    if (!scrub["active"].get<bool>()) break;
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_FALSE(scrub["active"].get<bool>());
  EXPECT_EQ(scrub["regions_done"], scrub["regions_total"]);
  EXPECT_EQ(scrub["regions_total"], 8);  // 16 MiB in 2 MiB regions
  EXPECT_EQ(scrub["mismatched_regions"], 0);
  EXPECT_NE(cli("smgr -qv").out.find("last scrub: 8 of 8 regions compared, 0 differ"),
            std::string::npos);
  auto r = cli("smgr --restore-leg mv 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not a faulty or resyncing leg"), std::string::npos) << r.err;
  r = cli("smgr --restore-leg mv 7");
  EXPECT_NE(r.err.find("has legs 0 to 1"), std::string::npos) << r.err;
  r = cli("smgr --scrub lin");
  EXPECT_NE(r.err.find("not mirrored"), std::string::npos) << r.err;
  // A restart opens the volumes again.
  ASSERT_EQ(daemon_->stop(), 0);
  start({});
  v = json::parse(cli("smgr -qv --json").out);
  EXPECT_TRUE(v["volumes"][0]["io"]["open"].get<bool>());
}

// A linear volume with data gets a second leg: the engine copies every region to it; the
// old leg can then be removed and the data is still there.
TEST_F(ControlPlane, AddedLegReceivesTheDataAndTheOldLegCanGo) {
  start();
  ok("smgr --create-pool m --extent-size 1m");
  for (const char* f : {"/m1.img", "/m2.img"}) ok("smgr -a " + dir_ + f + " -p m -S 32m");
  ok("smgr -c v -p m -S 6m");
  auto vol = json::parse(cli("smgr -qv --json").out)["volumes"][0];
  const auto& area0 = vol["segments"][0]["areas"][0];
  const uint64_t extent = vol["extent_size_bytes"].get<uint64_t>();
  const uint64_t size = vol["size_bytes"].get<uint64_t>();
  ASSERT_EQ(vol["segments"].size(), 1u);
  // Put data on the volume's only leg, straight into its device file.
  std::vector<char> pattern(size);
  std::mt19937 rng(5);
  for (auto& c : pattern) c = static_cast<char>(rng());
  const uint64_t off0 = (1 << 20) + area0["device_start_extent"].get<uint64_t>() * extent;
  {
    std::fstream f(area0["device"].get<std::string>(),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(off0));
    f.write(pattern.data(), static_cast<std::streamsize>(size));
  }
  auto r = cli("smgr --add-leg v");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mirrored 2-way"), std::string::npos) << r.out;
  // Wait (bounded) until the copy is done and the leg is recorded in sync.
  json v;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  do {
    v = json::parse(cli("smgr -qv --json").out)["volumes"][0];
    if (v["legs"][1]["state"] == "in-sync") break;
  } while (std::chrono::steady_clock::now() < deadline);
  ASSERT_EQ(v["legs"][1]["state"], "in-sync") << v.dump();
  const json area1 = v["segments"][0]["areas"][1];
  const uint64_t off1 = (1 << 20) + area1["device_start_extent"].get<uint64_t>() * extent;
  std::vector<char> copy(size);
  {
    std::ifstream f(area1["device"].get<std::string>(), std::ios::binary);
    f.seekg(static_cast<std::streamoff>(off1));
    f.read(copy.data(), static_cast<std::streamsize>(size));
  }
  EXPECT_TRUE(copy == pattern) << "the new leg holds the volume's data";
  ok("smgr --scrub v");
  // The old leg goes; the volume is linear on the new one.
  do {
    v = json::parse(cli("smgr -qv --json").out)["volumes"][0];
  } while (v["io"]["scrub"]["active"].get<bool>() && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(v["io"]["scrub"]["mismatched_regions"], 0);
  ok("smgr --remove-leg v 0");
  v = json::parse(cli("smgr -qv --json").out)["volumes"][0];
  EXPECT_EQ(v["layout"], "linear");
  EXPECT_EQ(v["segments"][0]["areas"][0]["device"], area1["device"]);
}

TEST_F(ControlPlane, NonRootCallerIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a command as another user";
  start();
  ok("smgr -c v -S 8m");
  const uid_t nobody = 65534;
  // The build tree may sit below a directory other users cannot enter: run a copy of smgr
  // from this test's own directory, which they can.
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  const std::string smgr_copy = dir_ + "/smgr";
  std::filesystem::copy_file(kSmgr, smgr_copy);
  ASSERT_EQ(::chmod(smgr_copy.c_str(), 0755), 0);
  // The socket is mode 0600: the connection itself is refused.
  auto r = cli(smgr_copy + " -q", RunOptions{{}, nobody});
  if (r.exit_code == 127) GTEST_SKIP() << "uid 65534 cannot execute " << smgr_copy;
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("root-only"), std::string::npos) << r.err;
  // Even if an admin loosens the socket's mode, rsiod checks the caller's uid.
  ASSERT_EQ(::chmod(socket_.c_str(), 0666), 0);
  const std::string before = snapshot();
  r = cli(smgr_copy + " -d v --force", RunOptions{{}, nobody});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("uid 65534 may not use the management API"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(), before);
}

TEST_F(ControlPlane, CliSaysHowToStartRsiodWhenItIsNotRunning) {
  auto r = cli("smgr -q");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is it running?"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("rsiod --state-dir"), std::string::npos) << r.err;
  r = run({kRsadmin, "-q", "--socket", dir_ + "/other.sock"});
  EXPECT_NE(r.err.find(dir_ + "/other.sock"), std::string::npos) << "--socket is honoured";
}

// A daemon that accepts but never answers (hung, or stopped with SIGSTOP): the command
// fails after its deadline instead of hanging the admin's shell.
TEST_F(ControlPlane, CliGivesUpOnADaemonThatNeverAnswers) {
  const std::string path = dir_ + "/hung.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 8), 0);  // connections queue; nothing ever reads them
  RunOptions opt;
  opt.env.push_back("RSIO_API_TIMEOUT=1");
  opt.timeout = std::chrono::milliseconds(20000);
  for (const std::string& bin : {kSmgr, kRsadmin}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = run({bin, "-q", "--socket", path}, opt);
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(r.exit_code, 1) << bin;
    EXPECT_NE(r.err.find("did not answer within 1 s"), std::string::npos) << r.err;
    EXPECT_LT(took, std::chrono::seconds(10)) << bin << " waited for the test's own timeout";
  }
  ::close(fd);
}

TEST_F(ControlPlane, SecondDaemonOnTheSameStateOrSocketIsRefused) {
  start();
  auto r = run({kRsiod, "--state-dir", state_, "--socket", dir_ + "/other.sock"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is using the state directory"), std::string::npos) << r.err;
  r = run({kRsiod, "--state-dir", dir_ + "/state2", "--socket", socket_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already serving"), std::string::npos) << r.err;
  ok("smgr -q");
}

TEST_F(ControlPlane, CorruptDatabaseIsRefusedAndLeftAlone) {
  std::filesystem::create_directories(state_);
  const std::string db = state_ + "/rsio.db";
  const std::string garbage(65536, '\x42');
  std::ofstream(db) << garbage;
  EXPECT_FALSE(daemon_->start());
  EXPECT_NE(daemon_->log().find("damaged or not an RSIO database"), std::string::npos)
      << daemon_->log();
  std::ifstream in(db);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()),
            garbage);
}

TEST_F(ControlPlane, DatabaseFromANewerReleaseIsRefused) {
  start();
  ASSERT_EQ(daemon_->stop(), 0);
  auto r = run({"/usr/bin/sqlite3", state_ + "/rsio.db", "PRAGMA user_version = 999;"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(daemon_->start({}));
  EXPECT_NE(daemon_->log().find("schema version 999"), std::string::npos) << daemon_->log();
}

TEST_F(ControlPlane, CorruptedLabelMakesTheVolumeUnavailableNotOverwritten) {
  start();
  ok("smgr -c v -S 8m");
  ASSERT_EQ(daemon_->stop(), 0);
  const std::string pv = state_ + "/pools/default-0.img";
  {
    std::fstream f(pv, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('!');
  }
  start({});
  auto d = json::parse(cli("smgr -D --json").out);
  EXPECT_EQ(d["devices"][0]["state"], "label-mismatch");
  auto v = json::parse(cli("smgr -q --json").out);
  EXPECT_EQ(v["volumes"][0]["state"], "unavailable");
  std::ifstream in(pv, std::ios::binary);
  in.seekg(200);
  EXPECT_EQ(in.get(), '!') << "the damaged label is left as found";
}

TEST_F(ControlPlane, ListingsHaveJsonAndHelpExplains) {
  start();
  seed_fixture();
  for (const char* c : {"smgr -q --json", "smgr -qv --json", "smgr -P --json", "smgr -D --json",
                        "rsadmin -q --json", "rsadmin -qv --json", "rsadmin -qa --json",
                        "rsadmin -qA --json", "rsadmin -l --json"}) {
    auto r = cli(c);
    ASSERT_EQ(r.exit_code, 0) << c << r.err;
    EXPECT_FALSE(json::parse(r.out, nullptr, false).is_discarded()) << c;
  }
  for (const char* c : {"smgr --help", "rsadmin --help"}) {
    auto r = cli(c);
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("Examples:"), std::string::npos) << r.out;
  }
  auto r = run({kRsiod, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--init-pool-size"), std::string::npos);
}

}  // namespace
}  // namespace rsio::test
