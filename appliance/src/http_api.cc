#include "appliance/http_api.h"

#include <nlohmann/json.hpp>

namespace rsio::appliance {

int http_status(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument:
      return 400;
    case Errc::kNotFound:
      return 404;
    case Errc::kAlreadyExists:
      return 409;
    case Errc::kInUse:
      return 409;
    case Errc::kNoSpace:
      return 507;
    case Errc::kPermissionDenied:
      return 403;
    case Errc::kUnavailable:
      return 503;
    case Errc::kIo:
    case Errc::kCorrupt:
    case Errc::kUnsupportedVersion:
    case Errc::kInternal:
      return 500;
  }
  return 500;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

ApiRoute parse_api_target(std::string_view target) {
  ApiRoute r;
  std::string_view path = target;
  std::string_view query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.push_back(percent_decode(path.substr(i, j - i)));
    i = j;
  }
  if (!parts.empty() && parts[0] == kApiVersion) {
    r.versioned = true;
    r.parts.assign(parts.begin() + 1, parts.end());
  }
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    size_t eq = kv.find('=');
    std::string key = percent_decode(kv.substr(0, eq));
    std::string value = eq == std::string_view::npos ? "" : percent_decode(kv.substr(eq + 1));
    r.query[key] = value;
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return r;
}

ApiResponse api_error_response(const Error& e) {
  nlohmann::json j = {{"error", {{"code", errc_name(e.code)}, {"message", e.message}}}};
  return ApiResponse{http_status(e.code), j.dump()};
}

}  // namespace rsio::appliance
