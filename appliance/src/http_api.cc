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

ApiResponse api_error_response(const Error& e) {
  nlohmann::json j = {{"error", {{"code", errc_name(e.code)}, {"message", e.message}}}};
  return ApiResponse{http_status(e.code), j.dump()};
}

}  // namespace rsio::appliance
