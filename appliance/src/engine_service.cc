// Thread model: see engine_service.h. Impl members marked "engine thread" are touched only
// there; the rest is set before the thread starts and read-only afterwards.
#include "appliance/engine_service.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "appliance/catalog.h"
#include "common/log.h"
#include "common/units.h"

namespace rsio::appliance {

namespace io = volmgr::io;
using volmgr::LegState;
using volmgr::VolumeInfo;

namespace {

constexpr uint64_t kRegionBytes = 2ULL << 20;
constexpr auto kCallTimeout = std::chrono::seconds(30);

// What the engine thread needs to open a volume, copied on the metadata thread.
struct OpenSpec {
  VolumeInfo info;
  uint64_t extent_size_bytes = 0;
  std::vector<volmgr::PvInfo> pvs;
  bool mark_all_regions = false;  // a leg was added: copy everything to it
};

// Posts to the engine loop while it exists: work queued on the metadata thread may answer
// after the engine has stopped.
struct LoopRef {
  std::mutex mu;
  io::Loop* loop = nullptr;  // GUARDED_BY(mu)
  void post(std::function<void()> fn) {
    std::lock_guard lock(mu);
    if (loop != nullptr) loop->post(std::move(fn));
  }
};

}  // namespace

struct EngineService::Impl : io::VolumeEvents, server::ExportBackend {
  volmgr::VolumeManager& vm;  // metadata thread only
  boost::asio::any_io_executor meta;
  std::string bitmap_dir;
  uint64_t resync_rate_bytes_per_s = 0;  // 0: unlimited
  std::unique_ptr<io::Loop> loop;
  std::thread thread;

  // Engine thread.
  std::map<int64_t, std::unique_ptr<io::Device>> devices;  // by pv id
  struct Vol {
    std::unique_ptr<io::Device> bitmap;
    std::unique_ptr<io::VolumeIo> io;
    std::string reason;
  };
  std::map<int64_t, Vol> volumes;
  std::unique_ptr<server::ExportServer> exporter;
  const Catalog* catalog = nullptr;  // metadata thread only
  std::shared_ptr<LoopRef> loop_ref = std::make_shared<LoopRef>();

  Impl(volmgr::VolumeManager& v, boost::asio::any_io_executor m, std::string dir)
      : vm(v), meta(std::move(m)), bitmap_dir(std::move(dir)) {}

  // Runs `fn` on the engine thread and returns its result. Metadata thread.
  template <class T>
  Result<T> call(std::function<Result<T>()> fn) {
    auto promise = std::make_shared<std::promise<Result<T>>>();
    auto future = promise->get_future();
    loop->post([promise, fn = std::move(fn)] { promise->set_value(fn()); });
    if (future.wait_for(kCallTimeout) != std::future_status::ready)
      return make_error(Errc::kUnavailable, "the I/O engine did not answer in time");
    return future.get();
  }

  // VolumeEvents (engine thread): persist on the metadata thread.
  void leg_faulty(int64_t volume_id, uint32_t leg, const std::string& reason) override {
    // Capture the VolumeManager, not this: the service may be gone when the handler runs.
    boost::asio::post(meta, [&vm = vm, volume_id, leg, reason] {
      if (Status st = vm.set_leg_state(volume_id, leg, LegState::kFaulty, reason); !st)
        log::error("cannot record faulty leg: volume_id={} leg={}: {}", volume_id, leg,
                   st.error().message);
    });
  }
  void leg_in_sync(int64_t volume_id, uint32_t leg) override {
    boost::asio::post(meta, [&vm = vm, volume_id, leg] {
      if (Status st = vm.set_leg_state(volume_id, leg, LegState::kInSync, ""); !st)
        log::error("cannot record in-sync leg: volume_id={} leg={}: {}", volume_id, leg,
                   st.error().message);
    });
  }

  // ExportBackend (engine thread): answers are computed on the metadata thread, which owns
  // the catalog and the volume manager, and posted back.
  void lookup_node(const std::string& name,
                   std::function<void(std::optional<server::NodeInfo>)> done) override {
    boost::asio::post(meta, [cat = catalog, ref = loop_ref, name, done = std::move(done)] {
      std::optional<server::NodeInfo> n;
      if (const Client* c = cat->find_client(name)) n = server::NodeInfo{c->id, c->node_key};
      ref->post([done, n] { done(n); });
    });
  }
  void list_volumes(int64_t client_id,
                    std::function<void(std::vector<wire::VolumeEntry>)> done) override {
    boost::asio::post(
        meta, [cat = catalog, &vm = vm, ref = loop_ref, client_id, done = std::move(done)] {
          std::vector<wire::VolumeEntry> out;
          for (const Grant& g : cat->grants()) {
            if (g.client_id != client_id) continue;
            const VolumeInfo* v = vm.find_volume(g.volume_id);
            if (v == nullptr) continue;
            out.push_back({v->size_bytes, static_cast<uint32_t>(v->block_size_bytes),
                           g.access == Access::kReadOnly, v->name});
          }
          ref->post([done, out = std::move(out)] { done(out); });
        });
  }
  void check_open(int64_t client_id, const std::string& volume_name, bool read_only,
                  std::function<void(server::OpenAnswer)> done) override {
    boost::asio::post(meta, [cat = catalog, &vm = vm, ref = loop_ref, client_id, volume_name,
                             read_only, done = std::move(done)] {
      server::OpenAnswer a;
      a.status = wire::StatusCode::kNotFound;
      if (const VolumeInfo* v = vm.find_volume(volume_name)) {
        for (const Grant& g : cat->grants_of_volume(v->id)) {
          if (g.client_id != client_id) continue;
          a.status = wire::StatusCode::kOk;
          a.volume_id = v->id;
          a.volume_name = v->name;
          a.read_only = read_only || g.access == Access::kReadOnly;
        }
      }
      ref->post([done, a] { done(a); });
    });
  }
  block::BlockTarget* target(int64_t volume_id) override {
    auto it = volumes.find(volume_id);
    return it == volumes.end() ? nullptr : it->second.io.get();
  }

  io::Device* device(const volmgr::PvInfo& pv) {
    auto it = devices.find(pv.id);
    if (it != devices.end()) return it->second.get();
    if (pv.state != volmgr::PvState::kOk) return nullptr;
    auto dev = io::open_uring_device(*loop, pv.path, io::UringDeviceOptions{});
    if (!dev) {
      log::error("pv={} path={}: cannot open for I/O: {}", pv.uuid.str(), pv.path,
                 dev.error().message);
      return nullptr;
    }
    return devices.emplace(pv.id, std::move(*dev)).first->second.get();
  }

  // The bitmap file of a mirrored volume, created on first use; returns its bits.
  Result<std::vector<uint8_t>> prepare_bitmap(const VolumeInfo& v, const std::string& path,
                                              uint64_t size_bytes) {
    const uint64_t regions = div_round_up(std::max<uint64_t>(size_bytes, 1), kRegionBytes);
    const uint64_t bytes =
        std::max<uint64_t>(4096, div_round_up(div_round_up(regions, 8), 4096) * 4096);
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
      return errno_error(fmt::format("bitmap of volume {}: open {}", v.name, path), errno);
    struct stat st {};
    std::vector<uint8_t> bits;
    if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) < bytes &&
        ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      int err = errno;
      ::close(fd);
      return errno_error(fmt::format("bitmap {}: size", path), err);
    }
    bits.resize(bytes);
    const ssize_t n = ::pread(fd, bits.data(), bits.size(), 0);
    ::close(fd);
    if (n < 0) return errno_error(fmt::format("bitmap {}: read", path), errno);
    return bits;
  }

  // Engine thread.
  Status open_on_engine(const OpenSpec& spec) {
    const VolumeInfo& v = spec.info;
    if (auto it = volumes.find(v.id); it != volumes.end() && it->second.io) {
      if (it->second.io->in_flight() > 0)
        return make_error(Errc::kInUse, fmt::format("volume {} is busy", v.name));
      volumes.erase(it);
    }
    Vol vol;
    std::map<int64_t, const volmgr::PvInfo*> pv_by_id;
    for (const auto& pv : spec.pvs) pv_by_id[pv.id] = &pv;
    bool missing = false;
    for (const auto& s : v.segments)
      for (const auto& a : s.areas)
        if (device(*pv_by_id.at(a.pv_id)) == nullptr) missing = true;
    io::VolumeIoOptions opt;
    opt.events = this;
    opt.resync_rate_bytes_per_s = resync_rate_bytes_per_s;
    // Resyncing legs (restored, or new) open as such: the engine copies the marked regions
    // to them, resuming where a restart interrupted it.
    opt.leg_states = v.leg_states;
    if (missing && v.spec.layout != volmgr::Layout::kMirrored) {
      vol.reason = "a device of this volume is missing or cannot be opened";
      volumes[v.id] = std::move(vol);
      return {};
    }
    if (v.spec.layout == volmgr::Layout::kMirrored) {
      const std::string path = bitmap_dir + "/" + v.uuid.str() + ".wib";
      RSIO_TRY(auto bits, prepare_bitmap(v, path, v.size_bytes));
      if (spec.mark_all_regions) {
        // A new leg holds nothing yet: every region must be copied to it. Marking them all
        // durably first makes that copy resumable like any other resync.
        const uint64_t regions = div_round_up(std::max<uint64_t>(v.size_bytes, 1), kRegionBytes);
        for (uint64_t r = 0; r < regions; ++r) bits[r / 8] |= static_cast<uint8_t>(1u << (r % 8));
        int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        const bool ok =
            fd >= 0 &&
            ::pwrite(fd, bits.data(), bits.size(), 0) == static_cast<ssize_t>(bits.size()) &&
            ::fdatasync(fd) == 0;
        if (fd >= 0) ::close(fd);
        if (!ok) return errno_error(fmt::format("bitmap {}: mark all regions", path), errno);
      }
      auto dev = io::open_uring_device(*loop, path, io::UringDeviceOptions{});
      if (!dev) return dev.error();
      vol.bitmap = std::move(*dev);
      opt.bitmap.device = vol.bitmap.get();
      opt.bitmap.region_bytes = kRegionBytes;
      opt.bitmap.initial_bits = std::move(bits);
    }
    auto lookup = [&](int64_t id) -> io::Device* {
      auto it = pv_by_id.find(id);
      return it == pv_by_id.end() ? nullptr : device(*it->second);
    };
    auto opened = io::VolumeIo::open(*loop, v, spec.extent_size_bytes, spec.pvs, lookup, opt);
    if (!opened) return opened.error();
    vol.io = std::move(*opened);
    volumes[v.id] = std::move(vol);
    return {};
  }

  // Runs `fn` on the engine thread and returns its status. Metadata thread.
  Status run(std::function<Status()> fn) {
    auto r = call<bool>([fn = std::move(fn)]() -> Result<bool> {
      RSIO_TRY_STATUS(fn());
      return true;
    });
    if (!r) return r.error();
    return {};
  }

  // Opens a volume on the engine thread and waits for the outcome. Metadata thread.
  Status open(OpenSpec spec) {
    return run([this, spec = std::move(spec)] { return open_on_engine(spec); });
  }

  // The open volume `volume_id`. Engine thread. Errors: kUnavailable.
  Result<io::VolumeIo*> open_volume(int64_t volume_id) {
    auto it = volumes.find(volume_id);
    if (it == volumes.end() || !it->second.io)
      return make_error(Errc::kUnavailable, "the volume is not open for I/O");
    return it->second.io.get();
  }

  OpenSpec spec_of(const VolumeInfo& v) {
    OpenSpec s;
    s.info = v;
    s.extent_size_bytes = vm.find_pool(v.pool_id)->extent_size_bytes;
    for (const auto& seg : v.segments)
      for (const auto& a : seg.areas)
        if (const auto* pv = vm.find_pv(a.pv_id)) {
          bool have = false;
          for (const auto& p : s.pvs) have = have || p.id == pv->id;
          if (!have) s.pvs.push_back(*pv);
        }
    return s;
  }
};

Result<std::unique_ptr<EngineService>> EngineService::start(volmgr::VolumeManager& vm,
                                                            boost::asio::any_io_executor meta,
                                                            std::string state_dir,
                                                            uint64_t resync_rate_bytes_per_s) {
  auto impl = std::make_unique<Impl>(vm, std::move(meta), state_dir + "/bitmaps");
  impl->resync_rate_bytes_per_s = resync_rate_bytes_per_s;
  std::error_code ec;
  std::filesystem::create_directories(impl->bitmap_dir, ec);
  if (ec)
    return make_error(Errc::kIo,
                      fmt::format("cannot create {}: {}", impl->bitmap_dir, ec.message()));
  // The ring belongs to the thread that creates it: create it on the engine thread.
  std::promise<Status> ready;
  auto ready_future = ready.get_future();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw, &ready] {
    auto loop = io::Loop::create(1024);
    if (!loop) {
      ready.set_value(loop.error());
      return;
    }
    raw->loop = std::move(*loop);
    {
      std::lock_guard lock(raw->loop_ref->mu);
      raw->loop_ref->loop = raw->loop.get();
    }
    ready.set_value(Status{});
    raw->loop->run();
    {
      std::lock_guard lock(raw->loop_ref->mu);
      raw->loop_ref->loop = nullptr;
    }
    if (raw->exporter) {
      // stop_export() was not called (start-up failed later): close what is left.
      bool done = false;
      raw->exporter->shutdown([&done] { done = true; });
      raw->loop->run_until([&done] { return done; });
      raw->exporter.reset();
    }
    // Shutdown: let background work stop at a region boundary, then close everything.
    for (auto& [id, v] : raw->volumes)
      if (v.io) v.io->cancel_background();
    raw->loop->run_until([raw] {
      for (auto& [id, v] : raw->volumes)
        if (v.io && v.io->in_flight() > 0) return false;
      return true;
    });
    raw->volumes.clear();
    raw->devices.clear();
  });
  Status st = ready_future.get();
  if (!st) {
    impl->thread.join();
    return st.error();
  }
  // Open every volume.
  for (const VolumeInfo* v : vm.volumes()) {
    if (Status opened = impl->open(impl->spec_of(*v)); !opened)
      log::error("volume={} not opened for I/O: {}", v->name, opened.error().message);
  }
  auto counted = impl->call<size_t>([raw]() -> Result<size_t> {
    size_t n = 0;
    for (const auto& [id, v] : raw->volumes) n += v.io != nullptr;
    return n;
  });
  const size_t open = counted ? *counted : 0;
  log::info("I/O engine running: {} of {} volume(s) open", open, vm.volumes().size());
  return std::unique_ptr<EngineService>(new EngineService(std::move(impl)));
}

EngineService::EngineService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EngineService::~EngineService() {
  stop_export();
  impl_->loop->stop();
  impl_->thread.join();
}

Status EngineService::open(const VolumeInfo& v) { return impl_->open(impl_->spec_of(v)); }

Status EngineService::legs_changed(const VolumeInfo& v, bool leg_added) {
  OpenSpec spec = impl_->spec_of(v);
  spec.mark_all_regions = leg_added;
  return impl_->open(std::move(spec));
}

Status EngineService::resized(const VolumeInfo& v) {
  OpenSpec spec = impl_->spec_of(v);
  Impl* raw = impl_.get();
  return impl_->run([raw, spec]() -> Status {
    auto vol = raw->open_volume(spec.info.id);
    if (!vol) return raw->open_on_engine(spec);
    std::map<int64_t, const volmgr::PvInfo*> by_id;
    for (const auto& pv : spec.pvs) by_id[pv.id] = &pv;
    RSIO_TRY_STATUS((*vol)->update(spec.info, spec.pvs, [&](int64_t id) -> io::Device* {
      auto p = by_id.find(id);
      return p == by_id.end() ? nullptr : raw->device(*p->second);
    }));
    if (raw->exporter) raw->exporter->volume_resized(spec.info.id, (*vol)->size_bytes());
    return {};
  });
}

Status EngineService::close(int64_t volume_id) {
  Impl* raw = impl_.get();
  return impl_->run([raw, volume_id]() -> Status {
    auto it = raw->volumes.find(volume_id);
    if (it == raw->volumes.end()) return {};
    if (it->second.io && it->second.io->in_flight() > 0)
      return make_error(Errc::kInUse,
                        "the volume has a resync or scrub running; wait for it to "
                        "finish (smgr -qv shows progress)");
    raw->volumes.erase(it);
    return {};
  });
}

Status EngineService::forget(const VolumeInfo& v) {
  Impl* raw = impl_.get();
  const int64_t id = v.id;
  RSIO_TRY_STATUS(impl_->run([raw, id]() -> Status {
    if (raw->exporter) raw->exporter->volume_closed(id);
    return {};
  }));
  RSIO_TRY_STATUS(close(v.id));
  // The bitmap belongs to the volume: nothing else may inherit its marks.
  const std::string path = impl_->bitmap_dir + "/" + v.uuid.str() + ".wib";
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    log::warn("cannot remove bitmap {}: {}", path, std::strerror(errno));
  return {};
}

void EngineService::device_removed(int64_t pv_id) {
  Impl* raw = impl_.get();
  Status st = impl_->run([raw, pv_id]() -> Status {
    raw->devices.erase(pv_id);
    return {};
  });
  if (!st) log::warn("pv_id={}: the I/O engine kept its handle: {}", pv_id, st.error().message);
}

Status EngineService::start_scrub(int64_t volume_id) {
  Impl* raw = impl_.get();
  return impl_->run([raw, volume_id]() -> Status {
    RSIO_TRY(io::VolumeIo * vol, raw->open_volume(volume_id));
    return vol->start_scrub();
  });
}

Status EngineService::restore_leg(int64_t volume_id, uint32_t leg) {
  Impl* raw = impl_.get();
  RSIO_TRY_STATUS(impl_->run([raw, volume_id, leg]() -> Status {
    RSIO_TRY(io::VolumeIo * vol, raw->open_volume(volume_id));
    return vol->restore_leg(leg);
  }));
  // Persist at once: a restart resumes the resync.
  return impl_->vm.set_leg_state(volume_id, leg, LegState::kResyncing, "restored by the admin");
}

bool EngineService::busy(int64_t volume_id) {
  Impl* raw = impl_.get();
  auto r = impl_->call<bool>([raw, volume_id]() -> Result<bool> {
    auto it = raw->volumes.find(volume_id);
    return it != raw->volumes.end() && it->second.io && it->second.io->in_flight() > 0;
  });
  return !r || *r;
}

VolumeIoStatus EngineService::status(int64_t volume_id) {
  Impl* raw = impl_.get();
  auto r = impl_->call<VolumeIoStatus>([raw, volume_id]() -> Result<VolumeIoStatus> {
    VolumeIoStatus s;
    auto it = raw->volumes.find(volume_id);
    if (it == raw->volumes.end()) {
      s.reason = "not opened";
      return s;
    }
    if (!it->second.io) {
      s.reason = it->second.reason;
      return s;
    }
    s.open = true;
    s.legs = it->second.io->leg_states();
    s.resync = it->second.io->resync_progress();
    s.scrub = it->second.io->scrub_progress();
    s.marked_regions = it->second.io->marked_regions();
    return s;
  });
  if (!r) {
    VolumeIoStatus s;
    s.reason = r.error().message;
    return s;
  }
  return *r;
}

Status EngineService::start_export(const Catalog& catalog, server::ServerOptions options) {
  impl_->catalog = &catalog;
  Impl* raw = impl_.get();
  return impl_->run([raw, options = std::move(options)]() -> Status {
    RSIO_TRY(auto srv, server::ExportServer::start(*raw->loop, *raw, options));
    raw->exporter = std::move(srv);
    return {};
  });
}

std::vector<server::ListenAddress> EngineService::export_addresses() {
  Impl* raw = impl_.get();
  auto r = impl_->call<std::vector<server::ListenAddress>>(
      [raw]() -> Result<std::vector<server::ListenAddress>> {
        if (!raw->exporter) return std::vector<server::ListenAddress>{};
        return raw->exporter->addresses();
      });
  return r ? *r : std::vector<server::ListenAddress>{};
}

std::vector<server::SessionInfo> EngineService::sessions() {
  Impl* raw = impl_.get();
  auto r = impl_->call<std::vector<server::SessionInfo>>(
      [raw]() -> Result<std::vector<server::SessionInfo>> {
        if (!raw->exporter) return std::vector<server::SessionInfo>{};
        return raw->exporter->sessions();
      });
  return r ? *r : std::vector<server::SessionInfo>{};
}

void EngineService::grant_changed(int64_t volume_id, int64_t client_id, bool revoked,
                                  bool read_only) {
  Impl* raw = impl_.get();
  (void)impl_->run([=]() -> Status {
    if (raw->exporter) raw->exporter->grant_changed(volume_id, client_id, revoked, read_only);
    return {};
  });
}

void EngineService::set_poll_us(uint32_t us) {
  Impl* raw = impl_.get();
  impl_->loop->post([raw, us] { raw->loop->set_poll_ns(uint64_t{us} * 1000); });
}

void EngineService::stop_export() {
  Impl* raw = impl_.get();
  auto promise = std::make_shared<std::promise<void>>();
  auto done = promise->get_future();
  impl_->loop->post([raw, promise] {
    if (!raw->exporter) return promise->set_value();
    raw->exporter->shutdown([raw, promise] {
      // Destroyed after the current callback has returned.
      raw->loop->defer([raw, promise] {
        raw->exporter.reset();
        promise->set_value();
      });
    });
  });
  if (done.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
    log::warn("the RSIO export service did not stop in time");
}

}  // namespace rsio::appliance
