#include "common/names.h"

#include <gtest/gtest.h>

#include <string>

namespace rsio {
namespace {

TEST(ValidateName, AcceptsOrdinaryNames) {
  for (const char* ok : {"eisberg", "tux", "vol-01", "a.b_c+d", "X"})
    EXPECT_TRUE(validate_name(ok, "volume name")) << ok;
  EXPECT_TRUE(validate_name(std::string(64, 'a'), "volume name"));
}

TEST(ValidateName, RejectsSlashSpaceLengthAndOptionLookalikes) {
  for (std::string bad :
       {std::string(), std::string("a/b"), std::string("a b"), std::string(65, 'a'),
        std::string("-rf"), std::string(".hidden"), std::string("a\nb"), std::string("\xc3\xa4")}) {
    auto st = validate_name(bad, "volume name");
    EXPECT_FALSE(st) << bad;
    if (!st) {
      EXPECT_NE(st.error().message.find("invalid volume name"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace rsio
