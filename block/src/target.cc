#include "block/target.h"

namespace rsio::block {

std::string_view op_name(Op op) {
  switch (op) {
    case Op::kRead:
      return "read";
    case Op::kWrite:
      return "write";
    case Op::kFlush:
      return "flush";
    case Op::kDiscard:
      return "discard";
    case Op::kWriteZeroes:
      return "write-zeroes";
  }
  return "?";
}

std::string_view io_status_name(IoStatus s) {
  switch (s) {
    case IoStatus::kOk:
      return "ok";
    case IoStatus::kIoError:
      return "io-error";
    case IoStatus::kOutOfRange:
      return "out-of-range";
    case IoStatus::kReadOnly:
      return "read-only";
    case IoStatus::kInvalid:
      return "invalid";
    case IoStatus::kUnavailable:
      return "unavailable";
  }
  return "?";
}

}  // namespace rsio::block
