// The management API's shared pieces: the error table, routes and the percent codec, and typed
// body fields (a wrong type is a 400 naming the field, never an exception).
#include "mgmt/http.h"

#include <gtest/gtest.h>

namespace rsio::mgmt {
namespace {

TEST(MgmtErrors, EveryCodeHasANameThatMapsBackAndAStatus) {
  for (Errc c : {Errc::kInvalidArgument, Errc::kNotFound, Errc::kAlreadyExists, Errc::kNoSpace,
                 Errc::kInUse, Errc::kIo, Errc::kCorrupt, Errc::kUnsupportedVersion,
                 Errc::kPermissionDenied, Errc::kUnavailable, Errc::kInternal}) {
    EXPECT_EQ(errc_from_name(errc_name(c)), c) << errc_name(c);
    EXPECT_GE(http_status(c), 400);
  }
  EXPECT_EQ(http_status(Errc::kNotFound), 404);
  EXPECT_EQ(http_status(Errc::kInvalidArgument), 400);
  EXPECT_EQ(errc_from_name("no-such-code"), Errc::kInternal);
  const ApiResponse r = api_error_response(Error{Errc::kInUse, "busy"});
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(nlohmann::json::parse(r.body)["error"]["code"], "in-use");
}

TEST(MgmtRoutes, TargetsSplitIntoDecodedPartsAndQuery) {
  const ApiRoute r = parse_api_target("/1.0/volumes/ab%2Fc?force=true&x=%41");
  EXPECT_TRUE(r.versioned);
  EXPECT_EQ(r.parts, (std::vector<std::string>{"volumes", "ab/c"}));
  EXPECT_EQ(r.query.at("force"), "true");
  EXPECT_EQ(r.query.at("x"), "A");
  EXPECT_FALSE(parse_api_target("/2.0/volumes").versioned);
  EXPECT_EQ(percent_decode(url_encode("a b/ü%")), "a b/ü%");
}

TEST(MgmtBody, WrongTypesAndUnknownFieldsAreBadRequestsNamingTheField) {
  auto body = parse_body(R"({"volume": 5, "read_only": "yes", "paths": ["a", 1]})",
                         {"volume", "read_only", "paths"});
  ASSERT_TRUE(body);
  auto s = get_string(*body, "volume", true);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, Errc::kInvalidArgument);
  EXPECT_NE(s.error().message.find("'volume'"), std::string::npos);
  EXPECT_FALSE(get_bool(*body, "read_only"));
  EXPECT_FALSE(get_strings(*body, "paths"));
  EXPECT_FALSE(get_u64(*body, "read_only", false));
  EXPECT_EQ(get_u64(*body, "volume", false).value(), 5u);
  auto missing = get_string(*body, "server", true);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("required"), std::string::npos);
  auto unknown = parse_body(R"({"volme": "x"})", {"volume"});
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("volme"), std::string::npos);
  EXPECT_FALSE(parse_body("[1]", {}));
  EXPECT_FALSE(parse_body("{", {}));
  auto empty = parse_body("", {});
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->is_object());
}

}  // namespace
}  // namespace rsio::mgmt
