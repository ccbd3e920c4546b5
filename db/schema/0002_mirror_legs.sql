-- Schema version 2: the state of mirror legs that are not in sync. A leg of a mirrored
-- volume without a row here is in sync. The I/O engine marks a leg faulty when it fails and
-- resyncing when it is brought back; rsiod records both here so they survive a restart.
CREATE TABLE mirror_legs (
  volume_id  INTEGER NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,
  leg        INTEGER NOT NULL CHECK (leg >= 0),
  state      TEXT NOT NULL CHECK (state IN ('faulty', 'resyncing')),
  detail     TEXT NOT NULL DEFAULT '',
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY (volume_id, leg)
) STRICT, WITHOUT ROWID;
