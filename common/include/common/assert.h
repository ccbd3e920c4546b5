// Always-on assertions for broken invariants (bugs). Expected failures are Result values.
#pragma once

namespace rsio::detail {
[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const char* msg);
}

#define RSIO_ASSERT(cond)                                                    \
  do {                                                                       \
    if (!(cond)) ::rsio::detail::assert_fail(#cond, __FILE__, __LINE__, ""); \
  } while (0)

#define RSIO_ASSERT_MSG(cond, msg)                                            \
  do {                                                                        \
    if (!(cond)) ::rsio::detail::assert_fail(#cond, __FILE__, __LINE__, msg); \
  } while (0)
