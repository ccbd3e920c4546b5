// Thread model: loop thread only (see mem_device.h).
#include "volmgr/io/mem_device.h"

#include <algorithm>
#include <cstring>

namespace rsio::volmgr::io {

MemDevice::MemDevice(Loop& loop, std::string name, uint64_t size_bytes, uint64_t seed)
    : loop_(loop),
      name_(std::move(name)),
      current_(size_bytes, 0),
      durable_(size_bytes, 0),
      rng_(seed) {}

MemDevice::~MemDevice() { *alive_ = false; }

void MemDevice::submit(DevOp* op) {
  op->device = this;
  ++in_flight_;
  const uint64_t generation = generation_;
  unsigned turns = 0;
  if (faults_.max_delay_turns > 0)
    turns = static_cast<unsigned>(rng_() % (faults_.max_delay_turns + 1));
  // Completions always arrive from the loop, never inside submit().
  struct Step {
    static void schedule(MemDevice* self, std::shared_ptr<bool> alive, DevOp* op, uint64_t gen,
                         unsigned left) {
      self->loop_.defer([self, alive, op, gen, left] {
        if (!*alive) return;
        if (left > 0) return schedule(self, alive, op, gen, left - 1);
        self->complete(op, gen);
      });
    }
  };
  Step::schedule(this, alive_, op, generation, turns);
}

bool MemDevice::in_error_range(const DevOp* op) const {
  if (faults_.error_end_bytes <= faults_.error_start_bytes) return false;
  if (op->op == Op::kFlush) return false;
  return op->offset_bytes < faults_.error_end_bytes &&
         op->offset_bytes + op->length_bytes > faults_.error_start_bytes;
}

void MemDevice::complete(DevOp* op, uint64_t generation) {
  --in_flight_;
  int res;
  if (generation != generation_) {
    res = -EIO;  // lost in a crash
  } else {
    res = execute(op);
  }
  if (res < 0) ++stats_.errors;
  op->done(op, res);
}

int MemDevice::execute(DevOp* op) {
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  const bool is_read = op->op == Op::kRead;
  const bool is_flush = op->op == Op::kFlush;
  const double rate = is_read    ? faults_.read_error_rate
                      : is_flush ? faults_.flush_error_rate
                                 : faults_.write_error_rate;
  if (faults_.fail_everything || in_error_range(op) || (rate > 0 && coin(rng_) < rate)) return -EIO;

  if (is_flush) {
    ++stats_.flushes;
    for (uint64_t page : dirty_pages_) {
      const uint64_t start = page * kPageBytes;
      const uint64_t end = std::min<uint64_t>(start + kPageBytes, current_.size());
      std::memcpy(durable_.data() + start, current_.data() + start, end - start);
    }
    dirty_pages_.clear();
    return 0;
  }
  if (op->offset_bytes > current_.size() || op->length_bytes > current_.size() - op->offset_bytes)
    return -EIO;  // beyond the end of the device

  auto mark = [&](uint64_t off, uint64_t len) {
    if (len == 0) return;
    if (op->fua) {
      std::memcpy(durable_.data() + off, current_.data() + off, len);
    } else {
      for (uint64_t p = off / kPageBytes; p <= (off + len - 1) / kPageBytes; ++p)
        dirty_pages_.insert(p);
    }
  };
  switch (op->op) {
    case Op::kRead: {
      uint64_t off = op->offset_bytes;
      for (int i = 0; i < op->iov_count; ++i) {
        std::memcpy(op->iov[i].iov_base, current_.data() + off, op->iov[i].iov_len);
        off += op->iov[i].iov_len;
      }
      ++stats_.reads;
      stats_.read_bytes += op->length_bytes;
      return static_cast<int>(op->length_bytes);
    }
    case Op::kWrite: {
      uint64_t off = op->offset_bytes;
      for (int i = 0; i < op->iov_count; ++i) {
        std::memcpy(current_.data() + off, op->iov[i].iov_base, op->iov[i].iov_len);
        off += op->iov[i].iov_len;
      }
      mark(op->offset_bytes, op->length_bytes);
      ++stats_.writes;
      stats_.written_bytes += op->length_bytes;
      return static_cast<int>(op->length_bytes);
    }
    case Op::kDiscard:
    case Op::kWriteZeroes:
      std::memset(current_.data() + op->offset_bytes, 0, op->length_bytes);
      mark(op->offset_bytes, op->length_bytes);
      ++(op->op == Op::kDiscard ? stats_.discards : stats_.write_zeroes);
      return 0;
    case Op::kFlush:
      break;
  }
  return -EINVAL;
}

void MemDevice::crash() {
  ++generation_;
  for (uint64_t page : dirty_pages_) {
    const uint64_t start = page * kPageBytes;
    const uint64_t end = std::min<uint64_t>(start + kPageBytes, current_.size());
    std::memcpy(current_.data() + start, durable_.data() + start, end - start);
  }
  dirty_pages_.clear();
}

}  // namespace rsio::volmgr::io
