-- RSIO appliance metadata, schema version 1.
-- Ids are AUTOINCREMENT: an id is never reused after a delete, so a grant, log line or
-- script that names an old id can never point at a newer object.
-- Sizes are bytes (_bytes), times are Unix milliseconds (_ms), extents are counted in the
-- pool's extent size. docs/metadata-schema.md describes every table.

CREATE TABLE settings (
  key   TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
) STRICT;

INSERT INTO settings (key, value) VALUES ('namespace.name', 'rsio'), ('namespace.index', '0');

CREATE TABLE pools (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid              TEXT NOT NULL UNIQUE CHECK (length(uuid) = 36),
  name              TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
  extent_size_bytes INTEGER NOT NULL
                    CHECK (extent_size_bytes >= 65536
                           AND (extent_size_bytes & (extent_size_bytes - 1)) = 0),
  is_default        INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
  created_ms        INTEGER NOT NULL
) STRICT;
-- At most one default pool.
CREATE UNIQUE INDEX pools_single_default ON pools (is_default) WHERE is_default = 1;

-- Physical volumes: files or block devices that carry an RSIO label at offset 0.
CREATE TABLE pvs (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid              TEXT NOT NULL UNIQUE CHECK (length(uuid) = 36),
  pool_id           INTEGER NOT NULL REFERENCES pools (id),
  path              TEXT NOT NULL UNIQUE,
  kind              TEXT NOT NULL CHECK (kind IN ('file', 'block')),
  size_bytes        INTEGER NOT NULL CHECK (size_bytes > 0),
  data_offset_bytes INTEGER NOT NULL CHECK (data_offset_bytes > 0),
  extent_count      INTEGER NOT NULL CHECK (extent_count > 0),
  label_generation  INTEGER NOT NULL CHECK (label_generation >= 1),
  created_ms        INTEGER NOT NULL
) STRICT;
CREATE INDEX pvs_pool ON pvs (pool_id);

CREATE TABLE volumes (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid              TEXT NOT NULL UNIQUE CHECK (length(uuid) = 36),
  name              TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
  pool_id           INTEGER NOT NULL REFERENCES pools (id),
  size_bytes        INTEGER NOT NULL CHECK (size_bytes > 0),
  block_size_bytes  INTEGER NOT NULL CHECK (block_size_bytes IN (512, 4096)),
  layout            TEXT NOT NULL CHECK (layout IN ('linear', 'striped', 'mirrored')),
  stripes           INTEGER NOT NULL CHECK (stripes >= 1),
  stripe_size_bytes INTEGER NOT NULL CHECK (stripe_size_bytes >= 0),
  mirrors           INTEGER NOT NULL CHECK (mirrors >= 1),
  created_ms        INTEGER NOT NULL,
  CHECK (layout <> 'linear'   OR (stripes = 1 AND mirrors = 1)),
  CHECK (layout <> 'striped'  OR (stripes >= 2 AND mirrors = 1 AND stripe_size_bytes > 0)),
  CHECK (layout <> 'mirrored' OR (stripes = 1 AND mirrors >= 2))
) STRICT;

-- A volume's logical extents [start_extent, start_extent + extent_count) in order.
CREATE TABLE segments (
  volume_id    INTEGER NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
  idx          INTEGER NOT NULL CHECK (idx >= 0),
  start_extent INTEGER NOT NULL CHECK (start_extent >= 0),
  extent_count INTEGER NOT NULL CHECK (extent_count > 0),
  PRIMARY KEY (volume_id, idx)
) STRICT, WITHOUT ROWID;

-- Where a segment lives: one area (linear), one per stripe (striped) or one per leg
-- (mirrored), each a run of consecutive extents on one PV.
CREATE TABLE areas (
  volume_id       INTEGER NOT NULL,
  segment_idx     INTEGER NOT NULL,
  area_idx        INTEGER NOT NULL CHECK (area_idx >= 0),
  pv_id           INTEGER NOT NULL REFERENCES pvs (id),
  pv_start_extent INTEGER NOT NULL CHECK (pv_start_extent >= 0),
  extent_count    INTEGER NOT NULL CHECK (extent_count > 0),
  PRIMARY KEY (volume_id, segment_idx, area_idx),
  FOREIGN KEY (volume_id, segment_idx) REFERENCES segments (volume_id, idx) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX areas_pv ON areas (pv_id, pv_start_extent);

-- Registered RSIO client nodes. The node key is the shared secret of the authentication
-- handshake, so the server must keep it; the database file is readable by root only.
CREATE TABLE clients (
  id         INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id >= 1),
  name       TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
  node_key   TEXT NOT NULL CHECK (length(node_key) BETWEEN 1 AND 64),
  mode       TEXT NOT NULL DEFAULT 'rsio client',
  created_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE grants (
  volume_id  INTEGER NOT NULL REFERENCES volumes (id),
  client_id  INTEGER NOT NULL REFERENCES clients (id),
  access     TEXT NOT NULL CHECK (access IN ('rw', 'ro')),
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (volume_id, client_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX grants_client ON grants (client_id);
