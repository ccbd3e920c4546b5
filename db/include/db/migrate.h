// Schema migrations: db/schema/NNNN_name.sql files compiled into the binary and applied in
// order, each in its own transaction together with its PRAGMA user_version bump.
#pragma once

#include <span>
#include <string>

#include "common/result.h"
#include "db/sqlite.h"

namespace rsio::db {

struct Migration {
  int version;       // NNNN of the file name: 1, 2, ...
  const char* name;  // file name, for messages
  const char* sql;
};

// The migrations of this build, ordered by version, without gaps.
std::span<const Migration> builtin_migrations();

// Current schema version of `db` (its user_version).
Result<int> schema_version(Database& db);

// Brings `db` to the latest version in `migrations`. A database newer than the latest
// migration is refused with kUnsupportedVersion and left untouched. `migrations` must be
// ordered by version without gaps.
Status migrate(Database& db, std::span<const Migration> migrations);

// A canonical text dump of the schema (tables, indexes, their SQL) and user_version, for
// comparing two databases in tests and diagnostics.
Result<std::string> dump_schema(Database& db);

}  // namespace rsio::db
