#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <string>

namespace rsio::log {
namespace {

std::atomic<int> g_min_level{static_cast<int>(Level::kInfo)};

bool under_journald() {
  static const bool value = std::getenv("JOURNAL_STREAM") != nullptr;
  return value;
}

std::string_view level_name(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kNotice:
      return "notice";
    case Level::kWarning:
      return "warning";
    case Level::kError:
      return "error";
  }
  return "info";
}

}  // namespace

void set_min_level(Level level) { g_min_level.store(static_cast<int>(level)); }

bool set_min_level(std::string_view name) {
  if (name == "debug")
    set_min_level(Level::kDebug);
  else if (name == "info")
    set_min_level(Level::kInfo);
  else if (name == "warning")
    set_min_level(Level::kWarning);
  else if (name == "error")
    set_min_level(Level::kError);
  else
    return false;
  return true;
}

void write(Level level, std::string_view message) {
  if (static_cast<int>(level) > g_min_level.load(std::memory_order_relaxed)) return;
  std::string line;
  if (under_journald()) {
    line = fmt::format("<{}>{}\n", static_cast<int>(level), message);
  } else {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {}: {}\n", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms,
                       level_name(level), message);
  }
  // One write per line so concurrent threads never interleave within a line.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace rsio::log
