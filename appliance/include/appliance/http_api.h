// The request and response of a JSON management API over HTTP, shared by rsiod and rsclientd,
// and the mapping of errors to HTTP statuses and JSON bodies.
#pragma once

#include <functional>
#include <string>

#include "common/result.h"

namespace rsio::appliance {

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

int http_status(Errc code);
// {"error": {"code": ..., "message": ...}} with the status of the error's code.
ApiResponse api_error_response(const Error& e);

}  // namespace rsio::appliance
