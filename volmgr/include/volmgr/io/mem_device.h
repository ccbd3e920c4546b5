// An in-memory device with fault injection, for tests of everything above the devices:
// errors at a rate or on a range, delayed and reordered completions, and crashes that
// forget every write not yet made durable.
//
// Thread model: loop thread only, like every Device.
#pragma once

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "volmgr/io/device.h"

namespace rsio::volmgr::io {

struct FaultConfig {
  double read_error_rate = 0;   // probability of -EIO per read
  double write_error_rate = 0;  // per write, discard, write-zeroes
  double flush_error_rate = 0;
  // Reads and writes overlapping [error_start_bytes, error_end_bytes) fail with -EIO.
  uint64_t error_start_bytes = 0;
  uint64_t error_end_bytes = 0;
  bool fail_everything = false;  // a dead device
  // Each completion is delayed by 0..max_delay_turns loop turns, so completions of
  // concurrent operations arrive in random order.
  unsigned max_delay_turns = 0;
};

struct MemDeviceStats {
  uint64_t reads = 0, writes = 0, flushes = 0, discards = 0, write_zeroes = 0;
  uint64_t errors = 0;
  uint64_t read_bytes = 0, written_bytes = 0;
};

class MemDevice final : public Device {
 public:
  MemDevice(Loop& loop, std::string name, uint64_t size_bytes, uint64_t seed);
  ~MemDevice() override;

  void submit(DevOp* op) override;
  uint64_t size_bytes() const override { return current_.size(); }
  const std::string& name() const override { return name_; }

  void set_faults(const FaultConfig& faults) { faults_ = faults; }
  // Power loss: every byte written since the last completed flush and not by a FUA write
  // reverts to its durable content; operations in flight fail with -EIO and change nothing.
  void crash();

  // What a read would return now.
  const std::vector<uint8_t>& contents() const { return current_; }
  const MemDeviceStats& stats() const { return stats_; }
  size_t in_flight() const { return in_flight_; }

 private:
  void complete(DevOp* op, uint64_t generation);
  int execute(DevOp* op);
  bool in_error_range(const DevOp* op) const;

  static constexpr uint64_t kPageBytes = 4096;

  Loop& loop_;
  std::string name_;
  std::vector<uint8_t> current_;
  std::vector<uint8_t> durable_;
  std::set<uint64_t> dirty_pages_;  // pages with writes not yet flushed
  FaultConfig faults_;
  std::mt19937_64 rng_;
  MemDeviceStats stats_;
  uint64_t generation_ = 0;
  size_t in_flight_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace rsio::volmgr::io
