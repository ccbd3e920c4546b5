#include "common/units.h"

#include <fmt/format.h>

#include <cctype>

namespace rsio {

std::optional<uint64_t> checked_add(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

std::optional<uint64_t> round_up(uint64_t value, uint64_t unit) {
  uint64_t rem = value % unit;
  if (rem == 0) return value;
  return checked_add(value, unit - rem);
}

namespace {

__extension__ typedef unsigned __int128 U128;

Error size_error(std::string_view text, std::string_view why) {
  return make_error(Errc::kInvalidArgument,
                    fmt::format("invalid size '{}': {}; use bytes or a number with a unit, "
                                "e.g. 512M, 1g, 1.5T or 2097152s (512-byte sectors)",
                                text, why));
}

}  // namespace

Result<uint64_t> parse_size(std::string_view text) {
  if (text.empty()) return size_error(text, "empty");
  if (text.front() == '-') return size_error(text, "must not be negative");
  if (text.front() == '+') return size_error(text, "must start with a digit");

  // Integer and fraction parts as exact integers: value = int_part + frac / 10^frac_digits.
  size_t i = 0;
  uint64_t int_part = 0;
  bool any_digit = false;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    auto m = checked_mul(int_part, 10);
    auto a = m ? checked_add(*m, static_cast<uint64_t>(text[i] - '0')) : std::nullopt;
    if (!a) return size_error(text, "too large");
    int_part = *a;
    any_digit = true;
    ++i;
  }
  uint64_t frac = 0;
  uint64_t frac_scale = 1;
  if (i < text.size() && text[i] == '.') {
    ++i;
    if (i >= text.size() || !std::isdigit(static_cast<unsigned char>(text[i])))
      return size_error(text, "digits must follow the decimal point");
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (frac_scale >= 1'000'000'000'000ULL) return size_error(text, "too many decimals");
      frac = frac * 10 + static_cast<uint64_t>(text[i] - '0');
      frac_scale *= 10;
      any_digit = true;
      ++i;
    }
  }
  if (!any_digit) return size_error(text, "not a number");

  std::string unit;
  for (; i < text.size(); ++i)
    unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  uint64_t multiplier = 0;
  if (unit.empty() || unit == "b")
    multiplier = 1;
  else if (unit == "s")
    multiplier = kSectorSizeBytes;
  else {
    const char u = unit[0];
    std::string_view rest = std::string_view(unit).substr(1);
    if (!(rest.empty() || rest == "b" || rest == "ib")) return size_error(text, "unknown unit");
    switch (u) {
      case 'k':
        multiplier = kKiB;
        break;
      case 'm':
        multiplier = kMiB;
        break;
      case 'g':
        multiplier = kGiB;
        break;
      case 't':
        multiplier = kTiB;
        break;
      case 'p':
        multiplier = 1024 * kTiB;
        break;
      default:
        return size_error(text, "unknown unit");
    }
  }

  auto whole = checked_mul(int_part, multiplier);
  if (!whole) return size_error(text, "too large (more than 16 EiB)");
  // frac * multiplier fits: frac < 10^12 and multiplier <= 2^50 would overflow, so divide
  // first where possible and require the result to be a whole number of bytes.
  const U128 frac_bytes_x = static_cast<U128>(frac) * multiplier;
  if (frac_bytes_x % frac_scale != 0) return size_error(text, "not a whole number of bytes");
  auto total = checked_add(*whole, static_cast<uint64_t>(frac_bytes_x / frac_scale));
  if (!total) return size_error(text, "too large (more than 16 EiB)");
  if (*total == 0) return size_error(text, "must be greater than zero");
  return *total;
}

std::string format_size(uint64_t size_bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (size_bytes < kKiB) return fmt::format("{} B", size_bytes);
  int u = 0;
  uint64_t unit = kKiB;
  while (u < 5 && size_bytes / unit >= 1024) {
    unit *= 1024;
    ++u;
  }
  if (size_bytes % unit == 0) return fmt::format("{} {}", size_bytes / unit, kUnits[u]);
  return fmt::format("{:.2f} {}", static_cast<double>(size_bytes) / static_cast<double>(unit),
                     kUnits[u]);
}

}  // namespace rsio
