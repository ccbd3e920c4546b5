// Small RAII layer over SQLite: a connection with a statement cache, prepared statements
// with bound parameters, and BEGIN IMMEDIATE transactions that roll back unless committed.
//
// Thread-safety: a Database and its statements belong to one thread at a time (rsiod runs
// all SQLite work on its metadata thread).
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/result.h"

namespace rsio::db {

class Database;

// A prepared statement. Obtained from Database::prepare(), which hands it out reset and with
// its bindings cleared. Column and parameter indexes: parameters from 1, columns from 0.
class Statement {
 public:
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Statement& bind(int index, int64_t value);
  Statement& bind(int index, std::string_view value);
  Statement& bind_null(int index);

  // Binds every argument in order, starting at parameter 1.
  template <class... Args>
  Statement& bind_all(const Args&... args) {
    int i = 0;
    (bind_one(++i, args), ...);
    return *this;
  }

  // Advances: true when a row is available, false when done. Errors: kCorrupt for a damaged
  // database file, kAlreadyExists for UNIQUE/PRIMARY KEY violations, kInUse for foreign key
  // violations and a busy database, kInternal otherwise.
  Result<bool> step();
  // Runs a statement to completion, discarding rows, then resets it for reuse.
  Status run();

  int column_count() const { return sqlite3_column_count(stmt_); }
  int64_t column_int64(int col) const;
  std::string column_text(int col) const;
  bool column_is_null(int col) const;

 private:
  friend class Database;
  Statement(Database* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  void bind_one(int i, int64_t v) { bind(i, v); }
  void bind_one(int i, int v) { bind(i, static_cast<int64_t>(v)); }
  void bind_one(int i, uint64_t v) { bind(i, static_cast<int64_t>(v)); }
  void bind_one(int i, uint32_t v) { bind(i, static_cast<int64_t>(v)); }
  void bind_one(int i, std::string_view v) { bind(i, v); }
  void bind_one(int i, const std::string& v) { bind(i, std::string_view(v)); }
  void bind_one(int i, const char* v) { bind(i, std::string_view(v)); }
  void bind_one(int i, std::nullopt_t) { bind_null(i); }

  Database* db_;
  sqlite3_stmt* stmt_;
};

class Database {
 public:
  // Opens (creating when `create` is true) the database at `path` with WAL journaling,
  // synchronous=FULL and foreign keys on, and checks that it is a readable SQLite file.
  // Errors: kNotFound (missing and !create), kCorrupt (not a database or damaged),
  // kPermissionDenied, kInUse (locked by another process), kIo.
  static Result<std::unique_ptr<Database>> open(const std::string& path, bool create);

  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  // Executes one or more statements without parameters (DDL, PRAGMA).
  Status exec(std::string_view sql);

  // Returns the cached statement for `sql`, reset and with bindings cleared. The reference
  // stays valid for the Database's lifetime; do not hold it across another prepare() of the
  // same SQL.
  Result<Statement*> prepare(std::string_view sql);

  int64_t last_insert_rowid() const;
  int changes() const;
  const std::string& path() const { return path_; }
  sqlite3* handle() { return db_; }

  // Maps the connection's current error to an Error, prefixed with `what`.
  Error last_error(std::string_view what) const;

 private:
  Database(std::string path, sqlite3* db) : path_(std::move(path)), db_(db) {}

  std::string path_;
  sqlite3* db_;
  std::unordered_map<std::string, std::unique_ptr<Statement>> statements_;
};

// BEGIN IMMEDIATE ... COMMIT. The destructor rolls back unless commit() succeeded, so an
// early return on error leaves the database unchanged.
class Transaction {
 public:
  static Result<Transaction> begin(Database& db);
  Transaction(Transaction&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();

  Status commit();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_;
};

}  // namespace rsio::db
