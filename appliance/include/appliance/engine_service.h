// rsiod's I/O engine: one thread that opens every volume on its devices, runs resyncs and
// scrubs, and (with the RSIO export service) serves volume I/O.
//
// Thread model: the engine thread runs an io::Loop and owns every Device and VolumeIo. The
// metadata thread calls the public members; each hands its work to the engine thread with
// Loop::post() and waits for the answer (bounded: the engine thread never blocks, so the
// wait is short). State changes the engine decides on (a mirror leg becoming faulty or in
// sync again) are posted to the metadata executor and persisted there.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "rsio/server.h"
#include "volmgr/io/volume_io.h"
#include "volmgr/volume_manager.h"

namespace rsio::appliance {

class Catalog;

struct VolumeIoStatus {
  bool open = false;
  std::string reason;  // why it is not open
  std::vector<volmgr::LegState> legs;
  volmgr::io::ResyncProgress resync;
  volmgr::io::ScrubProgress scrub;
  uint64_t marked_regions = 0;
};

class EngineService {
 public:
  // Starts the engine thread. `vm` must outlive the service and is only used on the
  // metadata thread (`meta`). Mirror bitmaps live in STATE_DIR/bitmaps. Errors: kUnavailable
  // when io_uring cannot be set up (rsiod then runs without a data path and says why).
  static Result<std::unique_ptr<EngineService>> start(volmgr::VolumeManager& vm,
                                                      boost::asio::any_io_executor meta,
                                                      std::string state_dir,
                                                      uint64_t resync_rate_bytes_per_s = 0);
  ~EngineService();

  // Opens (or re-opens after a change) a volume on its devices; resumes an interrupted
  // resync. A volume whose devices are missing stays closed, with the reason in status().
  Status open(const volmgr::VolumeInfo& v);
  // Re-opens a volume whose mirror legs were added or removed; with `leg_added` every
  // region is marked so the new leg receives a full copy. Errors: kInUse while the volume
  // has a resync or scrub running.
  Status legs_changed(const volmgr::VolumeInfo& v, bool leg_added);
  // Applies a resize to the open volume.
  Status resized(const volmgr::VolumeInfo& v);
  // Closes a volume. Errors: kInUse while it has work in flight (a resync or scrub).
  Status close(int64_t volume_id);
  // Closes a volume that is being deleted and removes its bitmap file.
  Status forget(const volmgr::VolumeInfo& v);
  // Closes the engine's handle on a PV that left its pool (no volume uses it any more).
  void device_removed(int64_t pv_id);
  Status start_scrub(int64_t volume_id);
  Status restore_leg(int64_t volume_id, uint32_t leg);
  VolumeIoStatus status(int64_t volume_id);
  // True while the volume has a resync or scrub running.
  bool busy(int64_t volume_id);

  // Starts the RSIO export service on the engine thread. Node keys, grants and volume names
  // come from `catalog` and the VolumeManager, read on the metadata thread. Errors as
  // ExportServer::start (an address in use, ...).
  Status start_export(const Catalog& catalog, server::ServerOptions options);
  // The addresses the export service listens on (empty when it is not running).
  std::vector<server::ListenAddress> export_addresses();
  std::vector<server::SessionInfo> sessions();
  // A grant was revoked or changed: open handles follow at once.
  void grant_changed(int64_t volume_id, int64_t client_id, bool revoked, bool read_only);
  // Tells connected clients that the service is going down and closes their paths.
  void stop_export();
  // The engine loop busy-polls for up to `us` microseconds before it sleeps (0: never).
  void set_poll_us(uint32_t us);

  struct Impl;

 private:
  explicit EngineService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rsio::appliance
