#include "rsio/address.h"

#include <fmt/format.h>

namespace rsio {

Result<HostPort> split_host_port(std::string_view text, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return make_error(Errc::kInvalidArgument, fmt::format("{} {}: {}", what, text, why));
  };
  HostPort hp;
  std::string_view host = text;
  std::optional<std::string_view> port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ]");
    host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return bad("expected :PORT after ]");
      port = rest.substr(1);
    }
  } else if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
    if (text.find(':') != colon) return bad("write IPv6 addresses as [ADDR]:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  hp.host = std::string(host);
  if (port) {
    if (port->empty()) return bad("the port is missing after :");
    unsigned long v = 0;
    for (char c : *port) {
      if (c < '0' || c > '9') return bad(fmt::format("bad port {}", *port));
      v = v * 10 + static_cast<unsigned long>(c - '0');
      if (v > 65535) return bad(fmt::format("bad port {}", *port));
    }
    hp.port = static_cast<uint16_t>(v);
  }
  return hp;
}

}  // namespace rsio
