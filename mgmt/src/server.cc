// Thread model: see api_server.h. All members of Impl are touched on the io thread only;
// the metadata executor only runs Api::handle.
#include "mgmt/server.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>

#include "common/log.h"

namespace rsio::mgmt {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::local::stream_protocol;
using Stream = beast::basic_stream<stream_protocol>;

constexpr auto kReadTimeout = std::chrono::seconds(60);
constexpr auto kWriteTimeout = std::chrono::seconds(30);

struct ApiServer::Impl {
  asio::io_context& io;
  asio::any_io_executor meta;
  ApiHandler handler;
  std::string server_name;
  std::string socket_path;
  stream_protocol::acceptor acceptor;
  std::set<Stream*> connections;
  bool stopping = false;

  Impl(asio::io_context& io_, asio::any_io_executor meta_, ApiHandler h, std::string path,
       std::string name)
      : io(io_),
        meta(std::move(meta_)),
        handler(std::move(h)),
        server_name(std::move(name)),
        socket_path(std::move(path)),
        acceptor(io_) {}

  awaitable<void> accept_loop();
  awaitable<void> serve(stream_protocol::socket socket);
};

namespace {

// Runs on the metadata executor.
awaitable<ApiResponse> handle_on_meta(const ApiHandler* handler, ApiRequest req) {
  co_return (*handler)(req);
}

void log_if_failed(std::exception_ptr e, const char* what) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error("{} ended with an exception: {}", what, ex.what());
  }
}

}  // namespace

awaitable<void> ApiServer::Impl::accept_loop() {
  while (!stopping) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (ec == asio::error::operation_aborted || stopping) break;
      log::warn("management API accept failed: {}", ec.message());
      continue;
    }
    if (connections.size() >= kApiConnectionsMax) {
      log::warn("management API: refusing connection, {} already open", connections.size());
      continue;  // the socket closes as it goes out of scope
    }
    asio::co_spawn(io, serve(std::move(socket)),
                   [](std::exception_ptr e) { log_if_failed(e, "management API connection"); });
  }
}

awaitable<void> ApiServer::Impl::serve(stream_protocol::socket socket) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  const bool have_cred =
      ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
  const bool allowed = have_cred && (cred.uid == 0 || cred.uid == ::geteuid());

  Stream stream(std::move(socket));
  connections.insert(&stream);
  struct Unregister {
    Impl* self;
    Stream* s;
    ~Unregister() { self->connections.erase(s); }
  } unregister{this, &stream};

  beast::flat_buffer buffer;
  while (!stopping) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(kApiBodyBytesMax);
    stream.expires_after(kReadTimeout);
    auto [rec, n] =
        co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (rec == http::error::end_of_stream || rec == asio::error::eof ||
        rec == asio::error::operation_aborted || rec == beast::error::timeout)
      break;
    ApiResponse reply;
    bool keep_alive = false;
    unsigned version = 11;
    if (rec) {
      const bool too_big = rec == http::error::body_limit || rec == http::error::header_limit;
      reply = api_error_response(make_error(
          Errc::kInvalidArgument, fmt::format("malformed HTTP request: {}", rec.message())));
      if (too_big) reply.status = 413;
    } else {
      auto req = parser.release();
      keep_alive = req.keep_alive();
      version = req.version();
      if (!allowed) {
        reply = api_error_response(make_error(
            Errc::kPermissionDenied,
            have_cred ? fmt::format("uid {} may not use the management API: it is root-only; "
                                    "run the command as root (sudo)",
                                    cred.uid)
                      : std::string("cannot identify the caller (SO_PEERCRED failed)")));
      } else {
        ApiRequest api_req{std::string(req.method_string()), std::string(req.target()),
                           std::move(req.body())};
        auto [e, r] = co_await asio::co_spawn(meta, handle_on_meta(&handler, std::move(api_req)),
                                              asio::as_tuple(asio::use_awaitable));
        if (e) {
          log_if_failed(e, "management API request");
          r = api_error_response(make_error(
              Errc::kInternal, fmt::format("internal error; see {}'s log", server_name)));
        }
        reply = std::move(r);
      }
    }
    http::response<http::string_body> res{static_cast<http::status>(reply.status), version};
    res.set(http::field::server, server_name);
    res.set(http::field::content_type, "application/json");
    res.keep_alive(keep_alive && !stopping);
    res.body() = std::move(reply.body);
    res.body() += '\n';
    res.prepare_payload();
    stream.expires_after(kWriteTimeout);
    auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
    if (wec || !res.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(stream_protocol::socket::shutdown_both, ignored);
}

Result<std::unique_ptr<ApiServer>> ApiServer::listen(asio::io_context& io,
                                                     asio::any_io_executor meta, ApiHandler handler,
                                                     std::string socket_path,
                                                     std::string server_name) {
  auto impl = std::make_unique<Impl>(io, std::move(meta), std::move(handler), socket_path,
                                     std::move(server_name));
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return make_error(Errc::kAlreadyExists,
                        fmt::format("{} exists and is not a socket; remove it or choose another "
                                    "--socket path",
                                    socket_path));
    stream_protocol::socket probe(io);
    boost::system::error_code ec;
    probe.connect(stream_protocol::endpoint(socket_path), ec);
    if (!ec)
      return make_error(Errc::kInUse,
                        fmt::format("another {} is already serving {}; stop it first or "
                                    "choose another --socket path",
                                    impl->server_name, socket_path));
    ::unlink(socket_path.c_str());  // stale socket of a daemon that is gone
  }
  boost::system::error_code ec;
  impl->acceptor.open(stream_protocol(), ec);
  if (!ec) {
    // Bind with a restrictive umask so the socket is never briefly accessible to others.
    const mode_t old_mask = ::umask(0177);
    impl->acceptor.bind(stream_protocol::endpoint(socket_path), ec);
    ::umask(old_mask);
  }
  if (!ec) ::chmod(socket_path.c_str(), 0600);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return make_error(Errc::kIo, fmt::format("cannot listen on {}: {}", socket_path, ec.message()));
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ApiServer::~ApiServer() = default;

void ApiServer::start() {
  asio::co_spawn(impl_->io, impl_->accept_loop(),
                 [](std::exception_ptr e) { log_if_failed(e, "management API acceptor"); });
}

void ApiServer::stop() {
  if (impl_->stopping) return;
  impl_->stopping = true;
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
  ::unlink(impl_->socket_path.c_str());
  // Cancel reads of idle connections; a connection waiting for the metadata thread
  // finishes its reply and then sees `stopping`.
  for (Stream* s : impl_->connections) s->cancel();
}

}  // namespace rsio::mgmt
