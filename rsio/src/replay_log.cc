#include "rsio/replay_log.h"

#include "common/assert.h"

namespace rsio::client {

void ReplayLog::acked(wire::Opcode op, bool fua, uint64_t offset_bytes, uint32_t length_bytes,
                      const void* data) {
  RSIO_ASSERT(wire::is_write_class(static_cast<uint8_t>(op)));
  // Durable already, and nothing older could be replayed over it.
  if (fua && entries_.empty()) return;
  Entry e;
  e.op = op;
  e.fua = fua;
  e.offset_bytes = offset_bytes;
  e.length_bytes = length_bytes;
  if (op == wire::Opcode::kWrite) {
    const auto* bytes = static_cast<const uint8_t*>(data);
    e.data.assign(bytes, bytes + length_bytes);  // one pass: no zero-fill before the copy
  }
  e.seq = ++last_seq_;
  bytes_ += e.data.size() + kEntryOverheadBytes;
  entries_.push_back(std::move(e));
}

void ReplayLog::flushed(uint64_t mark) {
  while (!entries_.empty() && entries_.front().seq <= mark) {
    bytes_ -= entries_.front().data.size() + kEntryOverheadBytes;
    entries_.pop_front();
  }
}

void ReplayLog::clear() {
  entries_.clear();
  bytes_ = 0;
}

std::optional<size_t> ReplayCursor::next(const std::deque<ReplayLog::Entry>& entries) {
  RSIO_ASSERT(entries.size() == count_);
  if (next_ == count_ || in_flight_.size() >= in_flight_max_) return std::nullopt;
  const ReplayLog::Entry& e = entries[next_];
  const uint64_t begin = e.offset_bytes, end = e.offset_bytes + e.length_bytes;
  // In-flight ranges never overlap each other, so the neighbours on both sides decide.
  auto it = in_flight_.upper_bound(begin);
  if (it != in_flight_.end() && it->first < end) return std::nullopt;
  if (it != in_flight_.begin() && std::prev(it)->second > begin) return std::nullopt;
  in_flight_.emplace(begin, end);
  return next_++;
}

void ReplayCursor::done(const ReplayLog::Entry& entry) {
  const size_t erased = in_flight_.erase(entry.offset_bytes);
  RSIO_ASSERT(erased == 1);
}

}  // namespace rsio::client
