// Logging to stderr. Under systemd (JOURNAL_STREAM set) lines carry a "<N>" syslog priority
// prefix so journald records the level; otherwise a timestamp and the level name.
// Thread-safe: each line is written with one write(2).
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace rsio::log {

enum class Level { kDebug = 7, kInfo = 6, kNotice = 5, kWarning = 4, kError = 3 };

void set_min_level(Level level);
// Sets the level from its name as the daemons' --log-level takes it: "debug", "info",
// "warning" or "error". Returns false (and changes nothing) for another name.
bool set_min_level(std::string_view name);
void write(Level level, std::string_view message);

template <class... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kWarning, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::kError, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace rsio::log
