-- Schema version 3: LUNs of an FC gateway.
-- pvs gains lun_id, the stable identity (WWN, serial or backing file) of a device that was
-- imported as a LUN, and the kind 'lun': a pass-through LUN exported 1:1 as one volume. A
-- pass-through LUN carries no label, so its data starts at byte 0 and rsiod finds it by
-- lun_id alone. SQLite cannot change a CHECK constraint in place, so the table is rebuilt;
-- ids and the AUTOINCREMENT high-water mark are kept.
CREATE TEMP TABLE pvs_seq_v2 AS SELECT seq FROM sqlite_sequence WHERE name = 'pvs';

CREATE TABLE pvs_v3 (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  uuid              TEXT NOT NULL UNIQUE CHECK (length(uuid) = 36),
  pool_id           INTEGER NOT NULL REFERENCES pools (id),
  path              TEXT NOT NULL UNIQUE,
  kind              TEXT NOT NULL CHECK (kind IN ('file', 'block', 'lun')),
  size_bytes        INTEGER NOT NULL CHECK (size_bytes > 0),
  data_offset_bytes INTEGER NOT NULL CHECK (data_offset_bytes >= 0),
  extent_count      INTEGER NOT NULL CHECK (extent_count > 0),
  label_generation  INTEGER NOT NULL CHECK (label_generation >= 1),
  created_ms        INTEGER NOT NULL,
  lun_id            TEXT CHECK (lun_id IS NULL OR length(lun_id) BETWEEN 1 AND 512),
  CHECK (kind = 'lun' OR data_offset_bytes > 0),
  CHECK (kind <> 'lun' OR (data_offset_bytes = 0 AND lun_id IS NOT NULL))
) STRICT;
INSERT INTO pvs_v3 (id, uuid, pool_id, path, kind, size_bytes, data_offset_bytes, extent_count,
                    label_generation, created_ms)
  SELECT id, uuid, pool_id, path, kind, size_bytes, data_offset_bytes, extent_count,
         label_generation, created_ms FROM pvs;
DROP TABLE pvs;
ALTER TABLE pvs_v3 RENAME TO pvs;
CREATE INDEX pvs_pool ON pvs (pool_id);
CREATE UNIQUE INDEX pvs_lun ON pvs (lun_id) WHERE lun_id IS NOT NULL;

DELETE FROM sqlite_sequence WHERE name = 'pvs';
INSERT INTO sqlite_sequence (name, seq)
  SELECT 'pvs', max(coalesce((SELECT max(seq) FROM pvs_seq_v2), 0),
                    coalesce((SELECT max(id) FROM pvs), 0));
DROP TABLE pvs_seq_v2;
