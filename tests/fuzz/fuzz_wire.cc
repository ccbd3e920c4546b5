// Fuzz target: every decoder of the wire codec, on arbitrary bytes. Built with libFuzzer by
// the clang "fuzz" preset; under g++ a replay driver runs it over the committed corpus.
#include <cstddef>
#include <cstdint>
#include <span>

#include "rsio/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace rsio::wire;
  std::span<const uint8_t> in(data, size);
  if (size >= kRequestHeaderBytes) {
    const RequestHeader h = decode_request_header(data);
    (void)max_request_payload(h.opcode, (h.flags & 1) != 0);
    // Validation with sizes taken from the input too.
    const uint64_t vol = size >= 40 ? decode_request_header(data + 8).offset : 1 << 20;
    (void)validate_io(h, vol, 512, (h.flags & 2) != 0);
    (void)validate_io(h, vol, 4096, false);
    in = in.subspan(kRequestHeaderBytes);
  }
  if (size >= kReplyHeaderBytes) (void)decode_reply_header(data);
  (void)decode_hello(in);
  (void)decode_hello_reply(in);
  (void)decode_auth_ok(in);
  (void)decode_list(in);
  (void)decode_open(in);
  (void)decode_open_reply(in);
  (void)decode_notify(1, in);
  // Whatever decodes must encode to the same bytes.
  if (auto hello = decode_hello(in)) {
    std::vector<uint8_t> out;
    encode_payload(*hello, out);
    if (out.size() != in.size() || !std::equal(out.begin(), out.end(), in.begin()))
      __builtin_trap();
  }
  if (auto list = decode_list(in)) {
    std::vector<uint8_t> out;
    encode_list(*list, out);
    if (out.size() != in.size()) __builtin_trap();
  }
  return 0;
}
