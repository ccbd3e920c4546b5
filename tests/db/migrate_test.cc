#include "db/migrate.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "db/sqlite.h"

namespace rsio::db {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/rsio-db-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::unique_ptr<Database> open_db(const std::string& path) {
  auto db = Database::open(path, true);
  EXPECT_TRUE(db) << (db ? "" : db.error().message);
  return std::move(*db);
}

TEST(Migrations, AreNumberedWithoutGaps) {
  auto all = builtin_migrations();
  ASSERT_FALSE(all.empty());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].version, static_cast<int>(i + 1));
}

TEST(Migrations, FreshInstallEqualsUpgradeFromEveryOlderVersion) {
  TempDir dir;
  auto all = builtin_migrations();
  auto fresh = open_db(dir.file("fresh.db"));
  ASSERT_TRUE(migrate(*fresh, all));
  const std::string expected = *dump_schema(*fresh);
  EXPECT_NE(expected.find("user_version " + std::to_string(all.back().version)), std::string::npos);

  for (size_t stop = 1; stop < all.size(); ++stop) {
    const std::string path = dir.file("upgrade-" + std::to_string(stop) + ".db");
    {
      auto db = open_db(path);
      ASSERT_TRUE(migrate(*db, all.subspan(0, stop)));  // an older release's database
    }
    auto db = open_db(path);
    ASSERT_TRUE(migrate(*db, all));
    EXPECT_EQ(*dump_schema(*db), expected) << "upgrading from version " << stop;
  }
}

// The runner itself, over a longer chain than this release ships: the builtin migrations
// followed by two later ones that change existing tables. Data written by an older release
// survives the upgrade.
TEST(Migrations, UpgradeChainKeepsDataAndMatchesFreshInstall) {
  TempDir dir;
  std::vector<Migration> chain(builtin_migrations().begin(), builtin_migrations().end());
  const int base = chain.back().version;
  chain.push_back({base + 1, "test_add_column.sql",
                   "ALTER TABLE clients ADD COLUMN platform TEXT NOT NULL DEFAULT '';"});
  chain.push_back({base + 2, "test_add_table.sql",
                   "CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL) STRICT;"
                   "CREATE INDEX audit_what ON audit (what);"});
  auto fresh = open_db(dir.file("fresh.db"));
  ASSERT_TRUE(migrate(*fresh, chain));
  const std::string expected = *dump_schema(*fresh);
  for (size_t stop = 1; stop < chain.size(); ++stop) {
    const std::string path = dir.file("chain-" + std::to_string(stop) + ".db");
    {
      auto db = open_db(path);
      ASSERT_TRUE(migrate(*db, std::span(chain).subspan(0, stop)));
      ASSERT_TRUE(db->exec(
          "INSERT INTO clients (id, name, node_key, created_ms) VALUES (3, 'tux', 'Linuxtag', 1)"));
    }
    auto db = open_db(path);
    ASSERT_TRUE(migrate(*db, chain));
    EXPECT_EQ(*dump_schema(*db), expected) << "upgrading from version " << stop;
    auto* q = *db->prepare("SELECT name, node_key FROM clients WHERE id = 3");
    ASSERT_TRUE(*q->step());
    EXPECT_EQ(q->column_text(0), "tux");
    EXPECT_EQ(q->column_text(1), "Linuxtag");
  }
}

TEST(Migrations, MigratingTwiceChangesNothing) {
  TempDir dir;
  auto db = open_db(dir.file("a.db"));
  ASSERT_TRUE(migrate(*db, builtin_migrations()));
  const std::string before = *dump_schema(*db);
  ASSERT_TRUE(migrate(*db, builtin_migrations()));
  EXPECT_EQ(*dump_schema(*db), before);
}

TEST(Migrations, NewerDatabaseIsRefusedAndLeftUntouched) {
  TempDir dir;
  auto db = open_db(dir.file("newer.db"));
  ASSERT_TRUE(migrate(*db, builtin_migrations()));
  const int newer = builtin_migrations().back().version + 1;
  ASSERT_TRUE(db->exec("PRAGMA user_version = " + std::to_string(newer)));
  const std::string before = *dump_schema(*db);
  auto st = migrate(*db, builtin_migrations());
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, Errc::kUnsupportedVersion);
  EXPECT_NE(st.error().message.find("newer"), std::string::npos);
  EXPECT_EQ(*dump_schema(*db), before);
}

TEST(Migrations, FailedMigrationRollsBackCompletely) {
  TempDir dir;
  auto db = open_db(dir.file("broken.db"));
  std::vector<Migration> ms(builtin_migrations().begin(), builtin_migrations().end());
  ms.push_back({static_cast<int>(ms.size() + 1), "9999_broken.sql",
                "CREATE TABLE half_done (x INTEGER) STRICT; THIS IS NOT SQL;"});
  ASSERT_TRUE(migrate(*db, builtin_migrations()));
  auto st = migrate(*db, ms);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message.find("9999_broken.sql"), std::string::npos);
  EXPECT_EQ(*schema_version(*db), builtin_migrations().back().version);
  auto* q = *db->prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'half_done'");
  ASSERT_TRUE(*q->step());
  EXPECT_EQ(q->column_int64(0), 0);
}

TEST(Database, FileThatIsNotADatabaseIsRefusedAndNotOverwritten) {
  TempDir dir;
  const std::string path = dir.file("garbage.db");
  const std::string garbage(8192, 'x');
  std::ofstream(path) << garbage;
  auto db = Database::open(path, true);
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, Errc::kCorrupt);
  EXPECT_NE(db.error().message.find("left untouched"), std::string::npos);
  std::ifstream in(path);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, garbage);
}

TEST(Database, SchemaEnforcesStrictTypesAndConstraints) {
  TempDir dir;
  auto db = open_db(dir.file("strict.db"));
  ASSERT_TRUE(migrate(*db, builtin_migrations()));
  // STRICT: text into an INTEGER column fails.
  EXPECT_FALSE(
      db->exec("INSERT INTO clients (id, name, node_key, created_ms) VALUES ('x', 'a', 'k', 0)"));
  // Foreign keys are enforced.
  EXPECT_FALSE(db->exec(
      "INSERT INTO grants (volume_id, client_id, access, created_ms) VALUES (1, 1, 'rw', 0)"));
  // Journal mode and durability settings.
  auto* q = *db->prepare("PRAGMA journal_mode");
  ASSERT_TRUE(*q->step());
  EXPECT_EQ(q->column_text(0), "wal");
  auto* s = *db->prepare("PRAGMA synchronous");
  ASSERT_TRUE(*s->step());
  EXPECT_EQ(s->column_int64(0), 2);  // FULL
}

TEST(Transaction, RollsBackUnlessCommitted) {
  TempDir dir;
  auto db = open_db(dir.file("txn.db"));
  ASSERT_TRUE(migrate(*db, builtin_migrations()));
  {
    auto txn = Transaction::begin(*db);
    ASSERT_TRUE(txn);
    ASSERT_TRUE(db->exec("INSERT INTO settings (key, value) VALUES ('t', '1')"));
  }
  auto* q = *db->prepare("SELECT count(*) FROM settings WHERE key = 't'");
  ASSERT_TRUE(*q->step());
  EXPECT_EQ(q->column_int64(0), 0);
}

}  // namespace
}  // namespace rsio::db
