#include "db/migrate.h"

#include <fmt/format.h>

#include "common/assert.h"

namespace rsio::db {

Result<int> schema_version(Database& db) {
  RSIO_TRY(Statement * st, db.prepare("PRAGMA user_version"));
  RSIO_TRY(bool row, st->step());
  RSIO_ASSERT(row);
  const int version = static_cast<int>(st->column_int64(0));
  // Run the statement to its end: an unfinished read keeps a lock that a migration's DROP
  // TABLE would trip over.
  RSIO_TRY(bool more, st->step());
  RSIO_ASSERT(!more);
  return version;
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
  if (current == latest) return {};
  // A migration may rebuild a table that others reference (SQLite cannot alter a CHECK
  // constraint in place). Foreign keys are switched off for that, as SQLite documents, and
  // every reference is checked before each commit instead. The pragma only takes effect
  // outside a transaction.
  RSIO_TRY_STATUS(db.exec("PRAGMA foreign_keys = OFF"));
  struct KeysBackOn {
    Database& db;
    ~KeysBackOn() { (void)db.exec("PRAGMA foreign_keys = ON"); }
  } keys_back_on{db};
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    RSIO_ASSERT_MSG(m.version == current + 1, "migrations must be numbered without gaps");
    RSIO_TRY(Transaction txn, Transaction::begin(db));
    if (Status st = db.exec(m.sql); !st) {
      return make_error(st.error().code,
                        fmt::format("migration {} failed: {}", m.name, st.error().message));
    }
    RSIO_TRY(Statement * check, db.prepare("PRAGMA foreign_key_check"));
    RSIO_TRY(bool broken, check->step());
    if (broken)
      return make_error(Errc::kCorrupt,
                        fmt::format("migration {} failed: table {} has a row whose reference to "
                                    "{} is dangling (the database was left at version {})",
                                    m.name, check->column_text(0), check->column_text(2), current));
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
