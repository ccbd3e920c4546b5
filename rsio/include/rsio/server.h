// The RSIO export service: TCP listeners, authenticated sessions with several paths, and the
// data path from the socket straight into the volume I/O engine (docs/wire-protocol.md).
//
// Thread model: an ExportServer lives on one io::Loop thread (rsiod's engine thread) and
// drives its sockets through that loop's io_uring, next to the devices: a request goes from
// the socket to the volume's BlockTarget::submit() and its reply back to the socket without
// a thread switch.
// Every member runs on the loop thread. What the server needs from the appliance (node keys,
// grants, volume names) comes through ExportBackend, whose answers may arrive later.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "rsio/wire.h"
#include "block/loop.h"
#include "block/target.h"

namespace rsio::server {

struct NodeInfo {
  int64_t client_id = 0;
  std::string node_key;
};

struct OpenAnswer {
  wire::StatusCode status = wire::StatusCode::kOk;
  int64_t volume_id = 0;
  std::string volume_name;
  bool read_only = false;  // the grant (or the request) is read-only
};

// The appliance's side. Each call answers through its callback, on the loop thread, possibly
// after the call returned. The server tolerates answers for connections that are gone.
class ExportBackend {
 public:
  virtual ~ExportBackend() = default;
  // nullopt: no such node.
  virtual void lookup_node(const std::string& name,
                           std::function<void(std::optional<NodeInfo>)> done) = 0;
  // Volumes granted to the client.
  virtual void list_volumes(int64_t client_id,
                            std::function<void(std::vector<wire::VolumeEntry>)> done) = 0;
  // Checks the grant of `volume_name` to the client. NOT_FOUND when the volume does not exist
  // or is not granted; READ_ONLY is not an error: `read_only` tells the access.
  virtual void check_open(int64_t client_id, const std::string& volume_name, bool read_only,
                          std::function<void(OpenAnswer)> done) = 0;
  // The open volume as a block target, or null when it is not open in the engine (devices
  // missing). Synchronous.
  virtual block::BlockTarget* target(int64_t volume_id) = 0;
};

struct ListenAddress {
  std::string host;  // numeric IPv4 or IPv6 address
  uint16_t port = wire::kDefaultPort;
};
// Parses "ADDR:PORT", "[V6]:PORT", "ADDR" or ":PORT".
Result<ListenAddress> parse_listen_address(std::string_view text);

struct ServerOptions {
  std::vector<ListenAddress> listen;
  uint32_t handshake_deadline_ms = 10'000;
  uint32_t max_unauthenticated = 512;
  uint32_t session_linger_ms = 60'000;
  uint32_t heartbeat_ms = wire::kHeartbeatMs;
  uint32_t tcp_user_timeout_ms = 10'000;
  // This instance's identity, sent in every HELLO reply (docs/wire-protocol.md §5.5). All
  // zero: a random one is drawn at start. A caller sets it only when it can vouch that
  // everything an earlier holder of the same identity acknowledged is still there.
  wire::InstanceId instance{};
};

struct PathInfo {
  uint32_t path_id = 0;
  std::string local;   // "ADDR/PORT"
  std::string remote;  // "ADDR/PORT"
  bool connected = true;
  uint64_t requests = 0;
  uint32_t in_flight = 0;
};

struct HandleInfo {
  uint32_t handle = 0;
  int64_t volume_id = 0;
  std::string volume;
  bool read_only = false;
  bool revoked = false;
};

struct SessionInfo {
  uint64_t session_id = 0;
  int64_t client_id = 0;
  std::string node_name;
  std::string platform;
  std::vector<PathInfo> paths;
  std::vector<HandleInfo> handles;
};

struct ServerStats {
  uint64_t accepted = 0, auth_failures = 0, protocol_errors = 0, requests = 0, error_replies = 0,
           unauth_evicted = 0;
};

class ExportServer {
 public:
  // Binds every listen address. Errors: kInvalidArgument, kInUse (address in use), kIo.
  static Result<std::unique_ptr<ExportServer>> start(block::Loop& loop, ExportBackend& backend,
                                                     ServerOptions options);
  ~ExportServer();

  // Bound addresses (the port filled in when 0 was asked for).
  std::vector<ListenAddress> addresses() const;
  // The instance identity clients see in the handshake.
  const wire::InstanceId& instance() const;

  // Serves an already connected stream socket as if it had been accepted (socket
  // activation, tests and fuzzing). Takes ownership of `fd`.
  void adopt(int fd);

  // Events from the appliance.
  void volume_resized(int64_t volume_id, uint64_t size_bytes);
  void grant_changed(int64_t volume_id, int64_t client_id, bool revoked, bool read_only);
  void volume_closed(int64_t volume_id);  // deleted: handles fail with UNAVAILABLE

  // Sends SHUTDOWN to every path, stops accepting and closes the connections once their
  // requests completed; `done` runs when nothing is left in flight.
  void shutdown(std::function<void()> done);

  std::vector<SessionInfo> sessions() const;
  // Volume ids with open handles and the clients that hold them.
  const ServerStats& stats() const;

  struct Impl;

 private:
  explicit ExportServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rsio::server
