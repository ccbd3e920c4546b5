#include "volmgr/label.h"

#include <gtest/gtest.h>

namespace rsio::volmgr {
namespace {

PvLabel sample() {
  PvLabel l;
  l.pv_uuid = Uuid::random();
  l.pool_uuid = Uuid::random();
  l.generation = 7;
  l.pv_size_bytes = 10ULL << 30;
  l.data_offset_bytes = 1 << 20;
  l.extent_size_bytes = 4 << 20;
  l.created_ms = 1700000000000;
  l.pool_name = "default";
  return l;
}

TEST(Label, RoundTrips) {
  const PvLabel l = sample();
  const LabelBlock b = encode_label(l);
  auto d = decode_label(b);
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ(**d, l);
}

TEST(Label, BlankBlockHasNoLabel) {
  LabelBlock b{};
  auto d = decode_label(b);
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->has_value());
}

TEST(Label, EveryFlippedByteIsDetected) {
  const LabelBlock good = encode_label(sample());
  // Flip each byte outside the magic (which would read as "no label"): the checksum or the
  // field checks must reject the block.
  for (size_t i = 8; i < kLabelSizeBytes; ++i) {
    LabelBlock b = good;
    b[i] ^= std::byte{0x5a};
    auto d = decode_label(b);
    ASSERT_FALSE(d) << "corruption at byte " << i << " not detected";
    EXPECT_EQ(d.error().code, Errc::kCorrupt);
  }
}

TEST(Label, NewerFormatVersionIsReported) {
  LabelBlock b = encode_label(sample());
  b[8] = std::byte{2};  // version field
  // Re-seal the checksum so only the version differs.
  const uint32_t crc = crc32c(std::span(b.data(), kLabelSizeBytes - 4));
  for (int i = 0; i < 4; ++i)
    b[kLabelSizeBytes - 4 + i] = static_cast<std::byte>((crc >> (8 * i)) & 0xff);
  auto d = decode_label(b);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, Errc::kUnsupportedVersion);
}

TEST(Label, ShortBlockIsCorrupt) {
  std::array<std::byte, 100> small{};
  auto d = decode_label(small);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, Errc::kCorrupt);
}

TEST(Crc32c, MatchesKnownValue) {
  // The standard check value of CRC-32C for "123456789".
  const char* s = "123456789";
  EXPECT_EQ(crc32c(std::as_bytes(std::span(s, 9))), 0xE3069283u);
}

}  // namespace
}  // namespace rsio::volmgr
