// The management API: versioned HTTP/JSON resources (/1.0/...) over rsiod's Unix socket.
// docs/api.md specifies every route; keep the two in step.
//
// Thread-safety: Api::handle runs on rsiod's metadata thread only (it touches SQLite).
#pragma once

#include <cstdint>
#include <string>

#include "appliance/catalog.h"
#include "appliance/engine_service.h"
#include "mgmt/http.h"
#include "volmgr/volume_manager.h"

namespace rsio::appliance {

using mgmt::ApiRequest;
using mgmt::ApiResponse;
using mgmt::ApiRoute;

struct ApiInfo {
  std::string version;  // product version
  std::string state_dir;
  std::string namespace_name = "rsio";
  int namespace_index = 0;
  int64_t started_ms = 0;
};

class Api {
 public:
  // `volumes` and `catalog` must outlive the Api.
  Api(volmgr::VolumeManager& volumes, Catalog& catalog, ApiInfo info)
      : volumes_(volumes), catalog_(catalog), info_(std::move(info)) {}

  // Never throws; every failure is a JSON error body {"error": {"code", "message"}} with a
  // matching HTTP status.
  ApiResponse handle(const ApiRequest& req);

  // The JSON body and HTTP status for an error (also used by the HTTP layer).
  static ApiResponse error_response(const Error& e);

  // The I/O engine, or null with the reason it is not running. Volumes created, resized or
  // deleted through the API are opened, updated or closed in it.
  // The database, for online backups (POST /1.0/backup).
  void set_database(db::Database* db) { db_ = db; }

  void set_engine(EngineService* engine, std::string unavailable_reason) {
    engine_ = engine;
    engine_reason_ = std::move(unavailable_reason);
  }

 private:
  // VACUUM INTO a new file of mode 0600 (node keys are secrets). Returns its size.
  Result<uint64_t> backup_database(const std::string& path);

  db::Database* db_ = nullptr;
  volmgr::VolumeManager& volumes_;
  Catalog& catalog_;
  ApiInfo info_;
  EngineService* engine_ = nullptr;
  std::string engine_reason_ = "the I/O engine is not running";
};

}  // namespace rsio::appliance
