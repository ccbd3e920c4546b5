#include "common/names.h"

#include <fmt/format.h>

namespace rsio {

Status validate_name(std::string_view name, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return make_error(Errc::kInvalidArgument,
                      fmt::format("invalid {} '{}': {}; use 1 to {} letters, digits, '.', '_', "
                                  "'-' or '+', not starting with '-' or '.'",
                                  what, name, why, kNameLengthMax));
  };
  if (name.empty()) return bad("empty");
  if (name.size() > kNameLengthMax) return bad(fmt::format("{} bytes long", name.size()));
  if (name.front() == '-' || name.front() == '.') return bad("starts with '-' or '.'");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == '+';
    if (!ok) {
      if (c == '/') return bad("contains '/'");
      if (c == ' ' || c == '\t') return bad("contains white space");
      return bad(fmt::format("contains the character 0x{:02x}", static_cast<unsigned char>(c)));
    }
  }
  return {};
}

}  // namespace rsio
