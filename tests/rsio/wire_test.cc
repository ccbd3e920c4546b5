// The wire codec: round trips, and decoders that refuse truncated or inconsistent input.
#include "rsio/wire.h"

#include <gtest/gtest.h>

#include <random>

#include "rsio/address.h"
#include "rsio/auth.h"

namespace rsio::wire {
namespace {

TEST(Wire, HeadersRoundTripLittleEndian) {
  RequestHeader h;
  h.opcode = 0x21;
  h.flags = kFlagFua;
  h.handle = 0x01020304;
  h.tag = 0x1122334455667788ULL;
  h.offset = 0x0102030405060708ULL;
  h.length = 4096;
  h.payload_len = 4096;
  uint8_t b[kRequestHeaderBytes];
  encode(h, b);
  EXPECT_EQ(b[0], 0x21);
  EXPECT_EQ(b[4], 0x04);  // little-endian handle
  EXPECT_EQ(b[8], 0x88);  // little-endian tag
  const RequestHeader d = decode_request_header(b);
  EXPECT_EQ(d.handle, h.handle);
  EXPECT_EQ(d.tag, h.tag);
  EXPECT_EQ(d.offset, h.offset);
  EXPECT_EQ(d.length, h.length);
  EXPECT_EQ(d.payload_len, h.payload_len);
  ReplyHeader r;
  r.opcode = 0x20;
  r.status = 5;
  r.tag = 99;
  r.payload_len = 512;
  uint8_t rb[kReplyHeaderBytes];
  encode(r, rb);
  const ReplyHeader rd = decode_reply_header(rb);
  EXPECT_EQ(rd.status, 5u);
  EXPECT_EQ(rd.tag, 99u);
  EXPECT_EQ(rd.payload_len, 512u);
}

TEST(Wire, HelloRoundTripAndEveryTruncationRefused) {
  Hello h;
  h.node_name = "tux";
  h.platform = "Linux 6.1  LP64   little endian";
  h.session_id = 42;
  h.mode = 1;
  h.client_nonce[0] = 7;
  std::vector<uint8_t> p;
  encode_payload(h, p);
  auto d = decode_hello(p);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->node_name, "tux");
  EXPECT_EQ(d->platform, h.platform);
  EXPECT_EQ(d->session_id, 42u);
  EXPECT_EQ(d->client_nonce[0], 7);
  for (size_t n = 0; n < p.size(); ++n) EXPECT_FALSE(decode_hello(std::span(p.data(), n))) << n;
  p.push_back(0);
  EXPECT_FALSE(decode_hello(p)) << "trailing bytes";
}

TEST(Wire, HelloReplyCarriesTheInstanceFromVersionTwoOn) {
  HelloReply r;
  r.server_nonce[3] = 9;
  for (size_t i = 0; i < r.instance.size(); ++i) r.instance[i] = static_cast<uint8_t>(i + 1);
  std::vector<uint8_t> p;
  encode_payload(r, p);
  EXPECT_EQ(p.size(), 8 + kNonceBytes + kInstanceBytes);
  auto d = decode_hello_reply(p);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->version, 2);
  EXPECT_EQ(d->instance, r.instance);
  EXPECT_EQ(d->server_nonce[3], 9);
  for (size_t n = 0; n < p.size(); ++n) EXPECT_FALSE(decode_hello_reply(std::span(p.data(), n)));
  // Version 1: no instance, which reads as unknown.
  r.version = 1;
  p.clear();
  encode_payload(r, p);
  EXPECT_EQ(p.size(), 8 + kNonceBytes);
  d = decode_hello_reply(p);
  ASSERT_TRUE(d);
  EXPECT_FALSE(instance_known(d->instance));
  p.push_back(0);
  EXPECT_FALSE(decode_hello_reply(p)) << "trailing bytes";
  // The hex form rsclientd saves.
  EXPECT_EQ(instance_hex(r.instance), "0102030405060708090a0b0c0d0e0f10");
  EXPECT_EQ(parse_instance_hex("0102030405060708090a0b0c0d0e0f10"), r.instance);
  EXPECT_FALSE(parse_instance_hex("0102"));
  EXPECT_FALSE(parse_instance_hex("zz02030405060708090a0b0c0d0e0f10"));
}

TEST(Wire, ListRefusesCountsThePayloadCannotHold) {
  std::vector<VolumeEntry> vols = {{1 << 20, 512, false, "a"}, {2 << 20, 512, true, "bb"}};
  std::vector<uint8_t> p;
  encode_list(vols, p);
  auto d = decode_list(p);
  ASSERT_TRUE(d);
  ASSERT_EQ(d->size(), 2u);
  EXPECT_EQ((*d)[1].name, "bb");
  EXPECT_TRUE((*d)[1].read_only);
  p[0] = 0xff;
  p[1] = 0xff;
  p[2] = 0xff;
  p[3] = 0xff;
  EXPECT_FALSE(decode_list(p));
}

TEST(Wire, ValidateIoFollowsTheSpecOrder) {
  RequestHeader h;
  h.opcode = static_cast<uint8_t>(Opcode::kWrite);
  h.offset = 4096;
  h.length = 4096;
  h.payload_len = 4096;
  EXPECT_EQ(validate_io(h, 1 << 20, 512, false), StatusCode::kOk);
  EXPECT_EQ(validate_io(h, 1 << 20, 512, true), StatusCode::kReadOnly);
  h.offset = UINT64_MAX - 4095;
  EXPECT_EQ(validate_io(h, UINT64_MAX, 512, false), StatusCode::kOutOfRange);
  h.offset = 0;
  h.payload_len = 0;
  EXPECT_EQ(validate_io(h, 1 << 20, 512, false), StatusCode::kInvalid);
}

TEST(Auth, ProofsDependOnKeyTranscriptAndDirection) {
  auth::Transcript t1;
  t1.add(std::vector<uint8_t>{1, 2, 3});
  const auto d1 = t1.finish();
  auth::Transcript t2;
  t2.add(std::vector<uint8_t>{1, 2, 4});
  const auto d2 = t2.finish();
  const auto c1 = auth::client_proof("key", d1);
  EXPECT_EQ(c1, auth::client_proof("key", d1));
  EXPECT_NE(c1, auth::client_proof("kez", d1));
  EXPECT_NE(c1, auth::client_proof("key", d2));
  EXPECT_NE(c1, auth::server_proof("key", d1, auth::Digest{}));
  EXPECT_TRUE(auth::equal(c1, auth::client_proof("key", d1)));
  auto other = c1;
  other[31] ^= 1;
  EXPECT_FALSE(auth::equal(c1, other));
}

}  // namespace
}  // namespace rsio::wire

namespace rsio {
namespace {

TEST(Address, SplitsHostAndPortForBothEnds) {
  auto a = split_host_port("10.0.1.1:5000", "server");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "10.0.1.1");
  EXPECT_EQ(a->port, 5000);
  a = split_host_port("[fd00::1]:7", "server");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "fd00::1");
  EXPECT_EQ(a->port, 7);
  a = split_host_port(":5000", "listen address");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "");
  a = split_host_port("host", "server");
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->port.has_value());
  for (const char* bad : {"fd00::1:5000", "[fd00::1", "[::1]x", "h:70000", "h:5x", "h:"})
    EXPECT_FALSE(split_host_port(bad, "server")) << bad;
}

}  // namespace
}  // namespace rsio
