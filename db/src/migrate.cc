#include "db/migrate.h"

#include <fmt/format.h>

#include "common/assert.h"

namespace rsio::db {

Result<int> schema_version(Database& db) {
  RSIO_TRY(Statement * st, db.prepare("PRAGMA user_version"));
  RSIO_TRY(bool row, st->step());
  RSIO_ASSERT(row);
  return static_cast<int>(st->column_int64(0));
}

Status migrate(Database& db, std::span<const Migration> migrations) {
  const int latest = migrations.empty() ? 0 : migrations.back().version;
  RSIO_TRY(int current, schema_version(db));
  if (current > latest) {
    return make_error(Errc::kUnsupportedVersion,
                      fmt::format("database {} has schema version {} but this release knows "
                                  "versions up to {}: it was written by a newer RSIO; install "
                                  "that release again or restore a backup (the database was "
                                  "left untouched)",
                                  db.path(), current, latest));
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    RSIO_ASSERT_MSG(m.version == current + 1, "migrations must be numbered without gaps");
    RSIO_TRY(Transaction txn, Transaction::begin(db));
    if (Status st = db.exec(m.sql); !st) {
      return make_error(st.error().code,
                        fmt::format("migration {} failed: {}", m.name, st.error().message));
    }
    RSIO_TRY_STATUS(db.exec(fmt::format("PRAGMA user_version = {}", m.version)));
    RSIO_TRY_STATUS(txn.commit());
    current = m.version;
  }
  return {};
}

Result<std::string> dump_schema(Database& db) {
  std::string out;
  RSIO_TRY(int version, schema_version(db));
  out += fmt::format("user_version {}\n", version);
  RSIO_TRY(
      Statement * st,
      db.prepare(
          "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name"));
  for (;;) {
    RSIO_TRY(bool row, st->step());
    if (!row) break;
    out += fmt::format("{} {} on {}: {}\n", st->column_text(0), st->column_text(1),
                       st->column_text(2), st->column_text(3));
  }
  RSIO_TRY(Statement * s2, db.prepare("SELECT key, value FROM settings ORDER BY key"));
  for (;;) {
    RSIO_TRY(bool row, s2->step());
    if (!row) break;
    out += fmt::format("setting {}={}\n", s2->column_text(0), s2->column_text(1));
  }
  return out;
}

}  // namespace rsio::db
