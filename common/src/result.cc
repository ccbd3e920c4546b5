#include "common/result.h"

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>

#include "common/assert.h"

namespace rsio {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
      return "invalid-argument";
    case Errc::kNotFound:
      return "not-found";
    case Errc::kAlreadyExists:
      return "already-exists";
    case Errc::kNoSpace:
      return "no-space";
    case Errc::kInUse:
      return "in-use";
    case Errc::kIo:
      return "io-error";
    case Errc::kCorrupt:
      return "corrupt";
    case Errc::kUnsupportedVersion:
      return "unsupported-version";
    case Errc::kPermissionDenied:
      return "permission-denied";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kInternal:
      return "internal";
  }
  return "internal";
}

void throw_exception_from_error(const Error& e, const boost::source_location&) {
  throw std::runtime_error(std::string(errc_name(e.code)) + ": " + e.message);
}

Error errno_error(std::string_view what, int err) {
  Errc code = Errc::kIo;
  if (err == ENOENT) code = Errc::kNotFound;
  if (err == EEXIST) code = Errc::kAlreadyExists;
  if (err == EACCES || err == EPERM) code = Errc::kPermissionDenied;
  if (err == EBUSY) code = Errc::kInUse;
  if (err == ENOSPC) code = Errc::kNoSpace;
  return Error{code, fmt::format("{}: {}", what, std::strerror(err))};
}

namespace detail {
void assert_fail(const char* expr, const char* file, int line, const char* msg) {
  fmt::print(stderr, "assertion failed: {} at {}:{} {}\n", expr, file, line, msg);
  std::fflush(stderr);
  std::abort();
}
}  // namespace detail

}  // namespace rsio
