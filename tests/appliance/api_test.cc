// The management API's request handling without sockets: routing, validation and the
// mapping of errors to HTTP statuses.
#include "appliance/api.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "db/migrate.h"

namespace rsio::appliance {
namespace {

using nlohmann::json;

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/rsio-api-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    db_ = std::move(*db::Database::open(dir_ + "/rsio.db", true));
    ASSERT_TRUE(db::migrate(*db_, db::builtin_migrations()));
    vm_ = std::move(*volmgr::VolumeManager::open(*db_));
    catalog_ = std::move(*Catalog::open(*db_));
    api_ = std::make_unique<Api>(*vm_, *catalog_, ApiInfo{"test", dir_, "rsio", 0, 0});
  }
  void TearDown() override {
    api_.reset();
    catalog_.reset();
    vm_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::pair<int, json> call(const std::string& method, const std::string& target,
                            const std::string& body = "") {
    ApiResponse r = api_->handle({method, target, body});
    return {r.status, json::parse(r.body)};
  }

  std::string dir_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<volmgr::VolumeManager> vm_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Api> api_;
};

TEST_F(ApiTest, CreatesPoolDeviceVolumeClientGrant) {
  EXPECT_EQ(call("POST", "/1.0/pools", R"({"name":"default"})").first, 201);
  auto dev =
      call("POST", "/1.0/devices", json{{"path", dir_ + "/a.img"}, {"size_bytes", 1 << 30}}.dump());
  ASSERT_EQ(dev.first, 201) << dev.second;
  auto vol = call("POST", "/1.0/volumes", R"({"name":"eisberg","size_bytes":1073741824})");
  ASSERT_EQ(vol.first, 507) << "1 GiB does not fit next to the 1 MiB label area";
  vol = call("POST", "/1.0/volumes", R"({"name":"eisberg","size_bytes":536870912})");
  ASSERT_EQ(vol.first, 201) << vol.second;
  EXPECT_EQ(vol.second["blocks"], 1048576);
  EXPECT_EQ(call("POST", "/1.0/clients", R"({"name":"tux","node_key":"Linuxtag"})").second["id"],
            1);
  auto g = call("POST", "/1.0/grants", R"({"volume":"eisberg","client":"tux"})");
  EXPECT_EQ(g.first, 201);
  EXPECT_EQ(g.second["access"], "rw");
  auto list = call("GET", "/1.0/volumes/eisberg");
  EXPECT_EQ(list.second["grants"][0]["client"], "tux");
  EXPECT_EQ(call("DELETE", "/1.0/volumes/eisberg").first, 409);
  EXPECT_EQ(call("DELETE", "/1.0/volumes/eisberg?force=true").first, 200);
  EXPECT_TRUE(call("GET", "/1.0/grants").second["grants"].empty());
}

TEST_F(ApiTest, ErrorsMapToStatusesAndCarryCodes) {
  auto r = call("GET", "/1.0/volumes/nope");
  EXPECT_EQ(r.first, 404);
  EXPECT_EQ(r.second["error"]["code"], "not-found");
  EXPECT_EQ(call("POST", "/1.0/clients", R"({"name":"a"})").first, 400);
  EXPECT_EQ(call("POST", "/1.0/clients", R"({"name":"a","node_key":"k","x":1})").first, 400);
  EXPECT_EQ(call("POST", "/1.0/clients", "{").first, 400);
  EXPECT_EQ(call("GET", "/1.0/nothing").first, 404);
  EXPECT_EQ(call("PATCH", "/1.0/clients").first, 405);
  EXPECT_EQ(call("GET", "/1.0/volumes?detail=maybe").first, 400);
  EXPECT_EQ(call("POST", "/1.0/clients", R"({"name":"a","node_key":"has space"})").first, 400);
}

TEST_F(ApiTest, PercentEncodedNamesAndQueries) {
  EXPECT_EQ(call("POST", "/1.0/clients", R"({"name":"a.b","node_key":"k"})").first, 201);
  EXPECT_EQ(call("GET", "/1.0/clients/a%2Eb").second["name"], "a.b");
  EXPECT_EQ(call("DELETE", "/1.0/devices?path=%2Fno%2Fsuch").first, 404);
}

}  // namespace
}  // namespace rsio::appliance
