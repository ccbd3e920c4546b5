// The RSIO client library (initiator): one session with an RSIO server over one or more TCP
// paths, with trunking, dead-path detection, fenced re-issue of in-flight requests, background
// reconnect and an I/O hold time that hides a server restart from the caller
// (docs/wire-protocol.md, docs/client-library.md).
//
// Thread model: the library runs its own I/O thread (Boost.Asio). submit() may be called from
// any thread; completions run on the library's thread and must not block. list(), open() and
// close_volume() block the calling thread until the server answered (never call them from a
// completion). With ClientOptions::caller_driven there is no I/O thread: one caller thread
// does everything and drives the library with poll().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "rsio/wire.h"

namespace rsio::client {

struct PathSpec {
  std::string host;  // server address (numeric or name)
  uint16_t port = wire::kDefaultPort;
  std::string bind;  // local address to connect from (empty: any)
};
// Parses "HOST:PORT", "HOST", "[V6]:PORT", optionally followed by "@LOCAL_ADDRESS".
Result<PathSpec> parse_path(std::string_view text);

enum class Policy { kLeastInFlight, kRoundRobin };

struct ClientOptions {
  std::string node_name;
  std::string node_key;
  std::string platform;  // shown by rsadmin -lvv; default: uname
  std::vector<PathSpec> paths;
  Policy policy = Policy::kLeastInFlight;
  uint32_t hold_ms = 30'000;  // how long I/O waits for a path before it fails
  uint32_t connect_timeout_ms = 5'000;
  uint32_t heartbeat_ms = 1'000;  // a path silent for 3 heartbeats is dead
  uint32_t reconnect_min_ms = 50, reconnect_max_ms = 2'000;  // backoff
  // No I/O thread: the thread that calls connect() drives the library itself by calling
  // poll(), and every other call must come from that thread too. Completions then run inside
  // poll() on the caller's thread, saving two thread switches per request (the fio engine).
  bool caller_driven = false;
  // Called on the library's thread when the server reports a new size of an open volume.
  std::function<void(uint32_t volume, uint64_t size_bytes)> on_resized;
  // Writes a server acknowledged are kept (copied) until a FLUSH completed by the same server
  // instance covers them, and sent again when the session moves to a new instance
  // (docs/client-library.md, "Durability"). This bounds the bytes kept per volume (data and
  // acknowledged plus unanswered writes): at the bound the library sends a FLUSH of its own
  // and holds further writes until it completed. At least 4 MiB.
  uint64_t replay_limit_bytes = 256ULL << 20;
  // Called on the library's thread when the writes of an open volume are from then on kept
  // for a new server instance (after open, and after a replay): a caller that can outlive
  // its own process (rsclientd with ublk recovery) records it for OpenOptions.
  std::function<void(uint32_t volume, const wire::InstanceId& instance)> on_instance;
};

struct OpenOptions {
  bool read_only = false;
  // Writes to this volume were acknowledged to an earlier user of it (a previous run of this
  // program, whose kept writes are gone) by server instance `unflushed_in`, and may not have
  // been flushed. If the session is with another instance those writes may be lost: the
  // first FLUSH of the volume then fails with IO_ERROR instead of claiming they are durable.
  std::optional<wire::InstanceId> unflushed_in;
};

struct VolumeInfo {
  uint32_t id = 0;  // the library's volume id: stays valid across sessions
  std::string name;
  uint64_t size_bytes = 0;
  uint32_t block_size = 512;
  uint32_t flags = 0;  // wire::kVol*
  wire::InstanceId instance{};  // the server instance that opened it (all zero: unknown)
  bool read_only() const { return (flags & wire::kVolReadOnly) != 0; }
};

// One asynchronous request. The caller owns it and `buf` until `done` ran.
struct Io {
  wire::Opcode op = wire::Opcode::kRead;
  bool fua = false;
  uint32_t volume = 0;  // VolumeInfo::id
  uint64_t offset = 0;
  uint32_t length = 0;
  void* buf = nullptr;  // READ: filled; WRITE: sent
  void (*done)(Io* io, wire::StatusCode status) = nullptr;
  void* user = nullptr;
  // Internal to the library.
  uint64_t tag = 0;
  int64_t deadline_ms = 0;
  uint32_t path = 0;
  uint32_t reissued = 0;
  uint64_t seq = 0;         // submission order
  uint64_t epoch = 0;       // the server instance it was last sent to (library's count)
  uint64_t flush_mark = 0;  // FLUSH: the writes it covers (ReplayLog::mark when sent)
  bool counted = false;     // write-class: counted against replay_limit_bytes
};

struct ClientStats {
  uint64_t submitted = 0, completed = 0, errors = 0, reissued = 0, fences = 0;
  uint64_t path_failures = 0, reconnects = 0, sessions = 0;
  uint32_t paths_ready = 0;
  uint64_t max_stall_ms = 0;  // longest time a request waited for a path
  // Durability across server instances (docs/client-library.md).
  uint64_t replays = 0;           // volumes whose kept writes were sent to a new instance
  uint64_t replayed_writes = 0;   // write-class requests sent again
  uint64_t replay_failures = 0;   // replays that could not complete (writes possibly lost)
  uint64_t lost_flushes = 0;      // FLUSHes failed with IO_ERROR because writes were lost
  uint64_t limit_flushes = 0;     // FLUSHes the library sent at replay_limit_bytes
  uint64_t retained_bytes = 0;    // writes kept now, all volumes
};

struct PathState {
  std::string endpoint;  // "local<->remote"
  bool ready = false;
  uint32_t in_flight = 0;
  uint64_t requests = 0;
  std::string last_error;
};

class Client {
 public:
  // Connects every path and authenticates. Returns once one path is ready; the others join
  // in the background. Errors: kPermissionDenied (wrong name or key: the server refused the
  // handshake), kUnavailable (no path could connect within the connect timeout),
  // kInvalidArgument (options).
  static Result<std::unique_ptr<Client>> connect(ClientOptions options);
  ~Client();

  // Volumes granted to this node. Errors: kUnavailable.
  Result<std::vector<wire::VolumeEntry>> list();
  // Opens a granted volume. Errors: kNotFound (no such volume or not granted),
  // kUnavailable, kPermissionDenied (read-write asked and the grant is read-only is NOT an
  // error: the volume opens read-only and says so in flags).
  Result<VolumeInfo> open(const std::string& name, bool read_only = false);
  Result<VolumeInfo> open(const std::string& name, const OpenOptions& options);
  Status close_volume(uint32_t volume);
  // The volume's current size (follows RESIZED notifications). Any thread; it does not wait
  // for the library's thread, so frontends may ask on every request.
  uint64_t volume_size(uint32_t volume) const;

  void submit(Io* io);
  void submit(Io* const* ios, size_t count);
  // Caller-driven mode: runs the library's pending work and waits up to `timeout_ms` (-1:
  // without limit) for more; returns the number of handlers run. Completions happen here.
  size_t poll(int timeout_ms);

  ClientStats stats() const;
  std::vector<PathState> paths() const;

  // Test hooks: drop one path's TCP connection as if the network failed.
  void break_path(size_t index);

  struct Impl;

 private:
  explicit Client(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace rsio::client
