// Thread model: loop thread only (see volume_io.h).
#include "volmgr/io/volume_io.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "common/assert.h"
#include "common/log.h"
#include "common/units.h"

namespace rsio::volmgr::io {

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

std::string_view leg_state_name(LegState s) {
  return s == LegState::kFaulty ? "faulty" : "in-sync";
}

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
  IoRequest* req = nullptr;
  uint32_t outstanding = 0;
  IoStatus status = IoStatus::kOk;
  uint32_t width = 1;
  std::vector<Chunk> chunks;
  std::vector<Target> targets;
  std::vector<iovec> iovs;
  std::vector<SubOp> subs;
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
  std::unique_ptr<VolumeIo> v(new VolumeIo(loop, info.id, std::move(options)));
  v->map_ = std::move(map);
  const uint32_t legs = info.spec.layout == Layout::kMirrored ? info.spec.mirrors : 1;
  v->leg_states_ = v->options_.leg_states;
  v->leg_states_.resize(legs, LegState::kInSync);
  if (info.spec.layout == Layout::kMirrored) {
    // A leg with a missing device cannot take writes: it is faulty from the start.
    for (const MapSegment& s : v->map_->segments)
      for (uint32_t k = 0; k < legs; ++k)
        if (s.areas[k].dev == nullptr && v->leg_states_[k] != LegState::kFaulty)
          v->mark_leg_faulty(k, "a device of this leg is missing");
  }
  return v;
}

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
  map_ = std::move(map);
  return {};
}

bool VolumeIo::mark_leg_faulty(uint32_t leg, const std::string& reason) {
  bool other = false;
  for (uint32_t k = 0; k < leg_states_.size(); ++k)
    if (k != leg && leg_states_[k] == LegState::kInSync) other = true;
  if (!other) return false;
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
      for (uint32_t k = 0; k < p->width; ++k)
        ops += leg_states_[k] == LegState::kInSync &&
               p->targets[p->chunks[i].first_target + k].dev != nullptr;
    } else {
      ++ops;
    }
  }
  if (ops == 0 || (mirrored && write_class && ops < p->chunks.size()))
    return fail_soon(IoStatus::kUnavailable);
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
        if (leg_states_[k] == LegState::kInSync &&
            p->targets[p->chunks[i].first_target + k].dev != nullptr)
          add(i, k);
    } else {
      const int leg = next_read_leg(0);
      if (leg < 0) {
        p->subs.clear();
        return fail_soon(IoStatus::kUnavailable);
      }
      add(i, static_cast<uint32_t>(leg));
    }
  }
  p->vol_ = this;
  p->outstanding = static_cast<uint32_t>(p->subs.size());
  for (SubOp& s : p->subs) s.op.device->submit(&s.op);
}

void VolumeIo::start_flush(Pending* p) {
  p->vol_ = this;
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
      note_written(dev);  // not durable: the next flush must try again
      auto leg = map.leg_of_device.find(dev);
      if (!(mirrored && leg != map.leg_of_device.end() && mark_leg_faulty(leg->second, why)))
        p->status = IoStatus::kIoError;
    } else if (mirrored && op->op == Op::kRead) {
      // Try another in-sync leg; the failing one is faulty if another can serve.
      const uint32_t failed = sub->leg;
      const int next = next_read_leg(sub->tried_mask);
      if (next >= 0) {
        mark_leg_faulty(failed, why);
        const Target& t =
            p->targets[p->chunks[sub->chunk].first_target + static_cast<uint32_t>(next)];
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

}  // namespace rsio::volmgr::io
