// rsiod, the RSIO appliance daemon.
//
// Thread model: the main thread runs the I/O io_context (management API connections,
// signals). One metadata thread runs its own io_context and owns SQLite, the volume manager
// and the catalog; nothing else touches them.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <filesystem>
#include <thread>

#include "appliance/api.h"
#include "appliance/catalog.h"
#include "appliance/engine_service.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/units.h"
#include "db/migrate.h"
#include "db/sqlite.h"
#include "mgmt/server.h"
#include "volmgr/rebuild.h"
#include "volmgr/volume_manager.h"

#ifndef RSIO_VERSION
#define RSIO_VERSION "0.0.0"
#endif

namespace {

namespace asio = boost::asio;
using namespace rsio;

// Tells systemd (Type=notify) about readiness and shutdown; a no-op outside systemd.
void notify(const char* state) { sd_notify(0, state); }

struct Options {
  std::string state_dir = "/var/lib/rsio";
  std::string socket_path = "/run/rsio/rsiod.sock";
  std::string init_pool_size;
  std::string log_level = "info";
  std::string resync_rate = "0";
  std::vector<std::string> listen = {"0.0.0.0:5000"};
  uint32_t poll_us = 50;
  std::string sysfs_root = "/sys";
  std::string dev_root = "/dev";
  std::string mountinfo = "/proc/self/mountinfo";
  bool no_lun_scan = false;
  bool rebuild_db = false;
  std::vector<std::string> scan_paths;
};

// How rsiod finds LUNs (and PVs that moved to another device name).
std::optional<volmgr::LunScanOptions> scan_options(const Options& opt) {
  if (opt.no_lun_scan) return std::nullopt;
  volmgr::LunScanOptions s;
  s.sysfs_root = opt.sysfs_root;
  s.dev_root = opt.dev_root;
  s.mountinfo = opt.mountinfo;
  return s;
}

// rsiod --rebuild-db: fills an empty database from the metadata copies on the devices.
int rebuild(const Options& opt, const std::string& state_dir, const std::string& db_path) {
  auto db = db::Database::open(db_path, true);
  if (!db) {
    log::error("cannot rebuild: {}", db.error().message);
    return 1;
  }
  if (Status st = db::migrate(**db, db::builtin_migrations()); !st) {
    log::error("cannot rebuild: {}", st.error().message);
    return 1;
  }
  volmgr::RebuildOptions ro;
  ro.scan = scan_options(opt);
  ro.paths = opt.scan_paths;
  if (ro.paths.empty() && std::filesystem::is_directory(state_dir + "/pools"))
    ro.paths.push_back(state_dir + "/pools");
  auto report = volmgr::rebuild_database(**db, ro);
  if (!report) {
    log::error("rebuild failed: {}", report.error().message);
    return 1;
  }
  for (const std::string& note : report->notes) fmt::print("{}\n", note);
  fmt::print(
      "rebuilt {}: {} pool(s), {} device(s) ({} missing), {} volume(s) from {} device(s) "
      "scanned; {} stale and {} damaged copies not used\n",
      db_path, report->pools, report->pvs, report->missing_pvs, report->volumes,
      report->devices_scanned, report->stale_copies, report->damaged_copies);
  fmt::print(
      "client registrations and grants are not on the devices: restore them from a "
      "database backup (smgr --backup-db FILE) or register and grant again\n");
  return 0;
}

// Holds an exclusive lock on the state directory for the daemon's lifetime, so two daemons
// never share one database.
Result<int> lock_state_dir(const std::string& dir) {
  const std::string path = dir + "/rsiod.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return errno_error(fmt::format("open {}", path), errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    return make_error(Errc::kInUse,
                      fmt::format("another rsiod (pid {}) is using the state directory {}; stop "
                                  "it first or choose another --state-dir",
                                  n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?", dir));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) == 0) {
    ssize_t ignored = ::pwrite(fd, pid.data(), pid.size(), 0);
    (void)ignored;
  }
  return fd;
}

// Creates `dir` (and missing parents) with `mode` for the directories it creates.
Status ensure_dir(const std::string& dir, mode_t mode) {
  std::error_code ec;
  const bool created = std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(Errc::kIo, fmt::format("cannot create directory {}: {}", dir, ec.message()));
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error(Errc::kIo, fmt::format("{} is not a directory", dir));
  if (created && ::chmod(dir.c_str(), mode) != 0)
    return errno_error(fmt::format("chmod {}", dir), errno);
  return {};
}

// Creates the default pool on a sparse file in the state directory, on first start only.
Status init_default_pool(volmgr::VolumeManager& vm, const std::string& state_dir,
                         uint64_t size_bytes) {
  if (!vm.pools().empty()) {
    log::info("--init-pool-size ignored: the appliance already has pools");
    return {};
  }
  const std::string pool_dir = state_dir + "/pools";
  RSIO_TRY_STATUS(ensure_dir(pool_dir, 0700));
  RSIO_TRY(volmgr::PoolInfo pool,
           vm.create_pool({"default", volmgr::kDefaultExtentSizeBytes, true}));
  volmgr::AddDeviceRequest add;
  add.pool = pool.name;
  add.path = pool_dir + "/default-0.img";
  add.create_size_bytes = size_bytes;
  auto pv = vm.add_device(add);
  if (!pv) {
    // Leave no empty pool behind, so the next start with --init-pool-size tries again.
    if (Status st = vm.delete_pool(pool.name); !st)
      log::error("could not remove the empty default pool: {}", st.error().message);
    return pv.error();
  }
  log::info("default pool created on {} ({})", pv->info.path, format_size(pv->info.size_bytes));
  return {};
}

// The namespace this appliance serves, from the settings table.
Status read_namespace(db::Database& db, appliance::ApiInfo& info) {
  RSIO_TRY(db::Statement * st, db.prepare("SELECT key, value FROM settings WHERE key IN "
                                          "('namespace.name', 'namespace.index')"));
  for (;;) {
    RSIO_TRY(bool row, st->step());
    if (!row) break;
    const std::string key = st->column_text(0), value = st->column_text(1);
    if (key == "namespace.name") info.namespace_name = value;
    if (key == "namespace.index") {
      char* end = nullptr;
      const long index = std::strtol(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || index < 0 || index > 999)
        return make_error(
            Errc::kCorrupt,
            fmt::format("setting namespace.index='{}' is not a number 0..999", value));
      info.namespace_index = static_cast<int>(index);
    }
  }
  return {};
}

int run(const Options& opt) {
  log::set_min_level(opt.log_level);  // validated by the option parser

  std::optional<uint64_t> init_pool_bytes;
  if (!opt.init_pool_size.empty()) {
    auto size = parse_size(opt.init_pool_size);
    if (!size) {
      log::error("--init-pool-size: {}", size.error().message);
      return 2;
    }
    init_pool_bytes = *size;
  }

  const std::string state_dir =
      std::filesystem::absolute(opt.state_dir).lexically_normal().string();
  if (Status st = ensure_dir(state_dir, 0700); !st) {
    log::error("{}", st.error().message);
    return 1;
  }
  ::chmod(state_dir.c_str(), 0700);
  auto lock = lock_state_dir(state_dir);
  if (!lock) {
    log::error("{}", lock.error().message);
    return 1;
  }
  const std::string socket_dir = std::filesystem::path(opt.socket_path).parent_path().string();
  if (!socket_dir.empty()) {
    if (Status st = ensure_dir(socket_dir, 0755); !st) {
      log::error("{}", st.error().message);
      return 1;
    }
  }

  // Start-up opens the database on the main thread before any other thread exists; from
  // the moment the metadata thread starts, only it touches SQLite and the models.
  asio::io_context meta_io(1);
  auto meta_guard = asio::make_work_guard(meta_io);
  std::unique_ptr<db::Database> database;
  std::unique_ptr<volmgr::VolumeManager> volumes;
  std::unique_ptr<appliance::Catalog> catalog;
  std::unique_ptr<appliance::Api> api;

  const std::string db_path = state_dir + "/rsio.db";
  if (opt.rebuild_db) return rebuild(opt, state_dir, db_path);
  auto db = db::Database::open(db_path, true);
  if (!db) {
    log::error("cannot start: {}", db.error().message);
    return 1;
  }
  database = std::move(*db);
  if (Status st = db::migrate(*database, db::builtin_migrations()); !st) {
    log::error("cannot start: {}", st.error().message);
    return 1;
  }
  auto vm = volmgr::VolumeManager::open(*database, {scan_options(opt)});
  if (!vm) {
    log::error("cannot start: database {}: {}", db_path, vm.error().message);
    return 1;
  }
  volumes = std::move(*vm);
  auto cat = appliance::Catalog::open(*database);
  if (!cat) {
    log::error("cannot start: database {}: {}", db_path, cat.error().message);
    return 1;
  }
  catalog = std::move(*cat);
  appliance::ApiInfo info{RSIO_VERSION, state_dir, "rsio", 0, now_ms()};
  if (Status st = read_namespace(*database, info); !st) {
    log::error("cannot start: database {}: {}", db_path, st.error().message);
    return 1;
  }
  if (init_pool_bytes) {
    if (Status st = init_default_pool(*volumes, state_dir, *init_pool_bytes); !st) {
      log::error("cannot create the default pool: {}", st.error().message);
      return 1;
    }
  }
  // Metadata copies on the devices: written now (refreshing them after an upgrade), then
  // at most once a second while changes come in, and at shutdown.
  volumes->flush_pool_copies();
  asio::steady_timer copy_timer(meta_io);
  volumes->set_on_dirty([&] {
    copy_timer.expires_after(std::chrono::seconds(1));
    copy_timer.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) volumes->flush_pool_copies();
    });
  });
  api = std::make_unique<appliance::Api>(*volumes, *catalog, info);
  api->set_database(database.get());
  // The I/O engine opens every volume on its devices. Without io_uring rsiod still serves
  // the management API, and says why volumes are not open.
  std::unique_ptr<appliance::EngineService> engine;
  {
    uint64_t rate = 0;
    if (opt.resync_rate != "0") {
      auto parsed = parse_size(opt.resync_rate);
      if (!parsed) {
        log::error("--resync-rate: {}", parsed.error().message);
        return 2;
      }
      rate = *parsed;
    }
    auto started =
        appliance::EngineService::start(*volumes, meta_io.get_executor(), state_dir, rate);
    if (started) {
      engine = std::move(*started);
      if (opt.poll_us > 0) engine->set_poll_us(opt.poll_us);
      api->set_engine(engine.get(), "");
    } else {
      log::error("I/O engine not started: {}", started.error().message);
      api->set_engine(nullptr, "the I/O engine is not running: " + started.error().message);
    }
  }

  // The RSIO export service: listen addresses are checked before anything else listens.
  server::ServerOptions export_opt;
  bool exporting = true;
  if (opt.listen.size() > 1 &&
      std::find(opt.listen.begin(), opt.listen.end(), "none") != opt.listen.end()) {
    log::error("--listen none serves no RSIO and cannot be combined with addresses");
    return 2;
  }
  for (const std::string& l : opt.listen) {
    if (l == "none") {
      exporting = false;
      continue;
    }
    auto a = server::parse_listen_address(l);
    if (!a) {
      log::error("--listen: {}", a.error().message);
      return 2;
    }
    export_opt.listen.push_back(*a);
  }
  if (exporting && !export_opt.listen.empty()) {
    if (engine == nullptr) {
      log::error("cannot export volumes over RSIO: the I/O engine is not running");
    } else if (Status st = engine->start_export(*catalog, export_opt); !st) {
      log::error("cannot start: {}", st.error().message);
      return 1;
    }
  }
  std::string listening;
  if (engine != nullptr)
    for (const auto& a : engine->export_addresses())
      listening += fmt::format("{}{}:{}", listening.empty() ? "" : ",", a.host, a.port);

  asio::io_context io(1);
  auto server = mgmt::ApiServer::listen(
      io, meta_io.get_executor(),
      [a = api.get()](const mgmt::ApiRequest& r) { return a->handle(r); }, opt.socket_path,
      "rsiod");
  if (!server) {
    log::error("cannot start: {}", server.error().message);
    return 1;
  }
  std::thread meta_thread([&] { meta_io.run(); });

  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log::info("signal {} received, shutting down", sig);
    notify("STOPPING=1");
    (*server)->stop();
  });
  ::signal(SIGPIPE, SIG_IGN);

  (*server)->start();
  size_t pools = 0, vols = volumes->volumes().size();
  pools = volumes->pools().size();
  log::info("rsiod {} ready: state_dir={} socket={} rsio={} pools={} volumes={} clients={}",
            RSIO_VERSION, state_dir, opt.socket_path, listening.empty() ? "off" : listening, pools,
            vols, catalog->clients().size());
  notify("READY=1");

  io.run();  // returns once the server stopped and its connections are gone

  // The engine stops its background work and closes the volumes; state changes it still
  // reports are persisted by the metadata thread before that stops.
  if (engine != nullptr) engine->stop_export();
  engine.reset();
  asio::post(meta_io, [&] { copy_timer.cancel(); });
  meta_guard.reset();
  meta_thread.join();
  volumes->flush_pool_copies();
  api.reset();
  catalog.reset();
  volumes.reset();
  database.reset();
  ::close(*lock);
  log::info("rsiod stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{
      "rsiod - the RSIO appliance daemon.\n\n"
      "Owns the metadata database and the storage pools in the state directory and serves\n"
      "the management API (used by smgr and rsadmin) on a root-only Unix socket.\n",
      "rsiod"};
  app.get_formatter()->column_width(34);
  app.add_option("--state-dir", opt.state_dir, "State directory: database, default pool files")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--socket", opt.socket_path, "Management API socket")
      ->type_name("PATH")
      ->envname("RSIO_SOCKET")
      ->capture_default_str();
  app.add_option("--init-pool-size", opt.init_pool_size,
                 "On first start, create the default pool on a sparse file of this size in "
                 "the state directory (e.g. 10g)")
      ->type_name("SIZE");
  app.add_option("--resync-rate", opt.resync_rate,
                 "Limit mirror resync copying to this many bytes per second (e.g. 100M; 0: no "
                 "limit)")
      ->type_name("RATE")
      ->capture_default_str();
  app.add_option("--listen", opt.listen,
                 "Serve RSIO on ADDR:PORT (repeatable; [V6]:PORT for IPv6; port 0 picks a free "
                 "one; \"none\" serves no RSIO)")
      ->type_name("ADDR:PORT")
      ->capture_default_str();
  app.add_option("--poll-us", opt.poll_us,
                 "Busy-poll the I/O engine for up to this many microseconds before sleeping: "
                 "a request that follows within that time is served without a wake-up "
                 "(lower latency at low queue depth, a little CPU while idle; 0: never)")
      ->type_name("MICROSECONDS")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--sysfs-root", opt.sysfs_root,
                 "Where LUN discovery reads the block devices (sysfs)")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--dev-root", opt.dev_root,
                 "Where LUN discovery finds device nodes and /dev/disk/by-id")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--mountinfo", opt.mountinfo,
                 "Where LUN discovery sees what is mounted (with --sysfs-root for a copy of "
                 "another system's trees)")
      ->type_name("FILE")
      ->capture_default_str();
  app.add_flag("--no-lun-scan", opt.no_lun_scan,
               "Do not discover LUNs: PVs are looked for at their recorded paths only, and "
               "pass-through LUNs stay unavailable");
  app.add_flag("--rebuild-db", opt.rebuild_db,
               "Rebuild a lost database from the metadata copies on the devices (PVs found "
               "by LUN discovery and under --scan), then exit. The state directory must not "
               "hold a database with pools");
  app.add_option("--scan", opt.scan_paths,
                 "With --rebuild-db: a file-backed PV or a directory of them to read (repeatable; "
                 "default: STATE_DIR/pools)")
      ->type_name("PATH");
  app.add_option("--log-level", opt.log_level, "debug, info, warning or error")
      ->type_name("LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}))
      ->capture_default_str();
  app.set_version_flag("--version", RSIO_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    return run(opt);
  } catch (const std::exception& e) {
    log::error("fatal: {}", e.what());
    return 1;
  }
}
