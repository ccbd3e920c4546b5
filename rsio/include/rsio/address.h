// "HOST:PORT" as admins write them on both ends of RSIO (rsiod --listen, client paths).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace rsio {

struct HostPort {
  std::string host;              // without brackets; may be empty (":5000")
  std::optional<uint16_t> port;  // absent when the text has none
};

// Splits "HOST:PORT", "HOST", "[V6]:PORT", "[V6]" or ":PORT". IPv6 addresses need brackets.
// `what` names the text in errors ("listen address", "server"). Errors: kInvalidArgument.
Result<HostPort> split_host_port(std::string_view text, std::string_view what);

}  // namespace rsio
