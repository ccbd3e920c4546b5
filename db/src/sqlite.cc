#include "db/sqlite.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include "common/assert.h"

namespace rsio::db {
namespace {

Errc map_sqlite_code(int rc) {
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Errc::kCorrupt;
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return Errc::kAlreadyExists;
      if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return Errc::kInUse;
      return Errc::kInvalidArgument;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Errc::kInUse;
    case SQLITE_CANTOPEN:
      return Errc::kNotFound;
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return Errc::kPermissionDenied;
    case SQLITE_IOERR:
    case SQLITE_FULL:
      return Errc::kIo;
    default:
      return Errc::kInternal;
  }
}

}  // namespace

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  RSIO_ASSERT_MSG(rc == SQLITE_OK, "sqlite3_bind_int64");
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  int rc = sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                             SQLITE_TRANSIENT);
  RSIO_ASSERT_MSG(rc == SQLITE_OK, "sqlite3_bind_text");
  return *this;
}

Statement& Statement::bind_null(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  RSIO_ASSERT_MSG(rc == SQLITE_OK, "sqlite3_bind_null");
  return *this;
}

Result<bool> Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_->last_error(fmt::format("sql '{}'", sqlite3_sql(stmt_)));
}

Status Statement::run() {
  for (;;) {
    auto row = step();
    if (!row || !*row) {
      // Reset so the statement can be bound and run again without another prepare().
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
      if (!row) return row.error();
      return {};
    }
  }
}

int64_t Statement::column_int64(int col) const { return sqlite3_column_int64(stmt_, col); }

std::string Statement::column_text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  if (p == nullptr) return {};
  return std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

bool Statement::column_is_null(int col) const {
  return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
}

Result<std::unique_ptr<Database>> Database::open(const std::string& path, bool create) {
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (create) flags |= SQLITE_OPEN_CREATE;
  // New database files hold node keys: create them readable by the owner only.
  const mode_t old_mask = ::umask(077);
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  ::umask(old_mask);
  std::unique_ptr<Database> db(new Database(path, raw));
  if (rc != SQLITE_OK) {
    Error e = db->last_error(fmt::format("cannot open database {}", path));
    if (raw == nullptr) e = make_error(Errc::kInternal, "sqlite3_open_v2: out of memory");
    return e;
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, 5000);

  // The first statement that reads the file detects a file that is not a database.
  auto check = [&](std::string_view sql) -> Status {
    Status st = db->exec(sql);
    if (!st && st.error().code == Errc::kCorrupt) {
      return make_error(Errc::kCorrupt,
                        fmt::format("database {} is damaged or not an RSIO database ({}); it "
                                    "was left untouched: restore it from a backup or move it "
                                    "away to start with an empty one",
                                    path, sqlite3_errmsg(raw)));
    }
    return st;
  };
  RSIO_TRY_STATUS(check("PRAGMA journal_mode=WAL"));
  RSIO_TRY_STATUS(check("PRAGMA synchronous=FULL"));
  RSIO_TRY_STATUS(check("PRAGMA foreign_keys=ON"));
  return db;
}

Database::~Database() {
  statements_.clear();  // finalize before closing
  if (db_ != nullptr) sqlite3_close_v2(db_);
}

Status Database::exec(std::string_view sql) {
  std::string s(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return make_error(map_sqlite_code(sqlite3_extended_errcode(db_)),
                      fmt::format("database {}: {}", path_, msg));
  }
  return {};
}

Result<Statement*> Database::prepare(std::string_view sql) {
  auto it = statements_.find(std::string(sql));
  if (it != statements_.end()) {
    sqlite3_reset(it->second->stmt_);
    sqlite3_clear_bindings(it->second->stmt_);
    return it->second.get();
  }
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  if (rc != SQLITE_OK) return last_error(fmt::format("prepare '{}'", sql));
  auto stmt = std::unique_ptr<Statement>(new Statement(this, raw));
  Statement* p = stmt.get();
  statements_.emplace(std::string(sql), std::move(stmt));
  return p;
}

int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

int Database::changes() const { return sqlite3_changes(db_); }

Error Database::last_error(std::string_view what) const {
  int rc = sqlite3_extended_errcode(db_);
  return make_error(map_sqlite_code(rc),
                    fmt::format("{}: {} (database {})", what, sqlite3_errmsg(db_), path_));
}

Result<Transaction> Transaction::begin(Database& db) {
  RSIO_TRY_STATUS(db.exec("BEGIN IMMEDIATE"));
  return Transaction(&db);
}

Transaction::~Transaction() {
  if (db_ != nullptr) (void)db_->exec("ROLLBACK");
}

Status Transaction::commit() {
  RSIO_ASSERT(db_ != nullptr);
  Status st = db_->exec("COMMIT");
  if (st) db_ = nullptr;
  return st;
}

}  // namespace rsio::db
