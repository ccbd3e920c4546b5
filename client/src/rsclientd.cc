// rsclientd: the RSIO client daemon. It holds the node's identity and servers
// (/etc/rsio/rsclient.json), one RSIO session per server (client library), and the attached
// volumes as block devices /dev/av<N>/<volume>; rsconfig drives it through a root-only
// HTTP/JSON API on a Unix socket.
//
// Thread model: the main thread runs the API's sockets (Asio); every API request runs on the
// worker thread, which owns the configuration, the sessions and the attached devices (it may
// block: connecting, opening, binding loop devices). The FUSE frontend and the client library
// run their own threads; a resize notification from the library is posted to the worker.
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/units.h"
#include "fuse_frontend.h"
#include "mgmt/server.h"
#include "rsclient/config.h"
#include "rsio/client.h"
#include "ublk_frontend.h"

// Like RSIO_TRY, in an API handler: a failure becomes the error response.
#define RSIO_TRY_OR(decl, expr) RSIO_TRY_OR_IMPL(RSIO_CONCAT(rsio_try_or_, __LINE__), decl, expr)
#define RSIO_TRY_OR_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                      \
  if (!tmp) return fail(tmp.error());     \
  auto decl = std::move(*tmp)

namespace rsio::rsclient {
namespace {

namespace asio = boost::asio;
using mgmt::ApiRequest;
using mgmt::ApiResponse;
using nlohmann::json;
using wire::Opcode;
using wire::StatusCode;

struct Options {
  std::string config = "/etc/rsio/rsclient.json";
  std::string socket = "/run/rsio/rsclientd.sock";
  std::string dev_dir = "/dev";
  std::string run_dir = "/run/rsio/client";
  std::string state = "/var/lib/rsio/client/attached.json";
  std::string frontend = "auto";
  std::string log_level = "info";
  std::string replay_limit = "256m";
  uint64_t replay_limit_bytes = 256ULL << 20;  // parsed from replay_limit
};

// A volume of an RSIO session as a synchronous block device for the frontend. Requests
// larger than the protocol's limit are split; the pieces run in parallel.
class RsioBackend final : public BlockBackend {
 public:
  RsioBackend(client::Client& c, client::VolumeInfo v) : c_(c), v_(std::move(v)) {}
  uint64_t size_bytes() const override { return c_.volume_size(v_.id); }
  uint32_t block_size_bytes() const override { return v_.block_size; }
  bool read_only() const override { return v_.read_only(); }
  int read(void* buf, uint64_t len, uint64_t off) override {
    return run(Opcode::kRead, buf, len, off);
  }
  int write(const void* buf, uint64_t len, uint64_t off) override {
    return run(Opcode::kWrite, const_cast<void*>(buf), len, off);
  }
  int flush() override { return run(Opcode::kFlush, nullptr, 0, 0); }
  int discard(uint64_t len, uint64_t off) override {
    return run(Opcode::kDiscard, nullptr, len, off);
  }
  uint32_t id() const { return v_.id; }
  client::Client& client() override { return c_; }
  uint32_t volume_id() const override { return v_.id; }

 private:
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    size_t left = 0;
    int error = 0;
  };
  int run(Opcode op, void* buf, uint64_t len, uint64_t off) {
    // Discard and unaligned edges: the protocol takes multiples of the block size only.
    if (op != Opcode::kFlush && ((off | len) % v_.block_size) != 0) return -EINVAL;
    std::vector<client::Io> ios;
    uint64_t done = 0;
    do {
      client::Io io;
      io.op = op;
      io.volume = v_.id;
      io.offset = op == Opcode::kFlush ? 0 : off + done;
      io.length = static_cast<uint32_t>(std::min<uint64_t>(len - done, wire::kMaxIo));
      io.buf = buf != nullptr ? static_cast<uint8_t*>(buf) + done : nullptr;
      done += io.length;
      ios.push_back(io);
    } while (done < len);
    Wait w;
    w.left = ios.size();
    for (auto& io : ios) {
      io.user = &w;
      io.done = [](client::Io* i, StatusCode s) {
        auto* wt = static_cast<Wait*>(i->user);
        std::lock_guard lock(wt->mu);
        if (s != StatusCode::kOk && wt->error == 0) wt->error = -wire::status_errno(s);
        if (--wt->left == 0) wt->cv.notify_one();
      };
    }
    std::vector<client::Io*> ptrs;
    for (auto& io : ios) ptrs.push_back(&io);
    c_.submit(ptrs.data(), ptrs.size());
    std::unique_lock lock(w.mu);
    w.cv.wait(lock, [&] { return w.left == 0; });
    return w.error;
  }

  client::Client& c_;
  client::VolumeInfo v_;
};

struct Attached {
  std::string volume, server;
  int ns = 0;
  std::shared_ptr<RsioBackend> backend;
  std::string loop_dev, block_path;
  bool read_only = false;
  // The server instance the volume's unflushed writes were acknowledged by: a device that
  // outlives this process (ublk recovery) loses the writes the library kept for it, so the
  // next start must know whether that instance still holds them (OpenOptions::unflushed_in).
  wire::InstanceId instance{};
};

class Daemon {
 public:
  Daemon(Options o, asio::any_io_executor worker) : opt_(std::move(o)), worker_(worker) {}

  Status start() {
    RSIO_TRY(cfg_, load_config(opt_.config));
    RSIO_TRY_STATUS(validate_config(cfg_));
    // ublk where the kernel has it; FUSE + loop devices otherwise (or when asked).
    if (opt_.frontend != "fuse") {
      auto u = UblkFrontend::start();
      if (u) {
        fuse_ = std::move(*u);
      } else if (opt_.frontend == "ublk") {
        return u.error();
      } else {
        log::info("{}; serving volumes through FUSE + loop devices instead", u.error().message);
      }
    }
    if (!fuse_) {
      RSIO_TRY(auto f, FuseFrontend::start(opt_.run_dir + "/fuse"));
      fuse_ = std::move(f);
    }
    reattach();
    return {};
  }

  void stop() {
    // Nothing is detached unless asked: ublk devices stay (their requests wait in the kernel
    // until the next start takes them over); FUSE devices cannot outlive the daemon and are
    // detached. The state file lists them all, so the next start attaches them again.
    save_state();
    std::vector<std::string> kept = fuse_ ? fuse_->release_all() : std::vector<std::string>{};
    for (auto& [name, a] : attached_)
      if (std::find(kept.begin(), kept.end(), name) == kept.end()) remove_node(a);
    if (!kept.empty())
      log::info("left {} device(s) for the next start: {}", kept.size(), fmt::join(kept, ", "));
    attached_.clear();
    fuse_.reset();
    sessions_.clear();
  }

  ApiResponse handle(const ApiRequest& req) {
    try {
      return route(req);
    } catch (const std::exception& e) {
      return mgmt::api_error_response(make_error(Errc::kInternal, e.what()));
    }
  }

  // Worker thread: a volume's unflushed writes are now kept for another server instance.
  void moved(const std::string& server, uint32_t volume, const wire::InstanceId& instance) {
    for (auto& [name, a] : attached_)
      if (a.server == server && a.backend->id() == volume && a.instance != instance) {
        a.instance = instance;
        save_state();
      }
  }

  // Worker thread: a volume changed size on the server.
  void resized(const std::string& server, uint32_t volume) {
    for (auto& [name, a] : attached_)
      if (a.server == server && a.backend->id() == volume) {
        if (Status st = fuse_->resized(name); !st)
          log::warn("{}: new size not applied: {}", name, st.error().message);
        else
          log::info("{}: resized to {} bytes", name, a.backend->size_bytes());
      }
  }

 private:
  static ApiResponse ok(int status, const json& j) { return ApiResponse{status, j.dump()}; }
  static ApiResponse fail(const Error& e) { return mgmt::api_error_response(e); }

  static bool flag(const mgmt::ApiRoute& r, const char* key) {
    auto it = r.query.find(key);
    return it != r.query.end() && it->second == "true";
  }

  ApiResponse route(const ApiRequest& req) {
    const mgmt::ApiRoute r = mgmt::parse_api_target(req.target);
    const auto& p = r.parts;
    const std::string& m = req.method;
    if (!r.versioned)
      return fail(make_error(Errc::kNotFound, "unknown resource; the API is under /1.0"));
    if (p.empty()) {
      return ok(200, json{{"product", "rsclientd"},
                          {"node", cfg_.node_name},
                          {"frontend", fuse_ ? fuse_->kind() : "none"},
                          {"config", opt_.config}});
    }
    if (p[0] == "config" && m == "GET") return ok(200, config_json(flag(r, "keys")));
    if (p[0] == "node" && m == "PUT") {
      RSIO_TRY_OR(body, mgmt::parse_body(req.body, {"name", "key"}));
      RSIO_TRY_OR(name, mgmt::get_string(body, "name", false));
      RSIO_TRY_OR(key, mgmt::get_string(body, "key", false));
      Config c = cfg_;
      if (body.contains("name")) c.node_name = name;
      if (body.contains("key")) c.node_key = key;
      return commit(std::move(c), {});
    }
    if (p[0] == "servers") return servers(req, p);
    if (p[0] == "volumes" && m == "GET") return ok(200, volumes_json());
    if (p[0] == "devices") return devices(req, r);
    return fail(make_error(Errc::kNotFound, "unknown resource"));
  }

  json config_json(bool keys) const {
    json servers = json::array();
    for (const auto& s : cfg_.servers)
      servers.push_back({{"name", s.name},
                         {"namespace", s.namespace_index},
                         {"namespace_name", s.namespace_name},
                         {"paths", s.paths}});
    json j{{"node", cfg_.node_name}, {"servers", servers}, {"has_key", !cfg_.node_key.empty()}};
    if (keys) j["key"] = cfg_.node_key;
    return j;
  }

  // Validates, saves and applies a new configuration; sessions of changed servers end.
  ApiResponse commit(Config c, const std::string& changed_server) {
    if (Status st = validate_config(c); !st) return fail(st.error());
    const bool identity_changed = c.node_name != cfg_.node_name || c.node_key != cfg_.node_key;
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      const bool affected = identity_changed || it->first == changed_server;
      if (affected && !server_in_use(it->first))
        it = sessions_.erase(it);
      else
        ++it;
    }
    if (Status st = save_config(opt_.config, c); !st) return fail(st.error());
    cfg_ = std::move(c);
    return ok(200, config_json(false));
  }

  bool server_in_use(const std::string& server) const {
    for (const auto& [n, a] : attached_)
      if (a.server == server) return true;
    return false;
  }

  ApiResponse servers(const ApiRequest& req, const std::vector<std::string>& p) {
    const std::string& m = req.method;
    if (p.size() == 1 && m == "POST") {
      RSIO_TRY_OR(body, mgmt::parse_body(req.body, {"name", "namespace", "paths"}));
      ServerConfig s;
      RSIO_TRY_OR(name, mgmt::get_string(body, "name", true));
      RSIO_TRY_OR(ns, mgmt::get_u64(body, "namespace", false));
      RSIO_TRY_OR(paths, mgmt::get_strings(body, "paths"));
      if (ns.value_or(0) > 999)
        return fail(make_error(Errc::kInvalidArgument, "namespace index must be 0..999"));
      s.name = std::move(name);
      s.namespace_index = static_cast<int>(ns.value_or(0));
      s.paths = std::move(paths);
      if (cfg_.find_server(s.name) != nullptr)
        return fail(make_error(Errc::kAlreadyExists, fmt::format("server {} exists", s.name)));
      if (s.paths.empty())
        return fail(make_error(Errc::kInvalidArgument, "give the server at least one address"));
      Config c = cfg_;
      c.servers.push_back(s);
      return commit(std::move(c), s.name);
    }
    if (p.size() < 2) return fail(make_error(Errc::kNotFound, "unknown resource"));
    Config c = cfg_;
    ServerConfig* s = nullptr;
    for (auto& x : c.servers)
      if (x.name == p[1]) s = &x;
    if (s == nullptr) return fail(make_error(Errc::kNotFound, fmt::format("no server {}", p[1])));
    if (p.size() == 2 && m == "DELETE") {
      if (server_in_use(p[1]))
        return fail(make_error(Errc::kInUse, fmt::format("volumes of {} are attached; detach "
                                                         "them first (rsconfig -d)",
                                                         p[1])));
      const std::string name = p[1];
      c.servers.erase(std::remove_if(c.servers.begin(), c.servers.end(),
                                     [&](const ServerConfig& x) { return x.name == name; }),
                      c.servers.end());
      sessions_.erase(name);
      return commit(std::move(c), name);
    }
    if (p.size() == 3 && p[2] == "paths" && m == "POST") {
      RSIO_TRY_OR(body, mgmt::parse_body(req.body, {"path"}));
      RSIO_TRY_OR(path, mgmt::get_string(body, "path", true));
      if (std::find(s->paths.begin(), s->paths.end(), path) != s->paths.end())
        return fail(make_error(Errc::kAlreadyExists, fmt::format("{} has {} already", p[1], path)));
      s->paths.push_back(path);
      return commit(std::move(c), p[1]);
    }
    if (p.size() == 4 && p[2] == "paths" && m == "DELETE") {
      auto it = std::find(s->paths.begin(), s->paths.end(), p[3]);
      if (it == s->paths.end())
        return fail(make_error(Errc::kNotFound, fmt::format("{} has no address {}", p[1], p[3])));
      if (s->paths.size() == 1)
        return fail(make_error(Errc::kInvalidArgument,
                               "a server keeps at least one address; remove the server instead"));
      s->paths.erase(it);
      return commit(std::move(c), p[1]);
    }
    return fail(make_error(Errc::kNotFound, "unknown resource"));
  }

  // The session with `server`, connected on first use.
  Result<client::Client*> session(const ServerConfig& s) {
    if (auto it = sessions_.find(s.name); it != sessions_.end()) return it->second.get();
    if (cfg_.node_name.empty() || cfg_.node_key.empty())
      return make_error(Errc::kInvalidArgument,
                        "this node has no name or key yet: rsconfig --set-node NAME --key KEY");
    client::ClientOptions o;
    o.node_name = cfg_.node_name;
    o.node_key = cfg_.node_key;
    o.replay_limit_bytes = opt_.replay_limit_bytes;
    for (const auto& path : s.paths) {
      RSIO_TRY(auto parsed, client::parse_path(path));
      o.paths.push_back(parsed);
    }
    const std::string server = s.name;
    auto exec = worker_;
    o.on_resized = [this, server, exec](uint32_t volume, uint64_t) {
      asio::post(exec, [this, server, volume] { resized(server, volume); });
    };
    o.on_instance = [this, server, exec](uint32_t volume, const wire::InstanceId& instance) {
      asio::post(exec, [this, server, volume, instance] { moved(server, volume, instance); });
    };
    auto c = client::Client::connect(o);
    if (!c)
      return make_error(c.error().code, fmt::format("server {}: {}", s.name, c.error().message));
    return sessions_.emplace(s.name, std::move(*c)).first->second.get();
  }

  std::string block_path(int ns, const std::string& volume) const {
    return fmt::format("{}/av{}/{}", opt_.dev_dir, ns, volume);
  }

  json volumes_json() {
    json namespaces = json::object();
    for (const auto& s : cfg_.servers) {
      json& ns = namespaces[std::to_string(s.namespace_index)];
      if (ns.is_null())
        ns = json{
            {"index", s.namespace_index}, {"name", s.namespace_name}, {"servers", json::array()}};
      json srv{{"name", s.name}, {"paths", s.paths}, {"volumes", json::array()}};
      auto c = session(s);
      if (!c) {
        srv["error"] = c.error().message;
      } else if (auto vols = (*c)->list(); !vols) {
        srv["error"] = vols.error().message;
      } else {
        for (const auto& v : *vols)
          srv["volumes"].push_back({{"name", v.name},
                                    {"size_bytes", v.size_bytes},
                                    {"block_size", v.block_size},
                                    {"blocks", v.block_size ? v.size_bytes / v.block_size : 0},
                                    {"read_only", v.read_only},
                                    {"attached", attached_.count(v.name) > 0},
                                    {"block_device", block_path(s.namespace_index, v.name)},
                                    {"raw_device", fmt::format("{}/av{}/r{}", opt_.dev_dir,
                                                               s.namespace_index, v.name)}});
      }
      ns["servers"].push_back(srv);
    }
    json list = json::array();
    for (auto& [k, v] : namespaces.items()) list.push_back(v);
    return json{{"node", cfg_.node_name}, {"mode", "simple rsio client"}, {"namespaces", list}};
  }

  json device_json(const Attached& a) const {
    const uint64_t size = a.backend->size_bytes();
    return json{{"volume", a.volume},
                {"server", a.server},
                {"namespace_index", a.ns},
                {"size_bytes", size},
                {"block_size", a.backend->block_size_bytes()},
                {"blocks", size / a.backend->block_size_bytes()},
                {"read_only", a.read_only},
                {"servers", 1},
                {"frontend", fuse_->kind()},
                // ublk in Linux 6.12 has no way to change a live device's size.
                {"follows_resize", fuse_->kind() != "ublk"},
                {"loop_device", a.loop_dev},
                {"block_device", a.block_path},
                {"raw_device", nullptr}};
  }

  ApiResponse devices(const ApiRequest& req, const mgmt::ApiRoute& r) {
    const auto& p = r.parts;
    const std::string& m = req.method;
    if (p.size() == 1 && m == "GET") {
      json list = json::array();
      for (const auto& [n, a] : attached_) list.push_back(device_json(a));
      return ok(200, json{{"devices", list}});
    }
    if (p.size() == 1 && m == "POST") {
      RSIO_TRY_OR(body, mgmt::parse_body(req.body, {"volume", "server", "read_only"}));
      RSIO_TRY_OR(volume, mgmt::get_string(body, "volume", true));
      RSIO_TRY_OR(server, mgmt::get_string(body, "server", false));
      RSIO_TRY_OR(read_only, mgmt::get_bool(body, "read_only"));
      auto a = attach(volume, server, read_only);
      if (!a) return fail(a.error());
      save_state();
      return ok(201, device_json(attached_.at(*a)));
    }
    if (p.size() == 2 && m == "DELETE") {
      const bool force = flag(r, "force");
      if (Status st = detach(p[1], force); !st) return fail(st.error());
      save_state();
      return ok(200, json{{"detached", p[1]}});
    }
    return fail(make_error(Errc::kNotFound, "unknown resource"));
  }

  // Attaches `volume` from `server` (empty: the first server that grants it).
  // `resume`: the frontend's handle of a device that survived the last run; `unflushed_in`:
  // the instance that acknowledged its writes then.
  Result<std::string> attach(const std::string& volume, const std::string& server, bool ro,
                             const std::string& resume = "",
                             std::optional<wire::InstanceId> unflushed_in = std::nullopt) {
    if (volume.empty()) return make_error(Errc::kInvalidArgument, "name the volume to attach");
    if (attached_.count(volume) > 0)
      return make_error(Errc::kAlreadyExists, fmt::format("{} is attached already as {}", volume,
                                                          attached_.at(volume).block_path));
    const ServerConfig* chosen = nullptr;
    std::string why;
    for (const auto& s : cfg_.servers) {
      if (!server.empty() && s.name != server) continue;
      auto c = session(s);
      if (!c) {
        why += (why.empty() ? "" : "; ") + c.error().message;
        continue;
      }
      auto vols = (*c)->list();
      if (!vols) continue;
      for (const auto& v : *vols)
        if (v.name == volume) chosen = &s;
      if (chosen != nullptr) break;
    }
    if (chosen == nullptr) {
      if (cfg_.servers.empty())
        return make_error(Errc::kInvalidArgument,
                          "no server configured: rsconfig --add-server NAME --address HOST:PORT");
      return make_error(
          Errc::kNotFound,
          fmt::format("volume {} is not granted to node {} on {}{}{}", volume, cfg_.node_name,
                      server.empty() ? "any server" : server, why.empty() ? "" : ": ", why));
    }
    RSIO_TRY(client::Client * c, session(*chosen));
    client::OpenOptions oo;
    oo.read_only = ro;
    oo.unflushed_in = unflushed_in;
    RSIO_TRY(auto info, c->open(volume, oo));
    Attached a;
    a.instance = info.instance;
    a.volume = volume;
    a.server = chosen->name;
    a.ns = chosen->namespace_index;
    a.read_only = info.read_only();
    a.backend = std::make_shared<RsioBackend>(*c, info);
    auto dev = fuse_->attach(volume, a.backend, resume);
    if (!dev) {
      (void)c->close_volume(info.id);
      return dev.error();
    }
    a.loop_dev = *dev;
    a.block_path = block_path(a.ns, volume);
    if (Status st = make_node(a); !st) {
      (void)fuse_->detach(volume, true);
      (void)c->close_volume(info.id);
      return st.error();
    }
    log::info("attached {} from {} as {} ({}, {})", volume, chosen->name, a.block_path, a.loop_dev,
              a.read_only ? "read-only" : "read-write");
    attached_[volume] = std::move(a);
    return volume;
  }

  Status make_node(const Attached& a) {
    RSIO_TRY(dev_t rdev, fuse_->device_number(a.volume));
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(a.block_path).parent_path(), ec);
    if (ec)
      return make_error(Errc::kIo, fmt::format("mkdir for {}: {}", a.block_path, ec.message()));
    ::unlink(a.block_path.c_str());
    if (::mknod(a.block_path.c_str(), S_IFBLK | 0600, rdev) != 0)
      return errno_error(fmt::format("mknod {}", a.block_path), errno);
    return {};
  }

  void remove_node(const Attached& a) { ::unlink(a.block_path.c_str()); }

  Status detach(const std::string& volume, bool force) {
    auto it = attached_.find(volume);
    if (it == attached_.end())
      return make_error(Errc::kNotFound, fmt::format("{} is not attached", volume));
    RSIO_TRY_STATUS(fuse_->detach(volume, force));
    remove_node(it->second);
    if (auto s = sessions_.find(it->second.server); s != sessions_.end())
      (void)s->second->close_volume(it->second.backend->id());
    log::info("detached {}", volume);
    attached_.erase(it);
    return {};
  }

  void save_state() {
    json list = json::array();
    for (const auto& [n, a] : attached_)
      list.push_back({{"volume", a.volume},
                      {"server", a.server},
                      {"read_only", a.read_only},
                      {"frontend", fuse_->kind()},
                      // ublk in Linux 6.12 has no way to change a live device's size.
                      {"follows_resize", fuse_->kind() != "ublk"},
                      {"handle", fuse_->handle(n)},
                      {"server_instance", wire::instance_hex(a.instance)}});
    // Written whole to a new file and renamed over the old one: a crash leaves either list,
    // never half of one (the next start attaches again what the list names).
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(opt_.state).parent_path(), ec);
    const std::string tmp = opt_.state + ".new";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << json{{"attached", list}}.dump(2) << "\n";
      out.flush();
      if (!out) {
        log::error("cannot write {}: the list of attached volumes is not saved", tmp);
        return;
      }
    }
    if (int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
    if (::rename(tmp.c_str(), opt_.state.c_str()) != 0)
      log::error("cannot replace {}: {}", opt_.state, std::strerror(errno));
  }

  // Attaches again what was attached when the daemon last stopped.
  void reattach() {
    std::ifstream in(opt_.state);
    if (!in) return;
    std::stringstream ss;
    ss << in.rdbuf();
    json j = json::parse(ss.str(), nullptr, false);
    if (j.is_discarded()) return;
    for (const auto& a : j.value("attached", json::array())) {
      const std::string vol = a.value("volume", std::string());
      const std::string resume = a.value("frontend", std::string()) == fuse_->kind()
                                     ? a.value("handle", std::string())
                                     : std::string();
      // A device that lived on may hold writes acknowledged by the instance saved with it
      // (unknown for a list written before instances were saved: assume the worst).
      std::optional<wire::InstanceId> unflushed_in;
      if (!resume.empty())
        unflushed_in = wire::parse_instance_hex(a.value("server_instance", std::string()))
                           .value_or(wire::InstanceId{});
      auto r = attach(vol, a.value("server", std::string()), a.value("read_only", false), resume,
                      unflushed_in);
      if (r)
        log::info("re-attached {}", vol);
      else
        log::warn("could not re-attach {}: {}", vol, r.error().message);
    }
  }

  Options opt_;
  asio::any_io_executor worker_;
  Config cfg_;
  std::unique_ptr<Frontend> fuse_;  // the frontend: ublk or FUSE
  std::map<std::string, std::unique_ptr<client::Client>> sessions_;
  std::map<std::string, Attached> attached_;
};

int run(const Options& opt) {
  log::set_min_level(opt.log_level);  // validated by the option parser
  ::signal(SIGPIPE, SIG_IGN);
  asio::io_context worker_io(1);
  auto worker_guard = asio::make_work_guard(worker_io);
  std::thread worker([&] { worker_io.run(); });
  Daemon d(opt, worker_io.get_executor());
  // Start-up runs on the worker thread, which owns the daemon's state from now on.
  std::promise<Status> started;
  asio::post(worker_io, [&] { started.set_value(d.start()); });
  if (Status st = started.get_future().get(); !st) {
    log::error("cannot start: {}", st.error().message);
    worker_guard.reset();
    worker.join();
    return 1;
  }
  asio::io_context io(1);
  {
    std::error_code ec;
    const auto parent = std::filesystem::path(opt.socket).parent_path();
    if (!parent.empty() && !std::filesystem::exists(parent)) {
      std::filesystem::create_directories(parent, ec);
      if (!ec)
        std::filesystem::permissions(parent, std::filesystem::perms(0755),
                                     std::filesystem::perm_options::replace, ec);
    }
  }
  auto server = mgmt::ApiServer::listen(
      io, worker_io.get_executor(), [&d](const ApiRequest& r) { return d.handle(r); }, opt.socket,
      "rsclientd");
  if (!server) {
    log::error("cannot start: {}", server.error().message);
    asio::post(worker_io, [&] { d.stop(); });
    worker_guard.reset();
    worker.join();
    return 1;
  }
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log::info("signal {} received, shutting down", sig);
    sd_notify(0, "STOPPING=1");
    (*server)->stop();
  });
  (*server)->start();
  log::info("rsclientd ready: socket={} config={}", opt.socket, opt.config);
  sd_notify(0, "READY=1");
  io.run();
  std::promise<void> stopped;
  asio::post(worker_io, [&] {
    d.stop();
    stopped.set_value();
  });
  stopped.get_future().wait();
  worker_guard.reset();
  worker.join();
  log::info("rsclientd stopped");
  return 0;
}

}  // namespace
}  // namespace rsio::rsclient

int main(int argc, char** argv) {
  rsio::rsclient::Options opt;
  CLI::App app{
      "rsclientd - the RSIO client daemon.\n\n"
      "Connects this node to its RSIO servers and turns granted volumes into block devices\n"
      "/dev/av<N>/<volume>: ublk devices where the kernel has ublk_drv, FUSE + loop devices\n"
      "elsewhere. Driven by rsconfig over a root-only socket.\n",
      "rsclientd"};
  app.set_version_flag("--version", RSIO_VERSION);
  app.get_formatter()->column_width(34);
  app.add_option("--config", opt.config, "Node identity and servers (JSON, mode 0600)")
      ->type_name("FILE")
      ->envname("RSCLIENT_CONFIG")
      ->capture_default_str();
  app.add_option("--socket", opt.socket, "Management socket for rsconfig")
      ->type_name("PATH")
      ->envname("RSCLIENT_SOCKET")
      ->capture_default_str();
  app.add_option("--dev-dir", opt.dev_dir, "Where the av<N>/ device directories go")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--run-dir", opt.run_dir, "Runtime directory (the FUSE mount)")
      ->type_name("DIR")
      ->capture_default_str();
  app.add_option("--state", opt.state, "Attached volumes, attached again at start")
      ->type_name("FILE")
      ->capture_default_str();
  app.add_option("--frontend", opt.frontend, "auto, fuse or ublk")
      ->type_name("KIND")
      ->check(CLI::IsMember({"auto", "fuse", "ublk"}))
      ->capture_default_str();
  app.add_option("--replay-limit", opt.replay_limit,
                 "Unflushed writes kept per volume to replay to a restarted server (>= 4m)")
      ->type_name("SIZE")
      ->envname("RSCLIENT_REPLAY_LIMIT")
      ->capture_default_str();
  app.add_option("--log-level", opt.log_level, "debug, info, warning or error")
      ->type_name("LEVEL")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto limit = rsio::parse_size(opt.replay_limit);
  if (!limit || *limit < (4ULL << 20)) {
    std::fprintf(stderr, "rsclientd: --replay-limit %s: %s\n", opt.replay_limit.c_str(),
                 limit ? "must be at least 4m" : limit.error().message.c_str());
    return 2;
  }
  opt.replay_limit_bytes = *limit;
  try {
    return rsio::rsclient::run(opt);
  } catch (const std::exception& e) {
    rsio::log::error("fatal: {}", e.what());
    return 1;
  }
}
