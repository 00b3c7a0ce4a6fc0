-- Canary keys (issue 28.3): the key kind 'canary', and the hits already raised, by hit id.
--
-- SQLite cannot alter a CHECK constraint, and a rebuild of `keys` would have to restate every
-- column (including those other migrations add). The documented way for a change that leaves
-- every stored row valid (https://www.sqlite.org/lang_altertable.html, section 7): edit the
-- table's definition text in place, then reset this connection's schema. The CREATE TABLE below
-- bumps the schema version, so every other connection rereads the schema too.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql, 'kind IN (''workspace'', ''repo'', ''edge'')', 'kind IN (''workspace'', ''repo'', ''edge'', ''canary'')')
WHERE type = 'table' AND name = 'keys';
PRAGMA writable_schema = RESET;

-- A hit reported with an id raises its event once, however often the report is retried.
CREATE TABLE canary_hits (
    id TEXT PRIMARY KEY NOT NULL,
    key_id BLOB NOT NULL,
    at INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX canary_hits_received ON canary_hits(received_at);
