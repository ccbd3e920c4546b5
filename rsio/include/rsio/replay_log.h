// The client's record of writes a server instance acknowledged but has not yet made durable
// (docs/wire-protocol.md §5.5): what the client must send again, in order, when it finds
// itself talking to a different instance before a FLUSH covered them.
//
// Pure bookkeeping: no I/O, no threads, no clock. The client library owns one ReplayLog per
// open volume and calls it from its I/O thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "rsio/wire.h"

namespace rsio::client {

class ReplayLog {
 public:
  struct Entry {
    wire::Opcode op = wire::Opcode::kWrite;  // kWrite, kDiscard or kWriteZeroes
    bool fua = false;
    uint64_t offset_bytes = 0;
    uint32_t length_bytes = 0;
    std::vector<uint8_t> data;  // kWrite: the bytes written; empty otherwise
    uint64_t seq = 0;           // order of acknowledgement, from 1
  };
  // What an entry costs besides its data (counted against the bound).
  static constexpr uint64_t kEntryOverheadBytes = 96;

  // Records a write-class request the current instance acknowledged. `data` holds
  // `length_bytes` bytes for kWrite and is copied; it is ignored otherwise.
  // A FUA request is durable by itself and is recorded only when older entries exist: they
  // would otherwise be replayed over it.
  // REQUIRES: wire::is_write_class(op).
  void acked(wire::Opcode op, bool fua, uint64_t offset_bytes, uint32_t length_bytes,
             const void* data);

  // The mark of a FLUSH sent now: it covers every entry recorded so far.
  uint64_t mark() const { return last_seq_; }
  // A FLUSH sent at `mark` completed in the instance that acknowledged the entries: drops
  // every entry up to `mark`.
  void flushed(uint64_t mark);
  void clear();

  const std::deque<Entry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }
  // Retained bytes: data plus kEntryOverheadBytes per entry.
  uint64_t bytes() const { return bytes_; }

 private:
  std::deque<Entry> entries_;
  uint64_t last_seq_ = 0;
  uint64_t bytes_ = 0;
};

// Sends a ReplayLog's entries again in an order that gives the same result as the original
// order: entries go out in log order, several at once, but an entry that overlaps one still
// in flight waits until that one completed (the server may execute concurrent requests in
// any order). The log must not change while a replay runs.
class ReplayCursor {
 public:
  ReplayCursor(size_t count, size_t in_flight_max) : count_(count), in_flight_max_(in_flight_max) {}

  // The index of the next entry that may be sent now, or nothing (wait for done()).
  std::optional<size_t> next(const std::deque<ReplayLog::Entry>& entries);
  // Entry `index` (returned by next()) completed.
  void done(const ReplayLog::Entry& entry);
  // Every entry was sent and completed.
  bool finished() const { return next_ == count_ && in_flight_.empty(); }
  size_t in_flight() const { return in_flight_.size(); }

 private:
  size_t count_;
  size_t in_flight_max_;
  size_t next_ = 0;
  std::map<uint64_t, uint64_t> in_flight_;  // offset -> end of the entries in flight
};

}  // namespace rsio::client
