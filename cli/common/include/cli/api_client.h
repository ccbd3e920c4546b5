// What smgr, rsadmin and rsconfig share: the management API's client (mgmt/), exit codes,
// and the CLI11 wrapper that maps parse errors to exit code 2.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

#include "common/result.h"
#include "mgmt/client.h"
#include "mgmt/http.h"

namespace rsio::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

inline constexpr const char* kDefaultSocket = "/run/rsio/rsiod.sock";

using mgmt::ApiClient;
using mgmt::kApiTimeoutSeconds;
using mgmt::url_encode;

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
