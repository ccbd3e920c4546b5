#include "common/result.h"

#include <fmt/format.h>

#include <cstring>
#include <iterator>
#include <stdexcept>

#include "common/assert.h"

namespace rsio {

namespace {

struct ErrcInfo {
  Errc code;
  std::string_view name;
  int http_status;
};

constexpr ErrcInfo kErrcTable[] = {
    {Errc::kInvalidArgument, "invalid-argument", 400},
    {Errc::kNotFound, "not-found", 404},
    {Errc::kAlreadyExists, "already-exists", 409},
    {Errc::kNoSpace, "no-space", 507},
    {Errc::kInUse, "in-use", 409},
    {Errc::kIo, "io-error", 500},
    {Errc::kCorrupt, "corrupt", 500},
    {Errc::kUnsupportedVersion, "unsupported-version", 500},
    {Errc::kPermissionDenied, "permission-denied", 403},
    {Errc::kUnavailable, "unavailable", 503},
    {Errc::kInternal, "internal", 500},
};

const ErrcInfo& info(Errc code) {
  for (const ErrcInfo& i : kErrcTable)
    if (i.code == code) return i;
  return kErrcTable[std::size(kErrcTable) - 1];  // kInternal
}

}  // namespace

std::string_view errc_name(Errc code) { return info(code).name; }

int errc_http_status(Errc code) { return info(code).http_status; }

Errc errc_from_name(std::string_view name) {
  for (const ErrcInfo& i : kErrcTable)
    if (i.name == name) return i.code;
  return Errc::kInternal;
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
