#include "common/units.h"

#include <gtest/gtest.h>

namespace rsio {
namespace {

TEST(ParseSize, AcceptsSeedAndAdminSpellings) {
  EXPECT_EQ(*parse_size("1g"), kGiB);
  EXPECT_EQ(*parse_size("1G"), kGiB);
  EXPECT_EQ(*parse_size("1GiB"), kGiB);
  EXPECT_EQ(*parse_size("512M"), 512 * kMiB);
  EXPECT_EQ(*parse_size("1.5T"), kTiB + kTiB / 2);
  EXPECT_EQ(*parse_size("2097152s"), kGiB);
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("4k"), 4096u);
  EXPECT_EQ(*parse_size("0.5k"), 512u);
}

TEST(ParseSize, RejectsBadInputWithReason) {
  for (const char* bad : {"", "abc", "0", "0g", "-1g", "+1g", "1x", "1gb2", "1.", ".", "0.1b",
                          "99999999999T", "18446744073709551616", "16E", "1.0000000000001k"}) {
    auto r = parse_size(bad);
    EXPECT_FALSE(r) << "accepted '" << bad << "'";
    if (!r) {
      EXPECT_EQ(r.error().code, Errc::kInvalidArgument);
      EXPECT_NE(r.error().message.find("invalid size"), std::string::npos);
    }
  }
}

TEST(ParseSize, LargestValuesDoNotOverflow) {
  EXPECT_EQ(*parse_size("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(*parse_size("16383P"), 16383 * 1024 * kTiB);
  EXPECT_FALSE(parse_size("16384P"));
}

TEST(CheckedArithmetic, DetectsOverflow) {
  EXPECT_EQ(*checked_add(1, 2), 3u);
  EXPECT_FALSE(checked_add(UINT64_MAX, 1));
  EXPECT_FALSE(checked_mul(UINT64_MAX / 2 + 1, 2));
  EXPECT_EQ(*round_up(5, 4), 8u);
  EXPECT_EQ(*round_up(8, 4), 8u);
  EXPECT_FALSE(round_up(UINT64_MAX, 4));
}

TEST(FormatSize, ExactValuesAreIntegers) {
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(4 * kMiB), "4 MiB");
  EXPECT_EQ(format_size(kGiB), "1 GiB");
  EXPECT_EQ(format_size(kGiB + kGiB / 2), "1.50 GiB");
}

}  // namespace
}  // namespace rsio
