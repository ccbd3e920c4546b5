// Thread model: loop thread only (see volume_io.h).
#include "volmgr/io/volume_io.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <unordered_map>

#include "common/assert.h"
#include "common/log.h"
#include "common/units.h"

namespace rsio::volmgr::io {

namespace {

struct MapArea {
  Device* dev = nullptr;  // null: the PV is missing
  uint64_t dev_offset_bytes = 0;
};

struct MapSegment {
  uint64_t start_bytes = 0;
  uint64_t length_bytes = 0;
  std::vector<MapArea> areas;
};

struct Target {
  Device* dev = nullptr;
  uint64_t offset_bytes = 0;
};

struct Chunk {
  uint64_t req_offset_bytes = 0;
  uint64_t length_bytes = 0;
  uint32_t first_target = 0;
  uint32_t iov_start = 0;
  uint32_t iov_count = 0;
};

bool is_write_class(Op op) {
  return op == Op::kWrite || op == Op::kDiscard || op == Op::kWriteZeroes;
}

}  // namespace

struct VolumeIo::Map {
  uint64_t size_bytes = 0;
  uint64_t extent_size_bytes = 0;
  Layout layout = Layout::kLinear;
  uint32_t width = 1;
  uint64_t stripe_size_bytes = 0;
  std::vector<MapSegment> segments;
  std::unordered_map<Device*, uint32_t> leg_of_device;  // mirrored volumes

  // Targets for the chunk starting at `offset` (one, or one per mirror leg); returns its
  // length, at most `length`.
  uint64_t chunk(uint64_t offset, uint64_t length, std::vector<Target>& out) const {
    auto it =
        std::upper_bound(segments.begin(), segments.end(), offset,
                         [](uint64_t off, const MapSegment& s) { return off < s.start_bytes; });
    RSIO_ASSERT(it != segments.begin());
    const MapSegment& seg = *std::prev(it);
    const uint64_t in_seg = offset - seg.start_bytes;
    RSIO_ASSERT(in_seg < seg.length_bytes);
    uint64_t len = std::min(length, seg.length_bytes - in_seg);
    if (layout == Layout::kStriped) {
      const uint64_t unit = in_seg / stripe_size_bytes;
      const uint64_t within = in_seg % stripe_size_bytes;
      const MapArea& a = seg.areas[unit % width];
      len = std::min(len, stripe_size_bytes - within);
      out.push_back({a.dev, a.dev_offset_bytes + (unit / width) * stripe_size_bytes + within});
    } else {
      for (const MapArea& a : seg.areas) out.push_back({a.dev, a.dev_offset_bytes + in_seg});
    }
    return len;
  }
};

struct SubOp {
  DevOp op;
  VolumeIo::Pending* parent = nullptr;
  uint32_t chunk = 0;
  uint32_t leg = 0;
  uint32_t tried_mask = 0;
};

struct VolumeIo::Pending {
  VolumeIo* vol_ = nullptr;
  bool holds_regions = false;  // counted in Intent::inflight for regions r0..r1
  uint64_t r0 = 0, r1 = 0;
  uint64_t flush_seq = 0;  // FLUSH: Intent::write_seq when it was submitted
  IoRequest* req = nullptr;
  uint32_t outstanding = 0;
  IoStatus status = IoStatus::kOk;
  uint32_t width = 1;
  std::vector<Chunk> chunks;
  std::vector<Target> targets;
  std::vector<iovec> iovs;
  std::vector<SubOp> subs;
};

// Region bookkeeping of a mirrored volume: write-intent bits (in memory and as known to be
// on the bitmap device), writes in flight per region, and region locks held by resync.
struct VolumeIo::Intent {
  static constexpr uint64_t kBlockBytes = 4096;
  Device* device = nullptr;
  uint64_t region_bytes = 0;
  uint64_t regions = 0;
  std::vector<uint8_t> image;         // the bits as they should be on the device
  std::vector<uint8_t> durable;       // per region: its bit is known set on the device
  std::vector<uint32_t> inflight;     // per region: writes issued and not completed
  std::vector<uint64_t> last_done;    // per region: write_seq of its last completed write
  std::vector<uint8_t> locked;        // per region: resync is copying it
  std::vector<uint8_t> needs_source;  // per region: only the resync source leg is current
  uint64_t write_seq = 0;
  std::vector<Pending*> waiting;  // writes waiting for bits or locks
  struct Block {
    bool writing = false, again = false;
    void* buf = nullptr;
    iovec iov{};
    DevOp op;
    VolumeIo* vol = nullptr;
    uint64_t index = 0;
  };
  std::deque<Block> blocks;  // deque: growing keeps blocks with writes in flight in place

  // Sizes the per-region state for `bytes` of volume. The count follows the size both ways;
  // the arrays only grow, so state of regions past a shrink stays addressable until done.
  void resize(uint64_t bytes, VolumeIo* vol) {
    const uint64_t n = div_round_up(std::max<uint64_t>(bytes, 1), region_bytes);
    regions = n;
    const uint64_t image_bytes = div_round_up(div_round_up(n, 8), kBlockBytes) * kBlockBytes;
    if (image.size() < image_bytes) image.resize(image_bytes, 0);
    if (durable.size() < n) {
      durable.resize(n, 0);
      inflight.resize(n, 0);
      last_done.resize(n, 0);
      locked.resize(n, 0);
      needs_source.resize(n, 0);
    }
    while (blocks.size() < image.size() / kBlockBytes) {
      blocks.emplace_back();
      blocks.back().index = blocks.size() - 1;
      blocks.back().vol = vol;
    }
  }
  bool failed = false;  // the bitmap device failed: writes cannot be protected

  bool bit(uint64_t r) const { return image[r / 8] & (1u << (r % 8)); }
  void set_bit(uint64_t r, bool on) {
    if (on)
      image[r / 8] |= static_cast<uint8_t>(1u << (r % 8));
    else
      image[r / 8] &= static_cast<uint8_t>(~(1u << (r % 8)));
  }
  ~Intent() {
    for (Block& b : blocks) std::free(b.buf);
  }
};

struct VolumeIo::Scrub {
  bool active = false;
  uint64_t next = 0;
  uint64_t current = 0;
  uint64_t waiting_region = UINT64_MAX;
  uint32_t outstanding = 0;
  bool failed = false;
  uint64_t mismatched = 0;
  std::vector<uint64_t> mismatches;
  std::vector<uint32_t> legs;  // legs read for the current region
  std::vector<void*> bufs;     // one region buffer per leg
  std::vector<iovec> iovs;
  std::vector<SubOp> ops;
  std::vector<Target> targets;
  std::vector<std::pair<uint64_t, uint64_t>> pieces;
  ~Scrub() {
    for (void* b : bufs) std::free(b);
  }
};

struct VolumeIo::Resync {
  bool active = false;
  std::vector<uint64_t> regions;
  size_t next = 0;
  uint32_t source = 0;
  uint32_t targets = 0;  // bit mask of legs being copied to
  uint64_t bytes_done = 0;
  uint64_t waiting_region = UINT64_MAX;  // locked, waiting for its writes to drain
  uint64_t current = 0;
  uint32_t outstanding = 0;
  bool failed = false;
  uint32_t failed_legs = 0;  // legs whose devices failed during this resync
  enum class Phase { kRead, kWrite, kSyncSource } phase = Phase::kRead;
  void* buf = nullptr;
  std::vector<SubOp> ops;
  std::vector<Target> targets_buf;
  std::vector<std::pair<uint64_t, uint64_t>> pieces;  // (offset in region, length) per chunk
  std::chrono::steady_clock::time_point started;
  ~Resync() { std::free(buf); }
};

namespace {

Result<std::shared_ptr<const VolumeIo::Map>> build_map(const VolumeInfo& info, uint64_t extent_size,
                                                       const std::vector<PvInfo>& pvs,
                                                       const DeviceLookup& lookup) {
  auto map = std::make_shared<VolumeIo::Map>();
  map->extent_size_bytes = extent_size;
  map->layout = info.spec.layout;
  map->width = info.spec.width();
  map->stripe_size_bytes = info.spec.stripe_size_bytes;
  if (map->layout == Layout::kStriped &&
      (map->stripe_size_bytes == 0 || extent_size % map->stripe_size_bytes != 0))
    return make_error(Errc::kInvalidArgument, "stripe size must divide the extent size");
  std::unordered_map<int64_t, const PvInfo*> by_id;
  for (const PvInfo& pv : pvs) by_id[pv.id] = &pv;
  for (const Segment& s : info.segments) {
    MapSegment ms;
    ms.start_bytes = s.start_extent * extent_size;
    ms.length_bytes = s.extent_count * extent_size;
    if (s.areas.size() != map->width)
      return make_error(Errc::kInvalidArgument, "segment area count does not match the layout");
    for (uint32_t k = 0; k < s.areas.size(); ++k) {
      const Area& a = s.areas[k];
      auto pv = by_id.find(a.pv_id);
      if (pv == by_id.end())
        return make_error(Errc::kInvalidArgument, fmt::format("area on unknown pv_id={}", a.pv_id));
      Device* dev = lookup(a.pv_id);
      ms.areas.push_back({dev, pv->second->data_offset_bytes + a.pv_start_extent * extent_size});
      if (map->layout == Layout::kMirrored && dev != nullptr) map->leg_of_device[dev] = k;
    }
    map->segments.push_back(std::move(ms));
  }
  map->size_bytes = info.logical_extents() * extent_size;
  if (map->size_bytes < info.size_bytes)
    return make_error(Errc::kInvalidArgument, "volume size exceeds its mapping");
  map->size_bytes = info.size_bytes;
  return std::shared_ptr<const VolumeIo::Map>(std::move(map));
}

// Appends to `out` the iovecs covering bytes [offset, offset + length) of `iov`.
void slice_iov(const iovec* iov, int count, uint64_t offset, uint64_t length,
               std::vector<iovec>& out) {
  for (int i = 0; i < count && length > 0; ++i) {
    if (offset >= iov[i].iov_len) {
      offset -= iov[i].iov_len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(iov[i].iov_len - offset, length);
    out.push_back({static_cast<char*>(iov[i].iov_base) + offset, static_cast<size_t>(n)});
    length -= n;
    offset = 0;
  }
}

}  // namespace

Result<std::unique_ptr<VolumeIo>> VolumeIo::open(Loop& loop, const VolumeInfo& info,
                                                 uint64_t extent_size_bytes,
                                                 const std::vector<PvInfo>& pvs,
                                                 const DeviceLookup& lookup,
                                                 VolumeIoOptions options) {
  RSIO_TRY(auto map, build_map(info, extent_size_bytes, pvs, lookup));
  if (info.block_size_bytes != 512 && info.block_size_bytes != 4096)
    return make_error(Errc::kInvalidArgument,
                      fmt::format("volume {}: block size {} is not 512 or 4096", info.name,
                                  info.block_size_bytes));
  std::unique_ptr<VolumeIo> v(new VolumeIo(loop, info.id, std::move(options)));
  v->map_ = std::move(map);
  v->block_size_bytes_ = static_cast<uint32_t>(info.block_size_bytes);
  const uint32_t legs = info.spec.layout == Layout::kMirrored ? info.spec.mirrors : 1;
  v->leg_states_ = v->options_.leg_states;
  v->leg_states_.resize(legs, LegState::kInSync);
  if (info.spec.layout == Layout::kMirrored) {
    const WriteIntentOptions& wi = v->options_.bitmap;
    if (wi.region_bytes == 0 || (wi.region_bytes & (wi.region_bytes - 1)) != 0)
      return make_error(Errc::kInvalidArgument, "bitmap region size must be a power of two");
    auto in = std::make_unique<Intent>();
    in->device = wi.device;
    in->region_bytes = wi.region_bytes;
    in->resize(info.logical_extents() * extent_size_bytes, v.get());
    const uint64_t bytes = div_round_up(in->regions, 8);
    for (size_t i = 0; i < wi.initial_bits.size() && i < bytes; ++i)
      in->image[i] = wi.initial_bits[i];
    std::vector<uint64_t> dirty;
    for (uint64_t r = 0; r < in->regions; ++r)
      if (in->bit(r)) {
        in->durable[r] = 1;
        dirty.push_back(r);
      }
    v->intent_ = std::move(in);
    v->resync_ = std::make_unique<Resync>();
    // A leg with a missing device cannot take writes: it is faulty from the start.
    for (const MapSegment& s : v->map_->segments)
      for (uint32_t k = 0; k < legs; ++k)
        if (s.areas[k].dev == nullptr && v->leg_states_[k] != LegState::kFaulty)
          v->mark_leg_faulty(k, "a device of this leg is missing");
    // Regions marked at open were being written when the volume was last closed (or a leg
    // was away): the legs may differ there. Copy them from one in-sync leg to the others,
    // and to legs still resyncing (a resync interrupted by a restart resumes here; without
    // a bitmap such a leg gets every region).
    bool any_resyncing = false;
    for (LegState s : v->leg_states_) any_resyncing = any_resyncing || s == LegState::kResyncing;
    if (any_resyncing && v->intent_->device == nullptr) {
      dirty.clear();
      for (uint64_t r = 0; r < v->intent_->regions; ++r) dirty.push_back(r);
    }
    if (!dirty.empty()) {
      uint32_t targets = 0;
      int source = -1;
      for (uint32_t k = 0; k < legs; ++k) {
        if (v->leg_states_[k] == LegState::kFaulty) continue;
        if (source < 0 && v->leg_states_[k] == LegState::kInSync)
          source = static_cast<int>(k);
        else
          targets |= 1u << k;
      }
      if (source >= 0 && targets != 0) {
        v->resync_->source = static_cast<uint32_t>(source);
        v->resync_start(std::move(dirty), targets);
      }
    }
  }
  return v;
}

VolumeIo::VolumeIo(Loop& loop, int64_t volume_id, VolumeIoOptions options)
    : loop_(loop), volume_id_(volume_id), options_(std::move(options)) {}

VolumeIo::~VolumeIo() {
  RSIO_ASSERT_MSG(in_flight_ == 0, "volume closed with requests in flight");
  for (Pending* p : free_pending_) delete p;
}

VolumeIo::Pending* VolumeIo::new_pending() {
  if (free_pending_.empty()) return new Pending();
  Pending* p = free_pending_.back();
  free_pending_.pop_back();
  return p;
}

uint64_t VolumeIo::size_bytes() const { return map_->size_bytes; }

Status VolumeIo::update(const VolumeInfo& info, const std::vector<PvInfo>& pvs,
                        const DeviceLookup& lookup) {
  RSIO_TRY(auto map, build_map(info, map_->extent_size_bytes, pvs, lookup));
  if (intent_) intent_->resize(info.logical_extents() * map->extent_size_bytes, this);
  map_ = std::move(map);
  return {};
}

bool VolumeIo::mark_leg_faulty(uint32_t leg, const std::string& reason) {
  bool other = false;
  for (uint32_t k = 0; k < leg_states_.size(); ++k)
    if (k != leg && leg_states_[k] == LegState::kInSync) other = true;
  if (!other) return false;
  if (resync_ && resync_->active && leg == resync_->source) {
    // The copy's source is gone: stop it; its targets are not at fault.
    resync_->failed = true;
    resync_->failed_legs |= 1u << leg;
  }
  if (leg_states_[leg] != LegState::kFaulty) {
    leg_states_[leg] = LegState::kFaulty;
    log::error("volume_id={} mirror leg {} is faulty: {}; running degraded", volume_id_, leg,
               reason);
    if (options_.events != nullptr) options_.events->leg_faulty(volume_id_, leg, reason);
  }
  return true;
}

int VolumeIo::next_read_leg(uint32_t tried_mask) {
  const uint32_t n = static_cast<uint32_t>(leg_states_.size());
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t k = (read_rr_ + i) % n;
    if (leg_states_[k] == LegState::kInSync && !(tried_mask & (1u << k))) {
      read_rr_ = k + 1;
      return static_cast<int>(k);
    }
  }
  return -1;
}

void VolumeIo::note_written(Device* d) {
  if (std::find(written_since_flush_.begin(), written_since_flush_.end(), d) ==
      written_since_flush_.end())
    written_since_flush_.push_back(d);
}

void VolumeIo::finish(Pending* p) {
  --in_flight_;
  if (p->status != IoStatus::kOk) ++stats_.errors;
  IoRequest* req = p->req;
  const IoStatus status = p->status;
  if (p->holds_regions) intent_release(p);
  if (intent_ && req->op == Op::kFlush && status == IoStatus::kOk) intent_after_flush(p->flush_seq);
  p->holds_regions = false;
  p->req = nullptr;
  p->outstanding = 0;
  p->status = IoStatus::kOk;
  p->width = 1;
  p->chunks.clear();
  p->targets.clear();
  p->iovs.clear();
  p->subs.clear();
  if (free_pending_.size() < 4096)
    free_pending_.push_back(p);
  else
    delete p;
  req->done(req, status);
}

void VolumeIo::submit(IoRequest* req) {
  RSIO_ASSERT(req != nullptr && req->done != nullptr);
  ++stats_.requests;
  ++in_flight_;
  Pending* p = new_pending();
  p->req = req;
  p->vol_ = this;
  auto fail_soon = [&](IoStatus s) {
    p->status = s;
    loop_.defer([this, p] { finish(p); });
  };

  if (req->op == Op::kFlush) return start_flush(p);
  const Map& map = *map_;
  const bool write_class = is_write_class(req->op);
  if (write_class && options_.read_only) return fail_soon(IoStatus::kReadOnly);
  if (req->offset_bytes > map.size_bytes || req->length_bytes > map.size_bytes - req->offset_bytes)
    return fail_soon(IoStatus::kOutOfRange);
  const bool transfer = req->op == Op::kRead || req->op == Op::kWrite;
  if (transfer) {
    uint64_t total = 0;
    for (int i = 0; i < req->iov_count; ++i) total += req->iov[i].iov_len;
    if (total != req->length_bytes || req->iov_count < 0) return fail_soon(IoStatus::kInvalid);
  }
  if (req->length_bytes == 0) return fail_soon(IoStatus::kOk);

  // Split into chunks that each map to one place (per leg) on the devices.
  const bool mirrored = map.layout == Layout::kMirrored;
  p->width = mirrored ? map.width : 1;
  for (uint64_t off = 0; off < req->length_bytes;) {
    Chunk c;
    c.req_offset_bytes = off;
    c.first_target = static_cast<uint32_t>(p->targets.size());
    c.length_bytes = map.chunk(req->offset_bytes + off, req->length_bytes - off, p->targets);
    if (transfer) {
      c.iov_start = static_cast<uint32_t>(p->iovs.size());
      slice_iov(req->iov, req->iov_count, off, c.length_bytes, p->iovs);
      c.iov_count = static_cast<uint32_t>(p->iovs.size()) - c.iov_start;
    }
    off += c.length_bytes;
    p->chunks.push_back(c);
  }
  if (p->chunks.size() > 1) stats_.split_ops += p->chunks.size() - 1;

  // One device operation per chunk; a write-class one per writable mirror leg.
  size_t ops = 0;
  for (size_t i = 0; i < p->chunks.size(); ++i) {
    if (!mirrored) {
      if (p->targets[p->chunks[i].first_target].dev == nullptr)
        return fail_soon(IoStatus::kUnavailable);
      ++ops;
    } else if (write_class) {
      size_t legs = 0;
      for (uint32_t k = 0; k < p->width; ++k)
        legs += leg_states_[k] != LegState::kFaulty &&
                p->targets[p->chunks[i].first_target + k].dev != nullptr;
      if (legs == 0) return fail_soon(IoStatus::kUnavailable);  // no leg can take this chunk
      ops += legs;
    } else {
      ++ops;
    }
  }
  if (ops == 0) return fail_soon(IoStatus::kUnavailable);
  p->subs.resize(ops);

  size_t n = 0;
  auto add = [&](uint32_t chunk, uint32_t leg) {
    const Chunk& c = p->chunks[chunk];
    const Target& t = p->targets[c.first_target + (mirrored ? leg : 0)];
    SubOp& s = p->subs[n++];
    s.parent = p;
    s.chunk = chunk;
    s.leg = leg;
    s.tried_mask = 1u << leg;
    s.op.op = req->op;
    s.op.fua = req->fua;
    s.op.offset_bytes = t.offset_bytes;
    s.op.length_bytes = c.length_bytes;
    s.op.iov = transfer ? p->iovs.data() + c.iov_start : nullptr;
    s.op.iov_count = transfer ? static_cast<int>(c.iov_count) : 0;
    s.op.ctx = &s;
    s.op.device = t.dev;
    s.op.done = [](DevOp* op, int res) {
      auto* sub = static_cast<SubOp*>(op->ctx);
      sub->parent->vol_->on_sub_done(op, res);
    };
  };
  for (uint32_t i = 0; i < p->chunks.size(); ++i) {
    if (!mirrored) {
      add(i, 0);
    } else if (write_class) {
      for (uint32_t k = 0; k < p->width; ++k)
        if (leg_states_[k] != LegState::kFaulty &&
            p->targets[p->chunks[i].first_target + k].dev != nullptr)
          add(i, k);
    } else {
      // Where a resync has not yet made the legs equal, only its source is current.
      const Chunk& c = p->chunks[i];
      const bool source_only =
          region_needs_source_leg(req->offset_bytes + c.req_offset_bytes, c.length_bytes);
      // No other leg is current there: with the source gone the data is not readable.
      if (source_only && leg_states_[resync_->source] == LegState::kFaulty) {
        p->subs.clear();
        return fail_soon(IoStatus::kIoError);
      }
      int leg = source_only ? static_cast<int>(resync_->source) : next_read_leg(0);
      // A leg whose device for this chunk is missing cannot serve it.
      uint32_t tried = 0;
      while (leg >= 0 && p->targets[c.first_target + static_cast<uint32_t>(leg)].dev == nullptr) {
        tried |= 1u << leg;
        leg = next_read_leg(tried);
      }
      if (leg < 0) {
        p->subs.clear();
        return fail_soon(IoStatus::kUnavailable);
      }
      add(i, static_cast<uint32_t>(leg));
    }
  }
  if (mirrored && write_class) {
    switch (intent_try_issue(p)) {
      case IntentStep::kIssue:
        break;
      case IntentStep::kWait:
        intent_->waiting.push_back(p);
        return;  // intent_wake() issues it
      case IntentStep::kFailed:
        return;
    }
  }
  issue_subops(p);
}

void VolumeIo::issue_subops(Pending* p) {
  p->outstanding = static_cast<uint32_t>(p->subs.size());
  for (SubOp& s : p->subs) s.op.device->submit(&s.op);
}

void VolumeIo::start_flush(Pending* p) {
  p->vol_ = this;
  if (intent_) p->flush_seq = intent_->write_seq;
  std::vector<Device*> devices;
  devices.swap(written_since_flush_);
  for (const auto& [dev, count] : flushing_)
    if (std::find(devices.begin(), devices.end(), dev) == devices.end()) devices.push_back(dev);
  if (devices.empty()) {
    loop_.defer([this, p] { finish(p); });
    return;
  }
  p->subs.resize(devices.size());
  for (size_t i = 0; i < devices.size(); ++i) {
    SubOp& s = p->subs[i];
    s.parent = p;
    s.op.op = Op::kFlush;
    s.op.device = devices[i];
    s.op.ctx = &s;
    s.op.done = [](DevOp* op, int res) {
      auto* sub = static_cast<SubOp*>(op->ctx);
      sub->parent->vol_->on_sub_done(op, res);
    };
  }
  p->outstanding = static_cast<uint32_t>(p->subs.size());
  for (SubOp& s : p->subs) {
    ++flushing_[s.op.device];
    s.op.device->submit(&s.op);
  }
}

void VolumeIo::on_sub_done(DevOp* op, int res) {
  auto* sub = static_cast<SubOp*>(op->ctx);
  Pending* p = sub->parent;
  const Map& map = *map_;
  const bool mirrored = map.layout == Layout::kMirrored;
  Device* dev = op->device;
  if (op->op == Op::kFlush) {
    auto it = flushing_.find(dev);
    if (--it->second == 0) flushing_.erase(it);
  }
  if (res < 0) {
    const std::string why = fmt::format("{} on {} at offset_bytes={} failed: {}", op_name(op->op),
                                        dev->name(), op->offset_bytes, std::strerror(-res));
    if (op->op == Op::kFlush) {
      log::error("volume_id={} {}", volume_id_, why);
      note_written(dev);  // not durable: the next flush must try again
      auto leg = map.leg_of_device.find(dev);
      if (!(mirrored && leg != map.leg_of_device.end() && mark_leg_faulty(leg->second, why)))
        p->status = IoStatus::kIoError;
    } else if (mirrored && op->op == Op::kRead) {
      // Try another in-sync leg; the failing one is faulty if another can serve.
      const uint32_t failed = sub->leg;
      uint32_t tried = sub->tried_mask;
      const Chunk& ch = p->chunks[sub->chunk];
      // Where only a resync's source is current, no other leg may answer.
      int next =
          region_needs_source_leg(p->req->offset_bytes + ch.req_offset_bytes, ch.length_bytes)
              ? -1
              : next_read_leg(tried);
      // Legs without a device for this chunk cannot serve it either.
      while (next >= 0 &&
             p->targets[p->chunks[sub->chunk].first_target + static_cast<uint32_t>(next)].dev ==
                 nullptr) {
        tried |= 1u << next;
        next = next_read_leg(tried);
      }
      if (next >= 0) {
        mark_leg_faulty(failed, why);
        const Target& t =
            p->targets[p->chunks[sub->chunk].first_target + static_cast<uint32_t>(next)];
        sub->tried_mask = tried;
        if (t.dev != nullptr) {
          sub->leg = static_cast<uint32_t>(next);
          sub->tried_mask |= 1u << next;
          op->device = t.dev;
          op->offset_bytes = t.offset_bytes;
          ++stats_.retried_reads;
          t.dev->submit(op);
          return;
        }
      }
      p->status = IoStatus::kIoError;
    } else if (mirrored) {
      if (!mark_leg_faulty(sub->leg, why)) p->status = IoStatus::kIoError;
    } else {
      p->status = IoStatus::kIoError;
    }
  } else if (is_write_class(op->op)) {
    note_written(dev);
  }
  if (--p->outstanding == 0) finish(p);
}

// ---- write-intent bitmap -------------------------------------------------------------

VolumeIo::IntentStep VolumeIo::intent_try_issue(Pending* p) {
  Intent& in = *intent_;
  if (in.failed) {
    p->status = IoStatus::kIoError;
    loop_.defer([this, p] { finish(p); });
    return IntentStep::kFailed;
  }
  const IoRequest& req = *p->req;
  const uint64_t r0 = req.offset_bytes / in.region_bytes;
  const uint64_t r1 = (req.offset_bytes + req.length_bytes - 1) / in.region_bytes;
  for (uint64_t r = r0; r <= r1; ++r)
    if (in.locked[r]) return IntentStep::kWait;  // a resync is copying it
  bool wait = false;
  if (in.device != nullptr) {
    for (uint64_t r = r0; r <= r1; ++r) {
      if (in.durable[r]) continue;
      wait = true;
      if (!in.bit(r)) {
        in.set_bit(r, true);
        intent_write_block(r / 8 / Intent::kBlockBytes);
      }
    }
  }
  if (wait) return IntentStep::kWait;
  for (uint64_t r = r0; r <= r1; ++r) ++in.inflight[r];
  p->holds_regions = true;
  p->r0 = r0;
  p->r1 = r1;
  return IntentStep::kIssue;
}

void VolumeIo::intent_release(Pending* p) {
  Intent& in = *intent_;
  ++in.write_seq;
  for (uint64_t r = p->r0; r <= p->r1; ++r) {
    --in.inflight[r];
    in.last_done[r] = in.write_seq;
    if (in.inflight[r] == 0 && resync_->waiting_region == r) {
      resync_->waiting_region = UINT64_MAX;
      loop_.defer([this, r] { resync_copy(r); });
    }
    if (in.inflight[r] == 0 && scrub_ && scrub_->waiting_region == r) {
      scrub_->waiting_region = UINT64_MAX;
      loop_.defer([this, r] { scrub_read(r); });
    }
  }
}

void VolumeIo::intent_write_block(uint64_t block) {
  Intent& in = *intent_;
  Intent::Block& b = in.blocks[block];
  if (b.writing) {
    b.again = true;
    return;
  }
  if (b.buf == nullptr) {
    void* buf = nullptr;
    RSIO_ASSERT(::posix_memalign(&buf, 4096, Intent::kBlockBytes) == 0);
    b.buf = buf;
  }
  std::memcpy(b.buf, in.image.data() + block * Intent::kBlockBytes, Intent::kBlockBytes);
  b.writing = true;
  ++in_flight_;  // the owner must not close the volume under a bitmap write
  b.iov = {b.buf, Intent::kBlockBytes};
  b.op = DevOp{};
  b.op.op = Op::kWrite;
  b.op.fua = true;
  b.op.offset_bytes = block * Intent::kBlockBytes;
  b.op.length_bytes = Intent::kBlockBytes;
  b.op.iov = &b.iov;
  b.op.iov_count = 1;
  b.op.ctx = &b;
  b.op.done = [](DevOp* op, int res) {
    auto* blk = static_cast<Intent::Block*>(op->ctx);
    blk->vol->intent_block_written(blk->index, res);
  };
  in.device->submit(&b.op);
}

void VolumeIo::intent_block_written(uint64_t block, int res) {
  Intent& in = *intent_;
  Intent::Block& b = in.blocks[block];
  b.writing = false;
  --in_flight_;
  if (res < 0) {
    // Without a durable bitmap a crash could leave legs silently different: refuse writes
    // rather than risk that. Reads and in-flight writes are unaffected.
    log::error(
        "volume_id={} write-intent bitmap write failed on {}: {}; mirror writes fail "
        "until the volume is reopened",
        volume_id_, in.device->name(), std::strerror(-res));
    in.failed = true;
  } else {
    const auto* bytes = static_cast<const uint8_t*>(b.buf);
    const uint64_t first = block * Intent::kBlockBytes * 8;
    // Set on the device and still wanted: a bit cleared in memory after this write was
    // issued must not count as durably set, or a write could run while the rewrite of
    // the block is about to clear it on the device.
    for (uint64_t i = 0; i < Intent::kBlockBytes * 8 && first + i < in.regions; ++i)
      in.durable[first + i] = ((bytes[i / 8] >> (i % 8)) & 1) && in.bit(first + i);
  }
  if (b.again) {
    b.again = false;
    if (!in.failed) intent_write_block(block);
  }
  intent_wake();
}

void VolumeIo::intent_wake() {
  Intent& in = *intent_;
  std::vector<Pending*> waiting;
  waiting.swap(in.waiting);
  for (Pending* p : waiting) {
    switch (intent_try_issue(p)) {
      case IntentStep::kIssue:
        issue_subops(p);
        break;
      case IntentStep::kWait:
        in.waiting.push_back(p);
        break;
      case IntentStep::kFailed:
        break;
    }
  }
}

void VolumeIo::intent_after_flush(uint64_t flush_seq) {
  Intent& in = *intent_;
  if (in.device == nullptr || in.failed || resync_->active) return;
  // Bits may only go while every leg holds the data: with a leg away they record what it
  // must get when it comes back.
  for (LegState s : leg_states_)
    if (s != LegState::kInSync) return;
  std::vector<uint64_t> blocks;
  for (uint64_t r = 0; r < in.regions; ++r) {
    if (!in.bit(r) || in.inflight[r] != 0 || in.locked[r] || in.last_done[r] > flush_seq) continue;
    in.set_bit(r, false);
    in.durable[r] = 0;  // not trusted as set any more, whatever the device holds
    const uint64_t b = r / 8 / Intent::kBlockBytes;
    if (blocks.empty() || blocks.back() != b) blocks.push_back(b);
  }
  for (uint64_t b : blocks) intent_write_block(b);
}

uint64_t VolumeIo::marked_regions() const {
  if (!intent_) return 0;
  uint64_t n = 0;
  for (uint64_t r = 0; r < intent_->regions; ++r) n += intent_->bit(r);
  return n;
}

bool VolumeIo::region_needs_source_leg(uint64_t offset, uint64_t length) const {
  // needs_source is set by a resync for its regions and cleared as each is copied; a region
  // a failed resync did not copy keeps it.
  if (!intent_ || length == 0) return false;
  const uint64_t r0 = offset / intent_->region_bytes;
  const uint64_t r1 = (offset + length - 1) / intent_->region_bytes;
  for (uint64_t r = r0; r <= r1; ++r)
    if (intent_->needs_source[r]) return true;
  return false;
}

// ---- resync -------------------------------------------------------------------------

Status VolumeIo::restore_leg(uint32_t leg) {
  if (!intent_ || leg >= leg_states_.size() || leg_states_[leg] == LegState::kInSync)
    return make_error(
        Errc::kInvalidArgument,
        fmt::format("leg {} is not a faulty or resyncing leg of a mirrored volume", leg));
  // A leg left resyncing with no copy running (its marks were lost, or it was added while
  // the engine was not running) cannot know which regions it lacks: it gets them all.
  const bool full = leg_states_[leg] == LegState::kResyncing;
  if (resync_->active || (scrub_ && scrub_->active))
    return make_error(Errc::kInUse, "a resync or scrub is already running");
  // Writes waiting for their bitmap bits were built for the current legs: let them go first.
  if (!intent_->waiting.empty())
    return make_error(Errc::kInUse, "writes are waiting for the write-intent bitmap; try again");
  int source = -1;
  for (uint32_t k = 0; k < leg_states_.size() && source < 0; ++k)
    if (leg_states_[k] == LegState::kInSync) source = static_cast<int>(k);
  if (source < 0) return make_error(Errc::kUnavailable, "no in-sync leg to copy from");
  for (const MapSegment& s : map_->segments)
    if (s.areas[leg].dev == nullptr)
      return make_error(Errc::kUnavailable,
                        fmt::format("a device of leg {} is missing; bring it back first", leg));
  std::vector<uint64_t> regions;
  for (uint64_t r = 0; r < intent_->regions; ++r)
    if (full || intent_->device == nullptr || intent_->bit(r)) regions.push_back(r);
  leg_states_[leg] = LegState::kResyncing;
  resync_->source = static_cast<uint32_t>(source);
  log::info("volume_id={} leg {} restored: resyncing {} region(s) from leg {}", volume_id_, leg,
            regions.size(), source);
  resync_start(std::move(regions), 1u << leg);
  return {};
}

ResyncProgress VolumeIo::resync_progress() const {
  ResyncProgress pr;
  if (!resync_) return pr;
  pr.active = resync_->active;
  pr.regions_total = resync_->regions.size();
  pr.regions_done = resync_->next - (resync_->active && resync_->outstanding > 0 ? 1 : 0);
  if (!pr.active) pr.regions_done = resync_->next;
  pr.bytes_done = resync_->bytes_done;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - resync_->started).count();
  pr.rate_bytes_per_s = secs > 0 ? static_cast<double>(pr.bytes_done) / secs : 0;
  const double left = static_cast<double>(pr.regions_total - pr.regions_done) *
                      static_cast<double>(intent_ ? intent_->region_bytes : 0);
  pr.eta_s = pr.rate_bytes_per_s > 0 ? left / pr.rate_bytes_per_s : 0;
  return pr;
}

void VolumeIo::resync_start(std::vector<uint64_t> regions, uint32_t target_mask) {
  Resync& rs = *resync_;
  rs.active = true;
  rs.regions = std::move(regions);
  rs.next = 0;
  rs.targets = target_mask;
  rs.bytes_done = 0;
  rs.failed = false;
  rs.failed_legs = 0;
  rs.started = std::chrono::steady_clock::now();
  for (uint64_t r : rs.regions) intent_->needs_source[r] = 1;
  if (rs.buf == nullptr) {
    void* buf = nullptr;
    RSIO_ASSERT(::posix_memalign(&buf, 4096, intent_->region_bytes) == 0);
    rs.buf = buf;
  }
  ++in_flight_;  // the resync counts as work in flight until it ends
  loop_.defer([this] { resync_next(); });
}

void VolumeIo::resync_next() {
  Resync& rs = *resync_;
  Intent& in = *intent_;
  if (rs.failed || cancel_background_ || rs.next >= rs.regions.size()) {
    const bool cancelled = !rs.failed && rs.next < rs.regions.size();
    rs.active = false;
    if (!rs.failed)
      for (uint64_t r : rs.regions) in.needs_source[r] = 0;
    if (rs.failed) {
      // The legs whose devices failed are faulty (their bits stay set: bits only go while
      // every leg is in sync), and can be restored later. When it is not known which leg
      // failed, every target is; a failing source faults no target. Legs still resyncing
      // that did not fail stay resyncing and are resumed at the next open.
      const uint32_t source_bit = 1u << rs.source;
      const uint32_t blame = rs.failed_legs != 0 ? (rs.failed_legs & ~source_bit) : rs.targets;
      if (rs.failed_legs & source_bit)
        log::error("volume_id={} resync stopped: its source leg {} failed", volume_id_, rs.source);
      for (uint32_t k = 0; k < leg_states_.size(); ++k)
        if ((blame & (1u << k)) && leg_states_[k] != LegState::kFaulty) {
          leg_states_[k] = LegState::kFaulty;
          log::error("volume_id={} mirror leg {} is faulty: its resync failed", volume_id_, k);
          if (options_.events != nullptr)
            options_.events->leg_faulty(volume_id_, k, "resync failed");
        }
    }
    if (cancelled) {
      log::info("volume_id={} resync paused after {} of {} regions", volume_id_, rs.next,
                rs.regions.size());
    } else if (!rs.failed) {
      for (uint32_t k = 0; k < leg_states_.size(); ++k)
        if ((rs.targets & (1u << k)) && leg_states_[k] == LegState::kResyncing) {
          leg_states_[k] = LegState::kInSync;
          log::info("volume_id={} leg {} is in sync again", volume_id_, k);
          if (options_.events != nullptr) options_.events->leg_in_sync(volume_id_, k);
        }
      ++stats_.resyncs;
    }
    stats_.resync_regions += rs.next;
    --in_flight_;
    intent_wake();
    return;
  }
  const uint64_t r = rs.regions[rs.next++];
  if (r >= in.regions) {  // past the end after a shrink: nothing to copy
    in.needs_source[r] = 0;
    loop_.defer([this] { resync_next(); });
    return;
  }
  in.locked[r] = 1;
  if (in.inflight[r] > 0) {
    rs.waiting_region = r;  // intent_release() resumes the copy
    return;
  }
  resync_copy(r);
}

void VolumeIo::resync_copy(uint64_t r) {
  Resync& rs = *resync_;
  Intent& in = *intent_;
  const Map& map = *map_;
  rs.current = r;
  const uint64_t start = r * in.region_bytes;
  const uint64_t end = std::min(start + in.region_bytes, map.size_bytes);
  rs.targets_buf.clear();
  rs.pieces.clear();
  for (uint64_t off = start; off < end;) {
    const uint64_t len = map.chunk(off, end - off, rs.targets_buf);
    rs.pieces.push_back({off - start, len});
    off += len;
  }
  const uint32_t width = map.width;
  // Read the region from the source leg.
  rs.phase = Resync::Phase::kRead;
  rs.ops.assign(rs.pieces.size(), SubOp{});
  rs.outstanding = static_cast<uint32_t>(rs.ops.size());
  for (size_t i = 0; i < rs.pieces.size(); ++i) {
    if (rs.targets_buf[i * width + rs.source].dev == nullptr) {
      // The source has no device here: the region cannot be copied.
      log::error("volume_id={} resync: leg {} has no device for region {}", volume_id_, rs.source,
                 r);
      rs.failed = true;
      rs.ops.clear();
      rs.outstanding = 1;
      return resync_region_done(false);
    }
  }
  for (size_t i = 0; i < rs.pieces.size(); ++i) {
    const Target& t = rs.targets_buf[i * width + rs.source];
    SubOp& s = rs.ops[i];
    s.op.op = Op::kRead;
    s.op.offset_bytes = t.offset_bytes;
    s.op.length_bytes = rs.pieces[i].second;
    s.chunk = static_cast<uint32_t>(i);
    s.op.ctx = this;
    s.op.device = t.dev;
    s.op.done = [](DevOp* op, int res) {
      static_cast<VolumeIo*>(op->ctx)->resync_region_done(res >= 0, res < 0 ? op->device : nullptr);
    };
  }
  if (rs.ops.empty()) {
    rs.outstanding = 1;
    return resync_region_done(true);
  }
  rs_iov_.resize(rs.ops.size());
  for (size_t i = 0; i < rs.ops.size(); ++i) {
    rs_iov_[i] = {static_cast<char*>(rs.buf) + rs.pieces[i].first,
                  static_cast<size_t>(rs.pieces[i].second)};
    rs.ops[i].op.iov = &rs_iov_[i];
    rs.ops[i].op.iov_count = 1;
  }
  for (SubOp& s : rs.ops) s.op.device->submit(&s.op);
}

void VolumeIo::resync_region_done(bool ok, Device* failed_dev) {
  Resync& rs = *resync_;
  Intent& in = *intent_;
  if (!ok) {
    rs.failed = true;
    // Remember which leg failed: only that one is at fault, not every target.
    auto leg = map_->leg_of_device.find(failed_dev);
    if (leg != map_->leg_of_device.end()) rs.failed_legs |= 1u << leg->second;
  }
  if (--rs.outstanding > 0) return;
  const Map& map = *map_;
  const uint32_t width = map.width;
  auto issue = [&](std::vector<SubOp> ops) {
    rs.ops = std::move(ops);
    rs.outstanding = static_cast<uint32_t>(rs.ops.size());
    for (SubOp& s : rs.ops) s.op.device->submit(&s.op);
  };
  auto sub_op = [&](Op op, Device* dev, uint64_t off, uint64_t len, const iovec* iov) {
    SubOp s;
    s.op.op = op;
    s.op.fua = op == Op::kWrite;
    s.op.offset_bytes = off;
    s.op.length_bytes = len;
    s.op.iov = iov;
    s.op.iov_count = iov != nullptr ? 1 : 0;
    s.op.ctx = this;
    s.op.device = dev;
    s.op.done = [](DevOp* o, int res) {
      static_cast<VolumeIo*>(o->ctx)->resync_region_done(res >= 0, res < 0 ? o->device : nullptr);
    };
    return s;
  };
  if (!rs.failed && rs.phase == Resync::Phase::kRead) {
    // The region is read: write it to every target leg, durably (FUA).
    rs.phase = Resync::Phase::kWrite;
    std::vector<SubOp> writes;
    for (size_t i = 0; i < rs.pieces.size(); ++i)
      for (uint32_t k = 0; k < width; ++k) {
        if (!(rs.targets & (1u << k)) || leg_states_[k] == LegState::kFaulty) continue;
        const Target& t = rs.targets_buf[i * width + k];
        if (t.dev != nullptr)
          writes.push_back(
              sub_op(Op::kWrite, t.dev, t.offset_bytes, rs.pieces[i].second, &rs_iov_[i]));
      }
    if (!writes.empty()) return issue(std::move(writes));
  }
  if (!rs.failed && rs.phase == Resync::Phase::kWrite) {
    // The copy may come from writes the source has not synced yet: sync the source devices
    // of the region too before its bit may go, or a crash could leave the legs different
    // with nothing marked.
    rs.phase = Resync::Phase::kSyncSource;
    std::vector<SubOp> syncs;
    std::vector<Device*> seen;
    for (size_t i = 0; i < rs.pieces.size(); ++i) {
      Device* d = rs.targets_buf[i * width + rs.source].dev;
      if (std::find(seen.begin(), seen.end(), d) != seen.end()) continue;
      seen.push_back(d);
      syncs.push_back(sub_op(Op::kFlush, d, 0, 0, nullptr));
    }
    if (!syncs.empty()) return issue(std::move(syncs));
  }
  // Region done (or failed): unlock it and let waiting writes go. A region not copied keeps
  // needing the source (reads elsewhere would return stale data).
  const uint64_t r = rs.current;
  in.locked[r] = 0;
  if (!rs.failed) in.needs_source[r] = 0;
  if (rs.failed) {
    log::error("volume_id={} resync stopped at region {}: a device failed", volume_id_, r);
  } else {
    rs.bytes_done += std::min(in.region_bytes, map.size_bytes - r * in.region_bytes);
    // Every leg now holds the region: its bit may go, unless a leg is still away.
    bool all_present = true;
    for (uint32_t k = 0; k < leg_states_.size(); ++k)
      all_present = all_present && leg_states_[k] != LegState::kFaulty &&
                    (leg_states_[k] == LegState::kInSync || (rs.targets & (1u << k)));
    if (in.device != nullptr && all_present && in.inflight[r] == 0 && in.bit(r)) {
      in.set_bit(r, false);
      in.durable[r] = 0;
      intent_write_block(r / 8 / Intent::kBlockBytes);
    }
  }
  intent_wake();
  if (options_.resync_rate_bytes_per_s > 0) {
    const uint64_t ns = in.region_bytes * 1'000'000'000ULL / options_.resync_rate_bytes_per_s;
    loop_.after(ns, [this] { resync_next(); });
  } else {
    loop_.defer([this] { resync_next(); });
  }
}

// ---- scrub ---------------------------------------------------------------------------

void VolumeIo::cancel_background() { cancel_background_ = true; }

Status VolumeIo::start_scrub() {
  if (!intent_) return make_error(Errc::kInvalidArgument, "only mirrored volumes can be scrubbed");
  if (resync_->active || (scrub_ && scrub_->active))
    return make_error(Errc::kInUse, "a scrub or resync is already running");
  if (!scrub_) scrub_ = std::make_unique<Scrub>();
  Scrub& sc = *scrub_;
  sc.active = true;
  sc.next = 0;
  sc.failed = false;
  sc.mismatched = 0;
  sc.mismatches.clear();
  ++in_flight_;
  loop_.defer([this] { scrub_next(); });
  return {};
}

ScrubProgress VolumeIo::scrub_progress() const {
  ScrubProgress pr;
  if (!scrub_) return pr;
  pr.active = scrub_->active;
  pr.regions_total = intent_->regions;
  pr.regions_done = scrub_->next - (scrub_->active && scrub_->next > 0 ? 1 : 0);
  if (!scrub_->active) pr.regions_done = scrub_->next;
  pr.mismatched_regions = scrub_->mismatched;
  pr.mismatches = scrub_->mismatches;
  pr.region_bytes = intent_->region_bytes;
  return pr;
}

void VolumeIo::scrub_next() {
  Scrub& sc = *scrub_;
  Intent& in = *intent_;
  if (sc.failed || cancel_background_ || sc.next >= in.regions) {
    sc.active = false;
    log::info("volume_id={} scrub {}: {} of {} regions differ between legs", volume_id_,
              sc.failed ? "stopped by a device error" : "done", sc.mismatched, sc.next);
    --in_flight_;
    intent_wake();
    return;
  }
  const uint64_t r = sc.next++;
  if (r >= in.regions) {
    loop_.defer([this] { scrub_next(); });
    return;
  }
  in.locked[r] = 1;
  if (in.inflight[r] > 0) {
    sc.waiting_region = r;  // intent_release() resumes
    return;
  }
  scrub_read(r);
}

void VolumeIo::scrub_read(uint64_t r) {
  Scrub& sc = *scrub_;
  const Map& map = *map_;
  const uint64_t region = intent_->region_bytes;
  sc.current = r;
  sc.legs.clear();
  for (uint32_t k = 0; k < leg_states_.size(); ++k)
    if (leg_states_[k] == LegState::kInSync) sc.legs.push_back(k);
  while (sc.bufs.size() < sc.legs.size()) {
    void* b = nullptr;
    RSIO_ASSERT(::posix_memalign(&b, 4096, region) == 0);
    sc.bufs.push_back(b);
  }
  const uint64_t start = r * region, end = std::min(start + region, map.size_bytes);
  sc.targets.clear();
  sc.pieces.clear();
  for (uint64_t off = start; off < end;) {
    const uint64_t len = map.chunk(off, end - off, sc.targets);
    sc.pieces.push_back({off - start, len});
    off += len;
  }
  // Only legs with a device for every piece of the region can be compared.
  std::erase_if(sc.legs, [&](uint32_t k) {
    for (size_t i = 0; i < sc.pieces.size(); ++i)
      if (sc.targets[i * map.width + k].dev == nullptr) return true;
    return false;
  });
  if (sc.legs.size() < 2) sc.pieces.clear();  // nothing to compare
  sc.ops.assign(sc.pieces.size() * sc.legs.size(), SubOp{});
  sc.iovs.resize(sc.ops.size());
  size_t n = 0;
  for (size_t li = 0; li < sc.legs.size(); ++li)
    for (size_t i = 0; i < sc.pieces.size(); ++i, ++n) {
      const Target& t = sc.targets[i * map.width + sc.legs[li]];
      sc.iovs[n] = {static_cast<char*>(sc.bufs[li]) + sc.pieces[i].first,
                    static_cast<size_t>(sc.pieces[i].second)};
      SubOp& s = sc.ops[n];
      s.op.op = Op::kRead;
      s.op.offset_bytes = t.offset_bytes;
      s.op.length_bytes = sc.pieces[i].second;
      s.op.iov = &sc.iovs[n];
      s.op.iov_count = 1;
      s.op.ctx = this;
      s.op.device = t.dev;
      s.op.done = [](DevOp* op, int res) {
        static_cast<VolumeIo*>(op->ctx)->scrub_read_done(res >= 0 && op->device != nullptr);
      };
    }
  sc.outstanding = static_cast<uint32_t>(sc.ops.size());
  if (sc.ops.empty()) {
    sc.outstanding = 1;
    return scrub_read_done(true);
  }
  for (SubOp& s : sc.ops) s.op.device->submit(&s.op);
}

void VolumeIo::scrub_read_done(bool ok) {
  Scrub& sc = *scrub_;
  if (!ok) sc.failed = true;
  if (sc.outstanding > 0 && --sc.outstanding > 0) return;
  const uint64_t r = sc.current;
  const uint64_t len =
      std::min(intent_->region_bytes, map_->size_bytes - r * intent_->region_bytes);
  if (!sc.failed) {
    for (size_t li = 1; li < sc.legs.size(); ++li)
      if (std::memcmp(sc.bufs[0], sc.bufs[li], len) != 0) {
        ++sc.mismatched;
        if (sc.mismatches.size() < 64) sc.mismatches.push_back(r * intent_->region_bytes);
        log::warn("volume_id={} scrub: legs {} and {} differ in region {} (offset_bytes={})",
                  volume_id_, sc.legs[0], sc.legs[li], r, r * intent_->region_bytes);
        break;
      }
  }
  intent_->locked[r] = 0;
  intent_wake();
  loop_.defer([this] { scrub_next(); });
}

}  // namespace rsio::volmgr::io
