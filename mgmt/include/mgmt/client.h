// A synchronous client of a daemon's management API over its Unix socket (HTTP/1.1 + JSON):
// used by smgr, rsadmin and rsconfig.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/result.h"

namespace rsio::mgmt {

// How long a command waits for the daemon's answer (the longest request, attaching a
// volume from an unreachable server, takes a few seconds). RSIO_API_TIMEOUT=SECONDS
// overrides it.
inline constexpr int kApiTimeoutSeconds = 120;

class ApiClient {
 public:
  explicit ApiClient(std::string socket_path) : socket_path_(std::move(socket_path)) {}
  // For another daemon with the same kind of API (rsclientd): names it in messages, with the
  // command that starts it and the environment variable that selects its socket.
  ApiClient(std::string socket_path, std::string daemon, std::string start_hint)
      : socket_path_(std::move(socket_path)),
        daemon_(std::move(daemon)),
        start_hint_(std::move(start_hint)) {}

  // Sends one request and returns the JSON reply. Errors: kUnavailable (rsiod not running,
  // with how to start it), kPermissionDenied (not root), and the error rsiod answered with.
  Result<nlohmann::json> call(const std::string& method, const std::string& target,
                              const std::optional<nlohmann::json>& body = std::nullopt);

  const std::string& socket_path() const { return socket_path_; }

 private:
  std::string socket_path_;
  std::string daemon_ = "rsiod";
  std::string start_hint_;  // empty: rsiod's
};

}  // namespace rsio::mgmt
