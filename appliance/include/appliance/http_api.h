// The request and response of a JSON management API over HTTP, shared by rsiod and rsclientd,
// and the mapping of errors to HTTP statuses and JSON bodies.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace rsio::appliance {

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

int http_status(Errc code);
// {"error": {"code": ..., "message": ...}} with the status of the error's code.
ApiResponse api_error_response(const Error& e);

}  // namespace rsio::appliance
