#include <fmt/format.h>

#include "cli/api_client.h"
#include "common/units.h"

namespace rsio::cli {

void add_socket_option(CLI::App& app, std::string& socket_path) {
  app.add_option("--socket", socket_path,
                 "rsiod's management socket (default /run/rsio/rsiod.sock, or $RSIO_SOCKET)")
      ->type_name("PATH")
      ->envname("RSIO_SOCKET");
}

int run_cli(CLI::App& app, int argc, char** argv, const std::function<Status()>& body) {
  app.set_version_flag("--version", RSIO_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help, version or the parse error
    return rc == 0 ? kExitOk : kExitUsage;
  }
  try {
    Status st = body();
    if (!st) {
      fmt::print(stderr, "{}: {}\n", app.get_name(), st.error().message);
      return kExitFailed;
    }
  } catch (const UsageError& e) {
    fmt::print(stderr, "{}: {}\nRun with --help for usage.\n", app.get_name(), e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: {}\n", app.get_name(), e.what());
    return kExitFailed;
  }
  return kExitOk;
}

uint64_t parse_size_option(const std::string& option, const std::string& text) {
  auto size = parse_size(text);
  if (!size) throw UsageError(fmt::format("{}: {}", option, size.error().message));
  return *size;
}

std::string rstrip(std::string s) {
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace rsio::cli
