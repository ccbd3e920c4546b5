// What smgr and rsadmin share: a synchronous client of rsiod's management API, exit codes,
// and the CLI11 wrapper that maps parse errors to exit code 2.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/result.h"

namespace rsio::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

inline constexpr const char* kDefaultSocket = "/run/rsio/rsiod.sock";

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

// Percent-encodes a path segment or query value.
std::string url_encode(std::string_view s);

// Adds --socket (with RSIO_SOCKET) to `app`, bound to `socket_path`.
void add_socket_option(CLI::App& app, std::string& socket_path);

// A command line that parses but makes no sense (no action, conflicting actions, a bad
// size). Thrown by a command's body, reported with exit code kExitUsage.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Parses a size option value; throws UsageError naming the option when it is invalid.
uint64_t parse_size_option(const std::string& option, const std::string& text);

// Parses argv with CLI11 and runs `body`; maps CLI11's exit codes and UsageError to
// kExitUsage, prints Errors as "PROGRAM: message" and returns kExitFailed for them.
int run_cli(CLI::App& app, int argc, char** argv, const std::function<Status()>& body);

// Removes trailing spaces, for fixed-width columns at the end of a line.
std::string rstrip(std::string s);

}  // namespace rsio::cli
