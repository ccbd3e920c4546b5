// Rebuilding the volume manager's tables from the metadata copies in the PVs' label areas,
// for when the database is lost (rsiod --rebuild-db).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "db/sqlite.h"
#include "volmgr/lun.h"

namespace rsio::volmgr {

struct RebuildOptions {
  // Block devices to read labels from (every LUN discovery finds, multipath maps instead of
  // their paths). nullopt: none.
  std::optional<LunScanOptions> scan;
  // Regular files or block devices that may be PVs; a directory stands for the regular files
  // directly in it.
  std::vector<std::string> paths;
};

struct RebuildReport {
  std::vector<std::string> notes;  // one line per finding, for the admin
  size_t devices_scanned = 0;
  size_t pools = 0;
  size_t pvs = 0;
  size_t missing_pvs = 0;  // recorded in a copy but not found now
  size_t volumes = 0;
  size_t stale_copies = 0;    // copies older than their pool's newest, not used
  size_t damaged_copies = 0;  // slots whose checksum or contents are wrong, not used
};

// Fills the pools, pvs, volumes, segments, areas and mirror_legs tables of `db` (migrated,
// without pools) from the newest intact copy of each pool found, with the ids they had, and
// the namespace settings and id high-water marks. One transaction. Errors: kInvalidArgument
// (the database already has pools), kNotFound (no copy found), kCorrupt, kIo.
Result<RebuildReport> rebuild_database(db::Database& db, const RebuildOptions& options);

}  // namespace rsio::volmgr
