// The request and response of a JSON management API over HTTP, shared by rsiod and rsclientd
// (servers) and the CLIs (clients): routes, the percent codec, typed fields of JSON bodies,
// and the mapping of errors to HTTP statuses and JSON bodies.
#pragma once

#include <functional>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace rsio::mgmt {

inline constexpr const char* kApiVersion = "1.0";

struct ApiRequest {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  std::string target;  // path and query, e.g. /1.0/volumes/eisberg?force=true
  std::string body;    // JSON for POST/PATCH, may be empty otherwise
};

struct ApiResponse {
  int status = 200;
  std::string body;  // JSON
};

// Runs a request; called on the executor the server was given (it may block there).
using ApiHandler = std::function<ApiResponse(const ApiRequest&)>;

// A request target split up: the percent-decoded path segments after /1.0 and the query.
struct ApiRoute {
  std::vector<std::string> parts;
  std::map<std::string, std::string> query;
  bool versioned = false;  // the path started with /1.0
};
ApiRoute parse_api_target(std::string_view target);
std::string percent_decode(std::string_view s);
// Percent-encodes a path segment or query value.
std::string url_encode(std::string_view s);

// The HTTP status of an error code (the one table of common/src/result.cc).
inline int http_status(Errc code) { return errc_http_status(code); }
// {"error": {"code": ..., "message": ...}} with the status of the error's code.
ApiResponse api_error_response(const Error& e);

// Typed fields of a JSON request body: a body that is not a JSON object, an unknown field or
// a field of the wrong type is kInvalidArgument naming it (HTTP 400) — never an exception
// that would become a 500.
// Parses a JSON object body (empty: {}) and refuses fields not in `allowed`, so that a typo
// in a script fails loudly instead of being ignored.
Result<nlohmann::json> parse_body(const std::string& body,
                                  std::initializer_list<std::string_view> allowed);
// A string field; missing: "" or, when `required`, an error.
Result<std::string> get_string(const nlohmann::json& j, const char* key, bool required);
// A non-negative integer field; missing: nothing or, when `required`, an error.
Result<std::optional<uint64_t>> get_u64(const nlohmann::json& j, const char* key, bool required);
// A list of strings; missing: empty.
Result<std::vector<std::string>> get_strings(const nlohmann::json& j, const char* key);
// A boolean field; missing: false.
Result<bool> get_bool(const nlohmann::json& j, const char* key);
// A query parameter true/1/(empty) or false/0; missing: false.
Result<bool> query_flag(const ApiRoute& r, const std::string& key);

}  // namespace rsio::mgmt
