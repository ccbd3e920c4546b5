#include "mgmt/client.h"

#include <fmt/format.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdlib>

#include "mgmt/http.h"

namespace rsio::mgmt {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

Result<json> ApiClient::call(const std::string& method, const std::string& target,
                             const std::optional<json>& body) {
  asio::io_context io;
  asio::local::stream_protocol::socket socket(io);
  boost::system::error_code ec;
  socket.connect(asio::local::stream_protocol::endpoint(socket_path_), ec);
  if (ec) {
    if (ec == asio::error::access_denied || ec == asio::error::no_permission)
      return make_error(Errc::kPermissionDenied,
                        fmt::format("permission denied on {}: the management API is root-only; "
                                    "run this command as root (sudo)",
                                    socket_path_));
    if (!start_hint_.empty())
      return make_error(Errc::kUnavailable,
                        fmt::format("cannot reach {} at {} ({}): is it running? {}", daemon_,
                                    socket_path_, ec.message(), start_hint_));
    return make_error(Errc::kUnavailable,
                      fmt::format("cannot reach rsiod at {} ({}): is it running? Start it with "
                                  "`systemctl start rsiod`, or `rsiod --state-dir DIR --socket "
                                  "{}`; use --socket or RSIO_SOCKET for another appliance",
                                  socket_path_, ec.message(), socket_path_));
  }
  // No wait without an end: a daemon that accepts but never answers (hung, stopped with
  // SIGSTOP) makes the command fail instead of hanging the admin's shell or script.
  int seconds = kApiTimeoutSeconds;
  if (const char* env = std::getenv("RSIO_API_TIMEOUT"); env != nullptr && std::atoi(env) > 0)
    seconds = std::atoi(env);
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, daemon_);
  req.set(http::field::user_agent, "rsio-cli");
  if (body) {
    req.set(http::field::content_type, "application/json");
    req.body() = body->dump();
  }
  req.keep_alive(false);
  req.prepare_payload();
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1ULL << 30);
  bool done = false, sent = false;
  http::async_write(socket, req, [&](const boost::system::error_code& wec, size_t) {
    if (wec) {
      ec = wec;
      done = true;
      return;
    }
    sent = true;
    http::async_read(socket, buffer, parser, [&](const boost::system::error_code& rec, size_t) {
      ec = rec;
      done = true;
    });
  });
  io.run_for(std::chrono::seconds(seconds));
  if (!done)
    return make_error(Errc::kUnavailable,
                      fmt::format("{} at {} did not answer within {} s; it may be hung (check "
                                  "its log, e.g. journalctl -u {})",
                                  daemon_, socket_path_, seconds, daemon_));
  if (ec && !sent)
    return make_error(Errc::kUnavailable, fmt::format("sending to {} at {} failed: {}", daemon_,
                                                      socket_path_, ec.message()));
  if (ec)
    return make_error(Errc::kUnavailable, fmt::format("reading {}'s reply from {} failed: {}",
                                                      daemon_, socket_path_, ec.message()));
  auto res = parser.release();
  json j = json::parse(res.body(), nullptr, false);
  if (j.is_discarded())
    return make_error(Errc::kInternal, fmt::format("{} answered {} with a body that is not JSON",
                                                   daemon_, res.result_int()));
  if (res.result_int() >= 300) {
    if (j.contains("error") && j["error"].is_object())
      return make_error(errc_from_name(j["error"].value("code", "internal")),
                        j["error"].value("message", "unknown error"));
    return make_error(Errc::kInternal,
                      fmt::format("{} answered HTTP {}", daemon_, res.result_int()));
  }
  // json converts implicitly to almost anything, so name the alternative explicitly.
  return Result<json>(boost::system::in_place_value, std::move(j));
}

}  // namespace rsio::mgmt
