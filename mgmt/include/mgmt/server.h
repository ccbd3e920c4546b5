// HTTP/1.1 server for the management API on a Unix socket.
//
// Thread model: the acceptor and every connection run on the io_context given to listen()
// (one thread). A parsed request is handed to the handler's executor (rsiod: the metadata
// thread, where Api::handle runs), and the reply is written back on the io thread, so a
// handler that blocks (SQLite, a network call) never blocks the event loop.
// Only root (or the daemon's own user) may use the API: the peer's uid is read with
// SO_PEERCRED on accept and other callers get 403 on every request.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <memory>
#include <set>
#include <string>

#include "mgmt/http.h"
#include "common/result.h"

namespace rsio::mgmt {

inline constexpr size_t kApiConnectionsMax = 64;
inline constexpr size_t kApiBodyBytesMax = 1 << 20;

class ApiServer {
 public:
  // Binds `socket_path` (mode 0600). A stale socket file from a crashed daemon is replaced;
  // a socket another process still answers on is refused with kInUse.
  // `server_name` is the HTTP Server header and names the daemon in error messages.
  static Result<std::unique_ptr<ApiServer>> listen(boost::asio::io_context& io,
                                                   boost::asio::any_io_executor meta,
                                                   ApiHandler handler, std::string socket_path,
                                                   std::string server_name);
  ~ApiServer();

  // Starts accepting. Connections end when their peer closes or on stop().
  void start();
  // Stops accepting, closes idle connections and removes the socket file; a request being
  // handled completes first. The io_context runs out of work once all connections are gone.
  void stop();

 private:
  struct Impl;
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rsio::mgmt
