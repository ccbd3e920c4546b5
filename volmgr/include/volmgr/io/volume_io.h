// The volume I/O engine: executes byte-addressed requests on an open volume of any layout
// (linear/concatenated, striped, mirrored) by splitting them into operations on the
// volume's devices and joining their completions.
//
// Thread model: a VolumeIo lives on one Loop's thread. submit() and every other member are
// called on that thread; completions run there too and must not block. Code on another
// thread (an Asio executor, a protocol session) hands requests over with Loop::post() and
// gets results back by posting from the completion callback to its own executor. Nothing
// here blocks: device I/O goes through io_uring, bookkeeping is in memory.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "volmgr/io/device.h"
#include "volmgr/model.h"

namespace rsio::volmgr::io {

using block::IoRequest;
using block::IoStatus;
using block::io_status_name;

struct VolumeIoStats {
  uint64_t requests = 0, errors = 0, retried_reads = 0, split_ops = 0;
  uint64_t resyncs = 0, resync_regions = 0;  // completed resyncs, regions they copied
};

// Receives state changes the engine decides on, to persist them (the metadata thread owns
// the database: implementations post there). Called on the loop thread.
class VolumeEvents {
 public:
  virtual ~VolumeEvents() = default;
  virtual void leg_faulty(int64_t volume_id, uint32_t leg, const std::string& reason) = 0;
  // A resyncing leg has every region copied and serves reads again.
  virtual void leg_in_sync(int64_t /*volume_id*/, uint32_t /*leg*/) {}
};

// The write-intent bitmap of a mirrored volume: one bit per region, set durably before a
// write to the region is issued and cleared lazily once every leg holds the region's data
// durably, so after a crash (or while a leg is away) only marked regions need copying.
// docs/io-engine.md describes the format.
struct WriteIntentOptions {
  Device* device = nullptr;            // holds the bits from byte 0; null: no bitmap
  uint64_t region_bytes = 2ULL << 20;  // power of two
  std::vector<uint8_t> initial_bits;   // the bitmap as read at open (empty: all clear)
};

struct ScrubProgress {
  bool active = false;
  uint64_t regions_total = 0;
  uint64_t regions_done = 0;
  uint64_t mismatched_regions = 0;
  std::vector<uint64_t> mismatches;  // offsets of the first differing regions (at most 64)
  uint64_t region_bytes = 0;
};

struct ResyncProgress {
  bool active = false;
  uint64_t regions_total = 0;
  uint64_t regions_done = 0;
  uint64_t bytes_done = 0;
  double rate_bytes_per_s = 0;
  double eta_s = 0;
};

struct VolumeIoOptions {
  bool read_only = false;
  VolumeEvents* events = nullptr;  // may be null
  // Mirror legs already known to be faulty (persisted earlier).
  std::vector<LegState> leg_states;
  WriteIntentOptions bitmap;  // mirrored volumes
  // Resync copies at most this many bytes per second (0: no limit).
  uint64_t resync_rate_bytes_per_s = 0;
};

// Finds the Device of a PV, or nullptr when the PV is missing.
using DeviceLookup = std::function<Device*(int64_t pv_id)>;

class VolumeIo final : public block::BlockTarget {
 public:
  // Builds the volume's map from `info` (segments and areas) and the PV data offsets.
  // Errors: kInvalidArgument for a malformed mapping.
  static Result<std::unique_ptr<VolumeIo>> open(Loop& loop, const VolumeInfo& info,
                                                uint64_t extent_size_bytes,
                                                const std::vector<PvInfo>& pvs,
                                                const DeviceLookup& lookup,
                                                VolumeIoOptions options);
  ~VolumeIo();

  // Starts `req`. `req->done` runs on the loop thread later, never inside submit().
  void submit(IoRequest* req) override;

  // Replaces the mapping after a resize (grow appends segments, so requests in flight are
  // unaffected); the new size applies to requests submitted from now on. Errors as open().
  Status update(const VolumeInfo& info, const std::vector<PvInfo>& pvs, const DeviceLookup& lookup);

  uint64_t size_bytes() const override;
  // The volume's logical block size: requests are multiples of it (the export server
  // validates, clients size their devices by it).
  uint32_t block_size_bytes() const override { return block_size_bytes_; }
  // Writes are volatile until a FLUSH (page caches, device caches); FUA, DISCARD and
  // WRITE_ZEROES are carried out on every layout (a device without them gets a write and a
  // sync, or written zeroes).
  uint32_t capabilities() const override {
    return block::kCapFlush | block::kCapFua | block::kCapDiscard | block::kCapWriteZeroes;
  }

  // Brings a faulty mirror leg back: it takes writes at once and is copied from an in-sync
  // leg, region by region — only the regions the bitmap marks when the volume has one,
  // every region otherwise — then turns in-sync. A leg that is resyncing with no copy
  // running is copied in full. Errors: kInvalidArgument (an in-sync leg, or not a mirrored
  // volume), kInUse (a resync or scrub is running), kUnavailable (no in-sync leg to copy
  // from, or a device of the leg is missing).
  Status restore_leg(uint32_t leg);
  ResyncProgress resync_progress() const;
  // Compares the in-sync legs of a mirrored volume region by region (each region locked
  // while it is read) and counts regions whose legs differ; it repairs nothing. Errors:
  // kInvalidArgument (not mirrored), kInUse (a scrub or resync is running).
  Status start_scrub();
  ScrubProgress scrub_progress() const;
  // Ends a running resync or scrub at the next region boundary (for shutdown). A cancelled
  // resync leaves its targets resyncing and their regions marked, so it can resume later.
  void cancel_background();
  // Regions whose bit is set in the write-intent bitmap.
  uint64_t marked_regions() const;
  const std::vector<LegState>& leg_states() const { return leg_states_; }
  const VolumeIoStats& stats() const { return stats_; }
  size_t in_flight() const { return in_flight_; }
  int64_t volume_id() const { return volume_id_; }

  struct Map;
  struct Pending;

 private:
  VolumeIo(Loop& loop, int64_t volume_id, VolumeIoOptions options);
  void finish(Pending* p);
  Pending* new_pending();
  void start_flush(Pending* p);
  void on_sub_done(DevOp* op, int res);
  bool mark_leg_faulty(uint32_t leg, const std::string& reason);
  int next_read_leg(uint32_t tried_mask);
  void note_written(Device* d);
  // Write-intent bitmap and resync (mirrored volumes).
  struct Intent;
  struct Resync;
  enum class IntentStep { kIssue, kWait, kFailed };
  IntentStep intent_try_issue(Pending* p);
  void intent_release(Pending* p);
  void intent_write_block(uint64_t block);
  void intent_block_written(uint64_t block, int res);
  void intent_after_flush(uint64_t flush_seq);
  void intent_wake();
  void issue_subops(Pending* p);
  void resync_start(std::vector<uint64_t> regions, uint32_t target_mask);
  void resync_next();
  void resync_copy(uint64_t region);
  // `failed_dev`: the device of an operation that failed (null when none or unknown).
  void resync_region_done(bool ok, Device* failed_dev = nullptr);
  struct Scrub;
  void scrub_next();
  void scrub_read(uint64_t region);
  void scrub_read_done(bool ok);
  bool region_needs_source_leg(uint64_t offset, uint64_t length) const;

  Loop& loop_;
  int64_t volume_id_;
  uint32_t block_size_bytes_ = 512;
  VolumeIoOptions options_;
  std::shared_ptr<const Map> map_;
  std::vector<LegState> leg_states_;
  std::vector<Device*> written_since_flush_;
  // Devices with a flush in flight, with counts. A later FLUSH syncs them again rather than
  // completing before the earlier sync has made their writes durable.
  std::unordered_map<Device*, uint32_t> flushing_;
  uint32_t read_rr_ = 0;
  // Finished request states, kept with their vectors' capacity for reuse: the hot path
  // allocates nothing once warm.
  std::vector<Pending*> free_pending_;
  std::unique_ptr<Intent> intent_;
  std::vector<iovec> rs_iov_;  // resync: pieces of the region buffer
  std::unique_ptr<Resync> resync_;
  std::unique_ptr<Scrub> scrub_;
  bool cancel_background_ = false;
  size_t in_flight_ = 0;
  VolumeIoStats stats_;
};

}  // namespace rsio::volmgr::io
