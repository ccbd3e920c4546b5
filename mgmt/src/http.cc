#include "mgmt/http.h"

#include <fmt/format.h>

#include <cctype>

namespace rsio::mgmt {

std::string url_encode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
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

namespace {

Error bad_request(std::string message) { return Error{Errc::kInvalidArgument, std::move(message)}; }

}  // namespace

Result<bool> query_flag(const ApiRoute& r, const std::string& key) {
  auto it = r.query.find(key);
  if (it == r.query.end()) return false;
  if (it->second.empty() || it->second == "true" || it->second == "1") return true;
  if (it->second == "false" || it->second == "0") return false;
  return bad_request(fmt::format("query parameter {} must be true or false", key));
}

// Parses a JSON object body and rejects fields not in `allowed`, so that a typo in a script
// fails loudly instead of being ignored.
Result<nlohmann::json> parse_body(const std::string& body, std::initializer_list<std::string_view> allowed) {
  nlohmann::json j = nlohmann::json::parse(body.empty() ? std::string("{}") : body, nullptr, false);
  if (j.is_discarded()) return bad_request("request body is not valid JSON");
  if (!j.is_object()) return bad_request("request body must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    bool ok = false;
    for (std::string_view a : allowed) ok = ok || key == a;
    if (!ok) {
      std::string list;
      for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return bad_request(fmt::format("unknown field '{}' (accepted: {})", key, list));
    }
  }
  return Result<nlohmann::json>(boost::system::in_place_value, std::move(j));
}

Result<std::string> get_string(const nlohmann::json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) return bad_request(fmt::format("field '{}' is required", key));
    return std::string();
  }
  if (!it->is_string()) return bad_request(fmt::format("field '{}' must be a string", key));
  return it->get<std::string>();
}

Result<std::optional<uint64_t>> get_u64(const nlohmann::json& j, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) return bad_request(fmt::format("field '{}' is required", key));
    return std::optional<uint64_t>();
  }
  if (!it->is_number_unsigned())
    return bad_request(fmt::format("field '{}' must be a non-negative integer", key));
  return std::optional<uint64_t>(it->get<uint64_t>());
}

Result<std::vector<std::string>> get_strings(const nlohmann::json& j, const char* key) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end()) return out;
  if (!it->is_array()) return bad_request(fmt::format("field '{}' must be a list of strings", key));
  for (const auto& e : *it) {
    if (!e.is_string()) return bad_request(fmt::format("field '{}' must be a list of strings", key));
    out.push_back(e.get<std::string>());
  }
  return out;
}

Result<bool> get_bool(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return false;
  if (!it->is_boolean()) return bad_request(fmt::format("field '{}' must be true or false", key));
  return it->get<bool>();
}


ApiResponse api_error_response(const Error& e) {
  nlohmann::json j = {{"error", {{"code", errc_name(e.code)}, {"message", e.message}}}};
  return ApiResponse{http_status(e.code), j.dump()};
}

}  // namespace rsio::mgmt
