// Errors as values. Every operation a caller must be able to fail (not found, exists, no
// space, I/O error, bad input) returns Result<T>; bugs use RSIO_ASSERT instead.
#pragma once

#include <boost/system/result.hpp>
#include <string>
#include <string_view>
#include <utility>

namespace rsio {

// One code per kind of failure a caller may react to differently. The management API maps
// these to HTTP statuses and the CLIs to exit codes, so keep the list short and stable.
enum class Errc : int {
  kInvalidArgument = 1,  // the request itself is wrong: bad size, bad name, bad combination
  kNotFound,             // a named object does not exist
  kAlreadyExists,        // a named object exists already
  kNoSpace,              // not enough free extents / devices for the requested layout
  kInUse,                // object is busy: granted volume, device used elsewhere
  kIo,                   // the OS refused an I/O or file operation
  kCorrupt,              // on-disk label or database content fails validation
  kUnsupportedVersion,   // data written by a newer release
  kPermissionDenied,     // caller lacks the rights for the operation
  kUnavailable,          // service not reachable or not ready
  kInternal,             // unexpected failure of a library we call
};

// Each code's name (in messages and in the management API's error bodies) and the HTTP
// status the management API answers with it: one table, common/src/result.cc.
std::string_view errc_name(Errc code);
// The code of a name errc_name() gives; kInternal for any other name.
Errc errc_from_name(std::string_view name);
int errc_http_status(Errc code);

// A failure: its kind and a message that says what failed, why, and what to do, with
// context as key=value pairs.
struct Error {
  Errc code = Errc::kInternal;
  std::string message;
};

[[noreturn]] void throw_exception_from_error(const Error& e, const boost::source_location& loc);

template <class T>
using Result = boost::system::result<T, Error>;

using Status = boost::system::result<void, Error>;

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

// Error from the current errno value, prefixed with `what`.
Error errno_error(std::string_view what, int err);

}  // namespace rsio

// Propagate an error from an expression that yields a Result. Usage:
//   RSIO_TRY(auto fd, open_file(path));
//   RSIO_TRY_STATUS(write_label(fd, label));
#define RSIO_CONCAT_INNER(a, b) a##b
#define RSIO_CONCAT(a, b) RSIO_CONCAT_INNER(a, b)
#define RSIO_TRY_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                   \
  if (!tmp) return tmp.error();        \
  decl = std::move(*tmp)
#define RSIO_TRY(decl, expr) RSIO_TRY_IMPL(RSIO_CONCAT(rsio_try_, __LINE__), decl, expr)
#define RSIO_TRY_STATUS(expr)                                    \
  do {                                                           \
    if (auto rsio_st = (expr); !rsio_st) return rsio_st.error(); \
  } while (0)
