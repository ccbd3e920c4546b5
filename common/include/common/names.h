// Names admins give to pools, volumes and clients.
#pragma once

#include <string_view>

#include "common/result.h"

namespace rsio {

inline constexpr size_t kNameLengthMax = 64;

// A valid name is 1..64 bytes of ASCII letters, digits, '.', '_', '-' and '+', and does
// not start with '-' or '.' (so it can't be mistaken for an option or a hidden file).
// `what` names the object in the error message ("volume name").
Status validate_name(std::string_view name, std::string_view what);

}  // namespace rsio
